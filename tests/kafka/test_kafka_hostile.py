"""Hostile records over the real broker: the record that killed ``serve`` (issue 10.1) and
dead letters over the DLQ size limit (issue 10.2) are parked with a reason while the service
goes on with the next record; facts that waited too long (issue 11.2) are parked naming
what they waited for."""

from __future__ import annotations

import hashlib
import json
import logging
import signal
from pathlib import Path
from typing import Any

import attrs
import pytest
from kafka_harness import ServeProcess, fast_settings, running, wait_until
from pipeline_state_kafka import ProducerLike, ProducerSettings, create_producer, dlq_topic
from pipeline_state_kafka.testing import Collector, LocalBroker
from pipeline_state_service import Summary

from pipeline_state.profiles.huleedu.events import OUTBOUND_TOPICS, Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

pytestmark = pytest.mark.kafka

MEASURED = b'{"event_id":' + b"[" * 100000 + b"]" * 100000 + b"}"
OUTCOME = Topic.PHASE_OUTCOME.value
REGISTER = Topic.BATCH_REGISTER.value
PROVISIONED = Topic.CONTENT_PROVISIONED.value


async def _send(producer: ProducerLike, topic: str, key: str, value: bytes) -> tuple[int, int]:
    meta: Any = await producer.send_and_wait(topic, value, key.encode())
    return int(meta.partition), int(meta.offset)


def _bytes(delivery: tuple[str, dict[str, Any]]) -> bytes:
    return json.dumps(delivery[1]).encode()


async def test_kafka_serve_survives_the_measured_recursion_record_and_serves_the_next(
    broker: LocalBroker, prefix: str, producer: ProducerLike, tmp_path: Path
) -> None:
    env = HuleEduEnvelopes()
    serve = ServeProcess(broker.bootstrap, "memory://", prefix, log_file=tmp_path / "serve.log").start()
    try:
        await serve.wait_ready()
        async with Collector(broker.bootstrap, [dlq_topic(OUTCOME)], topic_prefix=prefix) as dlq:
            position = await _send(producer, f"{prefix}{OUTCOME}", "b1", MEASURED)
            await dlq.wait_for(lambda c: len(c.records) == 1, what="the dead letter")
            # Sent after the poison one, on the same partition (same key) and another topic.
            after = env.register("after-poison")
            await _send(producer, f"{prefix}{REGISTER}", "b1", _bytes(after))
            outcome = env.outcome("after-poison", "spellcheck", after[1]["correlation_id"])
            await _send(producer, f"{prefix}{OUTCOME}", "b1", _bytes(outcome))
            # Both are handled (the outcome of a batch without a run changes nothing).
            await serve.wait_handled({after[1]["event_id"], outcome[1]["event_id"]})
            (letter,) = dlq.records
            assert letter.raw == MEASURED
            assert letter.key == "b1"
            assert letter.headers["dlq_error_type"] == "InvalidMessageError"
            assert "nested 100001 levels deep exceeds the limit of 32" in letter.headers["dlq_reason"]
            assert (letter.headers["dlq_original_partition"], letter.headers["dlq_original_offset"]) == (
                str(position[0]),
                str(position[1]),
            )
            assert serve.process is not None
            assert serve.process.poll() is None
        assert serve.signal(signal.SIGTERM) == 0
    finally:
        serve.close()


