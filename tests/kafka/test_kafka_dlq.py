"""Poison messages go to ``<topic>.DLQ`` with their reason and position while the next message
is processed; transient failures are retried without committing and never dead-lettered."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kafka_harness import fast_settings, running, wait_status, wait_until
from pipeline_state_kafka import ProducerLike, dlq_topic
from pipeline_state_kafka.testing import Collected, Collector, LocalBroker, send_envelopes
from pipeline_state_service import OpenedStore

from pipeline_state import BatchStatus, InMemoryStore
from pipeline_state.profiles.huleedu.events import OUTBOUND_TOPICS, Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

pytestmark = pytest.mark.kafka

INBOUND = (Topic.BATCH_REGISTER, Topic.PHASE_OUTCOME, Topic.CONTENT_PROVISIONED)


async def _send_raw(producer: ProducerLike, topic: str, key: str, value: bytes) -> tuple[int, int]:
    """Produce raw bytes; returns the record's (partition, offset)."""
    meta: Any = await producer.send_and_wait(topic, value, key.encode())
    return int(meta.partition), int(meta.offset)


def _envelope_bytes(delivery: tuple[str, dict[str, Any]]) -> bytes:
    return json.dumps(delivery[1]).encode()


async def test_kafka_poison_messages_are_dead_lettered_and_the_next_message_is_processed(
    broker: LocalBroker, prefix: str, producer: ProducerLike
) -> None:
    env = HuleEduEnvelopes()
    register_topic = f"{prefix}{Topic.BATCH_REGISTER}"
    outcome_topic = f"{prefix}{Topic.PHASE_OUTCOME}"
    async with (
        running(fast_settings(broker.bootstrap, prefix)) as runner,
        Collector(broker.bootstrap, OUTBOUND_TOPICS, topic_prefix=prefix) as out,
        Collector(broker.bootstrap, [dlq_topic(t) for t in INBOUND], topic_prefix=prefix) as dlq,
    ):
        # A live batch with an active run, so outcome errors are about the outcome itself.
        await send_envelopes(producer, [env.register("p1", items=2)], topic_prefix=prefix)
        await out.wait_for(lambda c: bool(c.on(Topic.ESSAYS_REGISTERED)))
        await send_envelopes(producer, [env.provisioned("p1", env.item_ids("p1", 2))], topic_prefix=prefix)
        await wait_status(runner, "p1", BatchStatus.READY_FOR_PIPELINE_EXECUTION)
        corr = "4f7f6a43-3c1e-4a53-9a0e-6b1c6f1e0a11"
        await send_envelopes(producer, [env.request("p1", "nlp", correlation_id=corr)], topic_prefix=prefix)
        await out.wait_for(lambda c: bool(c.on(Topic.SPELLCHECK)))

        bad_schema = env.outcome("p1", "spellcheck", corr, processed=["p1-e0"])
        del bad_schema[1]["data"]["phase_status"]
        mismatched = env.register("p9")  # a registration envelope on the outcome topic
        poison: list[tuple[str, str, bytes, str, str | None]] = [
            (register_topic, "p2", b"{this is not json", "InvalidMessageError", None),
            (outcome_topic, "p1", _envelope_bytes(bad_schema), "InvalidMessageError", "data.phase_status"),
            (outcome_topic, "p1", _envelope_bytes(mismatched), "InvalidMessageError", "event_type"),
            (
                register_topic,
                "p1",
                _envelope_bytes(env.register("p1", items=3)),  # p1 has 2 essays
                "BatchConflictError",
                None,
            ),
            (
                outcome_topic,
                "p1",
                _envelope_bytes(env.outcome("p1", "bogus", corr)),
                "UnknownPipelineError",
                None,
            ),
        ]
        positions = {}
        for topic, key, value, _, _ in poison:
            positions[value] = await _send_raw(producer, topic, key, value)
        # An outcome for a batch not registered (yet) is early, not poison: it waits.
        early = env.outcome("nope", "spellcheck", corr)
        await _send_raw(producer, outcome_topic, "nope", _envelope_bytes(early))
        # The very next messages on the same partitions (same keys) are processed.
        ids = env.item_ids("p1", 2)
        await _send_raw(producer, register_topic, "p2", _envelope_bytes(env.register("p2", items=1)))
        await _send_raw(
            producer,
            outcome_topic,
            "p1",
            _envelope_bytes(env.outcome("p1", "spellcheck", corr, processed=ids)),
        )

        await dlq.wait_for(lambda c: len(c.records) >= len(poison), what="dead letters")
        await out.wait_for(lambda c: bool(c.on(Topic.NLP)) and len(c.on(Topic.ESSAYS_REGISTERED)) == 2)

        await wait_until(lambda: runner.stats.deferred == 1, what="the early outcome to wait")
        assert runner.stats.dead_lettered == len(poison)
        letters: dict[bytes | None, Collected] = {r.raw: r for r in dlq.records}
        assert len(dlq.records) == len(poison)
        for topic, key, value, error_type, field in poison:
            letter = letters[value]
            partition, offset = positions[value]
            assert letter.topic == dlq_topic(topic.removeprefix(prefix))
            assert letter.key == key
            assert letter.raw == value
            assert letter.headers["dlq_error_type"] == error_type
            assert letter.headers["dlq_reason"].startswith(f"{error_type}: ")
            assert letter.headers["dlq_original_topic"] == topic
            assert letter.headers["dlq_original_partition"] == str(partition)
            assert letter.headers["dlq_original_offset"] == str(offset)
            assert letter.headers.get("dlq_error_field") == field
        # The bad messages changed nothing: the run went on with the good outcome only.
        state = await runner.opened.store.load("p1") if runner.opened else None
        assert state is not None
        assert state.active_run is not None
        assert dict(state.active_run.phase_statuses)["nlp"] == "dispatch_initiated"


async def test_kafka_transient_store_failure_is_retried_without_commit_and_never_dead_lettered(
    broker: LocalBroker, prefix: str, producer: ProducerLike
) -> None:
    env = HuleEduEnvelopes()
    memory = InMemoryStore()
    opened = OpenedStore(memory, memory)
    settings = fast_settings(broker.bootstrap, prefix)
    async with Collector(broker.bootstrap, [dlq_topic(t) for t in INBOUND], topic_prefix=prefix) as dlq:
        async with running(settings, store=opened) as first:
            memory.available = False  # the database goes away
            await send_envelopes(producer, [env.register("t1", items=2)], topic_prefix=prefix)
            await wait_until(lambda: first.stats.retries >= 3, what="retries while the store is down")
            assert first.stats.handled == 0
        # Stopped while the store was still down: the offset must not have been committed,
        # so a new instance of the group gets the same message again.
        memory.available = True
        async with (
            Collector(broker.bootstrap, OUTBOUND_TOPICS, topic_prefix=prefix) as out,
            running(settings, store=opened) as second,
        ):
            await out.wait_for(lambda c: bool(c.on(Topic.ESSAYS_REGISTERED)), what="the registration")
            assert second.stats.handled == 1
            assert len(out.on(Topic.ESSAYS_REGISTERED)) == 1
        assert dlq.records == []
        assert first.stats.dead_lettered == second.stats.dead_lettered == 0
