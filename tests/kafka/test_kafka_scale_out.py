"""Scale-out (issue 16, point 6): three ``pipeline-state serve`` processes in one consumer
group share one PostgreSQL schema. Runs flow through all three (the test plays the worker
services); one process is killed with SIGKILL while runs are in flight and started again.

At the end every run has completed with exactly one distinct completion event id, each phase
of each run was commanded with exactly one distinct event id (copies of that id, from the
at-least-once relay, are allowed: consumers deduplicate them by ``event_id``, as CONTRACT.md
says), nothing was dead-lettered or denied, every input was applied exactly once, and the
partitions moved: the survivors took the killed member's partitions, and the restarted one
got some back (read from each process's ``partitions assigned`` log lines).

Bounded: 24 batches, one kill, about 30-60 s on two cores; everything on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kafka_harness import ServeProcess
from pipeline_state_kafka import ProducerLike, ensure_topics, service_topics
from pipeline_state_kafka.testing import Collected, Collector, LocalBroker
from proof_harness import (
    WATCHED_TOPICS,
    Workers,
    assert_all_ready,
    assert_nothing_dead_lettered,
    assert_one_command_per_phase,
    assert_one_completion_per_batch,
    completions_by_batch,
    inbox_results,
    load_states,
    postgres_schema,
    postgres_url,
    produce_stamped,
    stamp,
    wait_completed,
)

from pipeline_state.profiles.huleedu.events import INBOUND_TOPICS, Topic
from pipeline_state.testing import Envelopes
from tests.optional import require

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

PARTITIONS = 6
INBOUND_PARTITIONS = PARTITIONS * len(INBOUND_TOPICS)
"""The partitions the group shares: every inbound topic has ``PARTITIONS``."""
BATCHES = 24
PIPELINE = "nlp"
PHASES = ("spellcheck", "nlp")
BUDGET_SECONDS = 120.0

SCALE_ENV = {
    "PIPELINE_STATE_KAFKA_SESSION_TIMEOUT_MS": "1500",
    "PIPELINE_STATE_KAFKA_HEARTBEAT_MS": "300",
    "PIPELINE_STATE_OUTBOX_LEASE_SECONDS": "1",
    "PIPELINE_STATE_RELAY_IDLE_SECONDS": "0.1",
    "PIPELINE_STATE_SUMMARY": "off",
    "PIPELINE_STATE_SWEEP_SECONDS": "0",
    "PIPELINE_STATE_TOPIC_PARTITIONS": str(PARTITIONS),
    "PIPELINE_STATE_STORE_UPGRADE": "1",
}


def _assignments(serve: ServeProcess) -> list[int]:
    """The partition counts of each ``partitions assigned`` line of ``serve``, in order (the
    group rebalances eagerly: each line is the member's whole assignment)."""
    return [int(r["partitions"]) for r in serve.find(lambda r: r.get("msg") == "partitions assigned")]


def _handled(serves: list[ServeProcess]) -> set[str]:
    """Event ids that any of ``serves`` logged as handled."""
    return {
        str(r.get("event_id"))
        for s in serves
        for r in s.find(lambda r: str(r.get("msg", "")).startswith("handled"))
    }


async def _until(
    predicate: Callable[[], bool], serves: list[ServeProcess], *, within: float, what: str
) -> None:
    """Wait (bounded) for ``predicate``; fails at once when a live serve exits by itself."""
    deadline = time.monotonic() + within
    while not predicate():
        for serve in serves:
            assert serve.process is not None
            if serve.process.poll() is not None:
                raise AssertionError(f"serve exited ({serve.process.returncode}): {serve.tail()}")
        if time.monotonic() > deadline:
            tails = "\n---\n".join(s.tail(5) for s in serves)
            raise TimeoutError(f"timed out after {within}s waiting for {what}:\n{tails}")
        await asyncio.sleep(0.05)


def _balanced(members: list[ServeProcess], since: dict[int, int]) -> bool:
    """Each member has logged an assignment after its first ``since[i]`` lines, every one of
    them holds some partitions, and together they hold every inbound partition."""
    latest = []
    for index, member in enumerate(members):
        counts = _assignments(member)
        if len(counts) <= since.get(index, 0):
            return False
        latest.append(counts[-1])
    return all(c > 0 for c in latest) and sum(latest) == INBOUND_PARTITIONS


async def test_kafka_three_serves_share_postgres_and_survive_a_kill(
    broker: LocalBroker, prefix: str, producer: ProducerLike, tmp_path: Path
) -> None:
    require("pipeline_state_sql")
    started = time.monotonic()
    url = postgres_url()
    env = Envelopes()
    batch_ids = [f"so{i:03d}" for i in range(BATCHES)]
    held_back = set(batch_ids[::2])
    """Batches whose ``nlp`` command the workers hold until the kill: those runs are in
    flight (spellcheck done, nlp commanded) when a member dies."""
    await ensure_topics(broker.bootstrap, service_topics(prefix), partitions=PARTITIONS)

    async with postgres_schema(url) as schema:

        def serve(name: str) -> ServeProcess:
            return ServeProcess(
                broker.bootstrap,
                url,
                prefix,
                env={**SCALE_ENV, "PIPELINE_STATE_STORE_SCHEMA": schema},
                log_file=tmp_path / f"serve-{name}.log",
            )

        def answer(record: Collected) -> bool:
            return not (record.topic == Topic.NLP.value and record.data.get("batch_id") in held_back)

        members = [serve(name) for name in ("a", "b", "c")]
        restarted: ServeProcess | None = None
        try:
            for member in members:
                member.start()
            await asyncio.gather(*(m.wait_ready(within=60) for m in members))
            await _until(
                lambda: _balanced(members, {}), members, within=30, what="three members sharing the group"
            )
            before = [_assignments(m)[-1] for m in members]

            async with (
                Collector(broker.bootstrap, WATCHED_TOPICS, topic_prefix=prefix) as out,
                Workers(broker.bootstrap, prefix, producer, answer=answer) as workers,
            ):
                facts: list[tuple[str, dict[str, Any]]] = []
                for batch_id in batch_ids:
                    facts += [
                        env.register(batch_id, items=2),
                        env.provisioned(batch_id, env.item_ids(batch_id, 2)),
                    ]
                await produce_stamped(producer, stamp(facts), topic_prefix=prefix)
                fact_ids = {e["event_id"] for _, e in facts}
                # A request fetched before its batch's provisioning is denied (no order across
                # topics): the requests follow once every fact was handled somewhere.
                await _until(lambda: fact_ids <= _handled(members), members, within=45, what="registrations")
                requests = [env.request(b, PIPELINE) for b in batch_ids]
                await produce_stamped(producer, stamp(requests), topic_prefix=prefix)

                free = [b for b in batch_ids if b not in held_back]
                await wait_completed(out, free, within=45)
                await _until(
                    lambda: {b for b in held_back if workers.copies("nlp", b)} == held_back,
                    members,
                    within=30,
                    what="every held nlp command",
                )
                assert not any(b in completions_by_batch(out) for b in held_back)
                worked = [len(_handled([m])) for m in members]
                assert all(n > 0 for n in worked), f"a member handled nothing: {worked}"

                # Release the held commands; the first member seen handling one of their outcomes
                # is killed at once, in the middle of that work. The rest of its partitions'
                # outcomes (fetched, perhaps handled, offsets maybe not committed) go to the
                # survivors, or to the restarted member, whichever holds the partition by then.
                workers.release()

                def outcome_ids() -> set[str]:
                    return {event_id for command, event_id in workers.answered if command.topic == Topic.NLP}

                await _until(
                    lambda: any(outcome_ids() & _handled([m]) for m in members),
                    members,
                    within=30,
                    what="a released outcome handled",
                )
                victim_at = next(i for i, m in enumerate(members) if outcome_ids() & _handled([m]))
                victim = members[victim_at]
                survivors = [m for m in members if m is not victim]
                seen = {i: len(_assignments(m)) for i, m in enumerate(survivors)}
                victim.kill()
                assert victim.process is not None
                assert victim.process.returncode == -signal.SIGKILL
                in_flight = len(held_back - set(completions_by_batch(out)))
                await _until(
                    lambda: _balanced(survivors, seen), survivors, within=30, what="the survivors' rebalance"
                )
                after_kill = [_assignments(m)[-1] for m in survivors]
                share = [c for i, c in enumerate(before) if i != victim_at]
                assert all(a > b for a, b in zip(after_kill, share, strict=True)), (before, after_kill)

                restarted = serve("restarted").start()
                everyone = [restarted if m is victim else m for m in members]
                seen = {i: len(_assignments(m)) for i, m in enumerate(everyone) if m is not restarted}
                await restarted.wait_ready(within=60)
                await _until(
                    lambda: _balanced(everyone, seen), everyone, within=30, what="the restarted one's share"
                )
                await wait_completed(out, batch_ids, within=60)
                await asyncio.sleep(1.5)  # later copies, or a second completion, would show up now

                assert_nothing_dead_lettered(out)
                assert out.on(Topic.PIPELINE_DENIED) == []
                assert_one_completion_per_batch(out, batch_ids)
                assert_one_command_per_phase(out.records, batch_ids, PHASES)
                assert_one_command_per_phase(workers.commands, batch_ids, PHASES)
                print(
                    f"assignments before {before}, after the kill {after_kill}, "
                    f"after the restart {[_assignments(m)[-1] for m in everyone]}; handled before the "
                    f"kill {worked}; member {victim_at} killed with {in_flight} runs in flight; "
                    f"{len(workers.commands) - BATCHES * len(PHASES)} command copies; "
                    f"{time.monotonic() - started:.1f}s"
                )
                for member in everyone:
                    assert member.signal(signal.SIGTERM, within=30) == 0, member.tail()
        finally:
            for member in [*members, *([restarted] if restarted else [])]:
                member.close()

        assert_all_ready(await load_states(url, batch_ids, schema=schema))
        inputs = [e["event_id"] for _, e in facts] + [e["event_id"] for _, e in requests]
        results = await inbox_results(url, inputs, schema=schema)
        assert set(results.values()) == {"applied"}, results
    assert time.monotonic() - started < BUDGET_SECONDS, "the scale-out test took too long"