async def test_kafka_record_too_large_for_the_dlq_is_dead_lettered_truncated_and_the_next_is_handled(
    broker: LocalBroker, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    env = HuleEduEnvelopes()
    big_producer = create_producer(
        ProducerSettings(broker.bootstrap, client_id="tests-big", max_request_size=4 * 1024 * 1024)
    )
    await big_producer.start()
    huge = env.register("big1")
    huge[1]["metadata"] = {"pad": "x" * (3 * 1024 * 1024 // 2)}
    value = _bytes(huge)
    assert len(value) > 1024 * 1024
    settings = fast_settings(broker.bootstrap, prefix)
    try:
        with caplog.at_level(logging.INFO, logger="pipeline_state_kafka.service"):
            async with (
                running(settings) as runner,
                Collector(broker.bootstrap, OUTBOUND_TOPICS, topic_prefix=prefix) as out,
                Collector(broker.bootstrap, [dlq_topic(REGISTER)], topic_prefix=prefix) as dlq,
            ):
                await _send(big_producer, f"{prefix}{REGISTER}", "big1", value)
                await _send(big_producer, f"{prefix}{REGISTER}", "big1", _bytes(env.register("big1")))
                await out.wait_for(lambda c: bool(c.on(Topic.ESSAYS_REGISTERED)), what="the registration")
                await dlq.wait_for(lambda c: len(c.records) == 1, what="the dead letter")
                assert runner.stats.retries == 0
                assert runner.dlq_max_message_bytes == 1024 * 1024
        (letter,) = dlq.records
        assert letter.headers["dlq_truncated"] == "1"
        assert letter.headers["dlq_original_size"] == str(len(value))
        assert letter.headers["dlq_original_sha256"] == hashlib.sha256(value).hexdigest()
        assert "exceeds the limit of 1048576 bytes" in letter.headers["dlq_reason"]
        assert letter.raw is not None
        assert value.startswith(letter.raw)
        assert 1024 * 1024 - 4096 < len(letter.raw) < 1024 * 1024
        assert letter.key == "big1"
        # The broker was asked for its limit; this one does not say, and that is logged.
        assert any("dead-letter size limit" in r.getMessage() for r in caplog.records)
    finally:
        await big_producer.stop()


async def test_kafka_dlq_size_limit_is_a_setting(
    broker: LocalBroker, prefix: str, producer: ProducerLike
) -> None:
    env = HuleEduEnvelopes()
    poison = env.register("mid")
    poison[1]["data"]["expected_essay_count"] = "many"
    poison[1]["metadata"] = {"pad": "y" * 200_000}
    value = _bytes(poison)
    settings = attrs.evolve(fast_settings(broker.bootstrap, prefix), dlq_max_message_bytes=64 * 1024)
    async with (
        running(settings) as runner,
        Collector(broker.bootstrap, [dlq_topic(REGISTER)], topic_prefix=prefix) as dlq,
    ):
        await _send(producer, f"{prefix}{REGISTER}", "mid", value)
        await dlq.wait_for(lambda c: len(c.records) == 1, what="the dead letter")
        assert runner.dlq_max_message_bytes == 64 * 1024
    (letter,) = dlq.records
    assert letter.headers["dlq_truncated"] == "1"
    assert letter.headers["dlq_error_field"] == "data.expected_essay_count"
    assert letter.raw is not None
    assert len(letter.raw) < 64 * 1024
    assert letter.headers["dlq_original_sha256"] == hashlib.sha256(value).hexdigest()


async def test_kafka_fact_that_waited_too_long_is_dead_lettered_with_what_it_waited_for(
    broker: LocalBroker, prefix: str, producer: ProducerLike
) -> None:
    """Issue 11.2, Kafka side: an early fact waits (counted in the live summary); once the
    waiting window passed, the sweeper parks it on ``<topic>.DLQ`` naming what it waited
    for, and it leaves the waiting set."""
    env = HuleEduEnvelopes()
    provisioning = env.provisioned("w1", env.item_ids("w1", 2))
    raw = _bytes(provisioning)
    settings = attrs.evolve(
        fast_settings(broker.bootstrap, prefix), sweep_seconds=0.2, waiting_window_seconds=2.0
    )
    async with (
        running(settings) as runner,
        Collector(broker.bootstrap, [dlq_topic(PROVISIONED)], topic_prefix=prefix) as dlq,
    ):
        assert runner.opened is not None
        summary = Summary(runner.stats, runner.opened.store, runner.opened.outbox)
        await _send(producer, f"{prefix}{PROVISIONED}", "w1", raw)
        await wait_until(lambda: runner.stats.deferred == 1, what="the provisioning to wait")
        sample = await summary.sample()
        assert sample.waiting == 1
        assert "waiting=1" in sample.line()
        await dlq.wait_for(lambda c: len(c.records) == 1, what="the expired fact's dead letter")
        await wait_until(lambda: runner.stats.waiting_dead_lettered == 1, what="the sweep to count it")
        assert (await summary.sample()).waiting == 0
    (letter,) = dlq.records
    assert letter.raw == raw
    assert letter.key == "w1"
    assert letter.headers["dlq_error_type"] == "WaitedTooLongError"
    assert letter.headers["dlq_waited_for"] == "batch_registration"
    assert letter.headers["dlq_event_id"] == provisioning[1]["event_id"]
    assert "batch_registration" in letter.headers["dlq_reason"]
    assert letter.headers["dlq_original_topic"] == f"{prefix}{PROVISIONED}"
    assert "dlq_original_offset" not in letter.headers
