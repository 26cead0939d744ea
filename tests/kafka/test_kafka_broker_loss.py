"""Broker loss (issue 11, point 5): 20 runs are in flight in the service (an in-process
``ServiceRunner`` on a SQLite file) when the broker is killed and restarted EMPTY on the
same port (the test broker keeps data in memory only, so every command already published is
gone, offsets too). With short
phase deadlines the service re-sends each overdue phase's command with its original event
id: the runs whose workers answer the re-sent commands complete successfully; the runs whose
workers never answer fail at their deadline (``timeout``). No run stays
``processing_pipelines``, and a new request for every one of those batches is accepted and
runs to completion."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from pathlib import Path

import attrs
import pytest
from kafka_harness import fast_settings, running_runner
from pipeline_state_kafka import ProducerSettings, create_producer, ensure_topics, service_topics
from pipeline_state_kafka.testing import Collected, Collector, LocalBroker, send_envelopes
from pipeline_state_service import ServiceRunner
from proof_harness import (
    PHASE_OF_TOPIC,
    WATCHED_TOPICS,
    Workers,
    assert_all_ready,
    assert_nothing_dead_lettered,
    assert_one_completion_per_batch,
    load_states,
    short_deadlines,
    wait_completed,
)

from pipeline_state.ports import RunStatus
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from tests.optional import require

pytestmark = pytest.mark.kafka

ANSWERED = [f"la{i:02d}" for i in range(10)]
"""Spellcheck answered before the loss; their nlp command is unanswered when the broker goes
and answered once it is re-sent."""
SILENT = [f"ls{i:02d}" for i in range(10)]
"""Their spellcheck command is never answered: they fail at the deadline."""
BATCHES = ANSWERED + SILENT
DEADLINE_SECONDS = 5.0
RESENDS = 4
"""With a 5 s deadline a silent phase fails 25 s after its dispatch: room enough for the
consumer and the relay to find the re-created topics and the workers to answer."""


def _batch(record: Collected) -> str:
    return str(record.data.get("batch_id"))


def _phase(record: Collected) -> str:
    return PHASE_OF_TOPIC[record.topic]


async def test_kafka_broker_loss_every_in_flight_run_completes_or_fails_at_its_deadline(
    own_broker: LocalBroker, prefix: str, tmp_path: Path
) -> None:
    require("pipeline_state_sql")
    broker = own_broker
    env = HuleEduEnvelopes()
    store_url = f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    corr = {b: str(uuid.uuid4()) for b in BATCHES}
    base = fast_settings(broker.bootstrap, prefix, store_url=store_url)
    settings = attrs.evolve(
        base,
        sweep_seconds=0.5,
        outbox_lease_seconds=2.0,
        relay_max_attempts=1000,  # rows wait for the broker, they are not parked
        # Find the re-created topics and the new group coordinator quickly.
        producer=ProducerSettings(broker.bootstrap, request_timeout_ms=3000),
        consumer=attrs.evolve(base.consumer_settings(), metadata_max_age_ms=1000, request_timeout_ms=5000),
    )
    runner = ServiceRunner(
        settings, service_factory=short_deadlines(settings, DEADLINE_SECONDS, resends=RESENDS)
    )
    stack = contextlib.AsyncExitStack()
    producer = create_producer(ProducerSettings(broker.bootstrap, request_timeout_ms=5000))
    await producer.start()

    def before_loss(record: Collected) -> bool:
        # Only the ANSWERED batches' spellcheck is answered before the broker goes.
        return _batch(record) in ANSWERED and _phase(record) == "spellcheck"

    workers = Workers(broker.bootstrap, prefix, producer, answer=before_loss)
    try:
        await stack.enter_async_context(running_runner(runner, within=60))
        await workers.start()
        inputs = []
        for b in BATCHES:
            inputs += [env.register(b, items=2), env.provisioned(b, env.item_ids(b, 2))]
        await send_envelopes(producer, inputs, topic_prefix=prefix)
        await send_envelopes(
            producer, [env.request(b, "nlp", correlation_id=corr[b]) for b in BATCHES], topic_prefix=prefix
        )

        def in_flight() -> bool:
            held = {(_batch(r), _phase(r)) for r in workers.commands}
            return {(b, "nlp") for b in ANSWERED} | {(b, "spellcheck") for b in SILENT} <= held

        deadline = time.monotonic() + 90
        while not in_flight():
            assert time.monotonic() < deadline, "the runs were not in flight in time"
            await asyncio.sleep(0.1)
        original = {(_batch(r), _phase(r)): r.event_id for r in workers.commands}
        assert not any(r.topic == Topic.NLP for r in workers.commands if _batch(r) in SILENT), (
            "a silent batch got past spellcheck"
        )

        # The broker is lost with every run in flight, and comes back empty on the same port.
        loss_at = time.monotonic()
        broker.stop()
        await asyncio.sleep(1.0)
        broker.start(within=30)
        await ensure_topics(broker.bootstrap, service_topics(prefix))  # as an operator would
        print(f"broker back after {time.monotonic() - loss_at:.1f}s")

        # From now on the workers answer every command of the ANSWERED batches they read: the
        # copies they held before the loss stay unanswered, only the re-sent ones are answered.
        workers.release(lambda r: _batch(r) in ANSWERED, held=False)
        await workers.reconnect()
        async with Collector(broker.bootstrap, WATCHED_TOPICS, topic_prefix=prefix) as out:
            await wait_completed(
                out, BATCHES, within=DEADLINE_SECONDS * (RESENDS + 1) + 60, allow_denied=False
            )
            print(f"every run completed {time.monotonic() - loss_at:.1f}s after the loss")
            await asyncio.sleep(1.5)

            completions = assert_one_completion_per_batch(out, BATCHES, final_status=None)
            statuses = {b: completions[b].data["final_status"] for b in BATCHES}
            assert {statuses[b] for b in ANSWERED} == {"completed_successfully"}, statuses
            assert {statuses[b] for b in SILENT} == {"failed_critically"}, statuses
            for b in SILENT:
                results = completions[b].data["phase_results"]
                assert results["spellcheck"]["status"] == "failed", results
                assert completions[b].data["correlation_id"] == corr[b]
            # What arrived after the loss are the lost commands, re-sent with their event ids.
            resent = [r for r in out.records if r.topic in PHASE_OF_TOPIC]
            for b in ANSWERED:
                copies = {r.event_id for r in resent if _batch(r) == b and _phase(r) == "nlp"}
                assert copies == {original[(b, "nlp")]}, (b, copies)
            for b in SILENT:
                copies = [r for r in resent if _batch(r) == b]
                assert {r.event_id for r in copies} == {original[(b, "spellcheck")]}, b
                assert 1 <= len(copies) <= RESENDS, (b, len(copies))

            # Every batch takes a new request: accepted, dispatched, answered, completed.
            workers.release(held=False)
            again = {b: str(uuid.uuid4()) for b in BATCHES}
            await send_envelopes(
                producer,
                [env.request(b, "cj_assessment", correlation_id=again[b]) for b in BATCHES],
                topic_prefix=prefix,
            )

            def second_runs(c: Collector) -> bool:
                assert_nothing_dead_lettered(c)
                assert not c.on(Topic.PIPELINE_DENIED), [r.data for r in c.on(Topic.PIPELINE_DENIED)]
                done = {
                    r.data.get("batch_id")
                    for r in c.on(Topic.PIPELINE_COMPLETED)
                    if r.data.get("correlation_id") == again.get(str(r.data.get("batch_id")))
                }
                return done >= set(BATCHES)

            await out.wait_for(second_runs, within=90, what="the second runs")
            second = {
                r.data["batch_id"]: r.data
                for r in out.on(Topic.PIPELINE_COMPLETED)
                if r.data.get("correlation_id") == again.get(str(r.data.get("batch_id")))
            }
            assert {d["final_status"] for d in second.values()} == {"completed_successfully"}
            for b in ANSWERED:  # spellcheck was done by the first run: pruned
                assert second[b]["completed_phases"] == ["cj_assessment"], second[b]
            for b in SILENT:  # spellcheck failed in the first run: run again
                assert second[b]["completed_phases"] == ["spellcheck", "cj_assessment"], second[b]
            assert runner.stats.dead_lettered == 0
            assert runner.stats.parked == 0
    finally:
        await workers.stop()
        await stack.aclose()
        await producer.stop()

    states = await load_states(store_url, BATCHES)
    assert_all_ready(states, runs=2)
    for b in SILENT:
        state = states[b]
        assert state is not None
        first = state.history[0]
        assert first.status is RunStatus.FAILED_CRITICALLY
        spellcheck = next(p for p in first.phases if p.name == "spellcheck")
        assert spellcheck.error == "timeout", spellcheck
    for b in ANSWERED:
        state = states[b]
        assert state is not None
        assert state.history[0].status is RunStatus.COMPLETED_SUCCESSFULLY
