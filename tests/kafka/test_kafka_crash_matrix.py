"""A crash matrix (issue 11, point 5): ``pipeline-state serve`` on a SQLite file is killed
with SIGKILL at random moments over 20+ cycles while 30 batches flow through the two-phase
``nlp`` pipeline (spellcheck -> nlp); the test plays the worker services and answers every
command copy it reads. At the end every run has completed, each with exactly one distinct
completion event id, and each phase of each run was commanded with exactly one distinct
event id (copies of it, from the at-least-once relay, are allowed); nothing is
dead-lettered, nothing denied, and the store holds every batch ready with one archived run.

The RNG is seeded (the seed is printed; ``PROOF_SEED=<seed>`` repeats a run's schedule).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from kafka_harness import ServeProcess
from pipeline_state_kafka import ProducerLike, ensure_topics, service_topics
from pipeline_state_kafka.testing import Collector, LocalBroker
from proof_harness import (
    WATCHED_TOPICS,
    Workers,
    assert_all_ready,
    assert_nothing_dead_lettered,
    assert_one_command_per_phase,
    assert_one_completion_per_batch,
    inbox_results,
    load_states,
    produce_stamped,
    stamp,
    wait_completed,
)

from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from tests.optional import require

pytestmark = pytest.mark.kafka

BATCHES = 30
CYCLES = 20
FEED_CYCLES = 17
"""Each batch's inputs are produced in one of the first cycles (chosen at random), at a
random moment of that cycle's life, so the kills land while runs are in flight."""
PIPELINE = "nlp"
PHASES = ("spellcheck", "nlp")
ANSWER_DELAY = (0.0, 0.8)
REQUEST_AFTER = 1.0
"""Seconds between producing a group's registrations and provisionings and its requests."""
"""Seconds a worker takes to answer a command."""
KILL_AFTER = (0.3, 1.5)
"""Seconds a cycle lives once it is ready."""
EARLY_KILL = 0.2
"""Share of the cycles killed during start-up (store opened, topics, group join) instead."""
EARLY_KILL_AFTER = (0.8, 2.5)
"""Seconds after the start an early kill comes (the interpreter needs 1-3 s to import)."""
BUDGET_SECONDS = 240.0
"""The cycles' time in all: each is a start-up (2.5 s of imports on a loaded 2-core machine),
a group rebalance, its life and a request's delay, 5-9 s measured (124 s for the 20), and
stays under the suite's 300 s per test."""

# Quicker group turnover than FAST_ENV: each cycle's new member replaces a killed one.
CRASH_ENV = {
    "PIPELINE_STATE_KAFKA_SESSION_TIMEOUT_MS": "1500",
    "PIPELINE_STATE_KAFKA_HEARTBEAT_MS": "300",
    "PIPELINE_STATE_OUTBOX_LEASE_SECONDS": "1",
    "PIPELINE_STATE_RELAY_IDLE_SECONDS": "0.1",
    "PIPELINE_STATE_SUMMARY": "off",
}


def _seed() -> int:
    seed = int(os.environ.get("PROOF_SEED") or random.SystemRandom().randrange(1 << 30))
    print(f"crash matrix seed: {seed} (PROOF_SEED={seed} repeats the schedule)")
    return seed


async def test_kafka_crash_matrix_every_run_completes_once(
    broker: LocalBroker, prefix: str, producer: ProducerLike, tmp_path: Path
) -> None:
    require("pipeline_state_sql")
    started = time.monotonic()
    rng = random.Random(_seed())
    env = HuleEduEnvelopes()
    store_url = f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    batch_ids = [f"cm{i:03d}" for i in range(BATCHES)]
    groups: list[list[str]] = [[] for _ in range(CYCLES)]
    for batch_id in batch_ids:
        groups[rng.randrange(FEED_CYCLES)].append(batch_id)
    await ensure_topics(broker.bootstrap, service_topics(prefix))

    def serve(name: str) -> ServeProcess:
        return ServeProcess(
            broker.bootstrap, store_url, prefix, env=CRASH_ENV, log_file=tmp_path / f"serve-{name}.log"
        )

    fed: list[tuple[str, dict[str, Any]]] = []

    async def feed(group: list[str]) -> None:
        if not group:
            return
        facts, requests = [], []
        for batch_id in group:
            facts += [env.register(batch_id, items=2), env.provisioned(batch_id, env.item_ids(batch_id, 2))]
            requests.append(env.request(batch_id, PIPELINE))
        # The consumer keeps time order within one fetch, not across fetches of different
        # partitions: a request fetched before its batch's provisioning (registered, not yet
        # ready, nothing waiting) is denied batch_not_ready, as a teacher's early click
        # would be. Requests follow their batches' content after a pause, as they do in
        # life, so the kills - not that race - are what this test exercises.
        fed.extend(facts)
        await produce_stamped(producer, stamp(facts), topic_prefix=prefix)
        await asyncio.sleep(REQUEST_AFTER)
        fed.extend(requests)
        await produce_stamped(producer, stamp(requests), topic_prefix=prefix)

    async with (
        Collector(broker.bootstrap, WATCHED_TOPICS, topic_prefix=prefix) as out,
        Workers(broker.bootstrap, prefix, producer, delay=lambda: rng.uniform(*ANSWER_DELAY)) as workers,
    ):
        kills = 0
        for cycle in range(CYCLES):
            process = serve(f"cycle{cycle:02d}")
            t0 = time.monotonic()
            try:
                process.start()
                early = rng.random() < EARLY_KILL
                if early:
                    await feed(groups[cycle])
                    await asyncio.sleep(rng.uniform(*EARLY_KILL_AFTER))
                else:
                    await process.wait_ready(within=60)
                    life = rng.uniform(*KILL_AFTER)
                    fed_at = rng.uniform(0, life)
                    await asyncio.sleep(fed_at)
                    await feed(groups[cycle])
                    await asyncio.sleep(life - fed_at)
                lived = time.monotonic() - t0
                assert process.process is not None
                assert process.process.poll() is None, f"serve exited by itself: {process.tail()}"
                process.kill()
                assert process.process.returncode == -signal.SIGKILL
                kills += 1
            finally:
                process.close()
            done = sum(
                1
                for b in batch_ids
                if any(r.data.get("batch_id") == b for r in out.on(Topic.PIPELINE_COMPLETED))
            )
            print(
                f"cycle {cycle:2d}: {'early ' if early else ''}kill after {lived:.2f}s "
                f"(ready: {bool(process.find(lambda x: x.get('msg') == 'ready'))}); "
                f"{done}/{BATCHES} runs completed so far"
            )
            assert time.monotonic() - started < BUDGET_SECONDS, "the crash cycles took too long"
        assert kills >= CYCLES

        # Last start: the service finishes whatever the crashes left.
        final = serve("final").start()
        try:
            await final.wait_ready(within=60)
            await wait_completed(out, batch_ids, within=90)
            await asyncio.sleep(2.0)  # later copies, or a second completion, would show up now
            assert final.signal(signal.SIGTERM, within=60) == 0, final.tail()
        finally:
            final.close()

        assert_nothing_dead_lettered(out)
        assert out.on(Topic.PIPELINE_DENIED) == []
        assert_one_completion_per_batch(out, batch_ids)
        assert_one_command_per_phase(out.records, batch_ids, PHASES)
        assert_one_command_per_phase(workers.commands, batch_ids, PHASES)
        copies = len(workers.commands) - BATCHES * len(PHASES)
        print(f"{kills} kills, {copies} duplicate command copies, {time.monotonic() - started:.1f}s")

    assert_all_ready(await load_states(store_url, batch_ids))
    # Every input was applied exactly once: its inbox entry says so (a redelivered copy of an
    # event id has no effect and leaves no second entry).
    assert len(fed) == 3 * BATCHES
    results = await inbox_results(store_url, [envelope["event_id"] for _, envelope in fed])
    assert set(results.values()) == {"applied"}, results
