"""Found by an attack on the Kafka adapter, held: the publisher when the producer refuses a
message as too large, on a real Kafka-protocol broker (the session broker of ``conftest.py``).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pipeline_state_kafka import (
    KafkaPublisher,
    ProducerSettings,
    create_producer,
    ensure_topics,
)
from pipeline_state_kafka.testing import Collector, LocalBroker

from pipeline_state import InMemoryStore
from pipeline_state._clock import ManualClock
from pipeline_state._relay import OutboxRelay
from pipeline_state.ports import Change, OutboxMessage
from pipeline_state.profiles.huleedu.events import Topic

pytestmark = pytest.mark.kafka

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _message(event_id: str, key: str, size: int = 10) -> OutboxMessage:
    topic = Topic.TEACHER_NOTIFICATION.value
    return OutboxMessage(
        event_id=event_id,
        topic=topic,
        key=key,
        value={"event_id": event_id, "event_type": topic, "data": {"pad": "x" * size}},
    )


async def test_relay_parks_a_message_the_producer_refuses_as_too_large(
    broker: LocalBroker, prefix: str
) -> None:
    """A message larger than the producer's ``max_request_size`` is refused every time: the
    relay parks it after ``max_attempts`` with ``MessageSizeTooLargeError`` (not retried for
    ever); the later row of the same key goes out after it (never before it), and another
    key is never held back."""
    producer = create_producer(ProducerSettings(broker.bootstrap, client_id="relay", max_request_size=4_000))
    await producer.start()
    store = InMemoryStore()
    clock = ManualClock(T0)
    relay = OutboxRelay(
        store, KafkaPublisher(producer, topic_prefix=prefix), clock, max_attempts=3, base_backoff=0.01
    )
    big, after, other = _message("big", "K", 20_000), _message("after", "K"), _message("other", "L")
    await store.commit(Change("b1", None, None, T0, outbox=(big, after, other)))
    await ensure_topics(broker.bootstrap, [f"{prefix}{Topic.TEACHER_NOTIFICATION.value}"])
    try:
        topics = [Topic.TEACHER_NOTIFICATION.value]
        async with Collector(broker.bootstrap, topics, topic_prefix=prefix) as out:
            for _ in range(40):
                await relay.run_once()
                clock.advance(1.0)
                if not await store.pending_count():
                    break
            assert await store.pending_count() == 0, "rows still pending after 40 passes"
            await out.wait_for(lambda c: len(c.records) >= 2, what="the two small messages")
            parked = await store.parked()
            assert [r.message.event_id for r in parked] == ["big"]
            assert parked[0].attempts == 3
            assert "MessageSizeTooLargeError" in (parked[0].last_error or "")
            ids = [r.event_id for r in out.records]
            assert sorted(ids) == ["after", "other"]
            assert ids.count("after") == 1
    finally:
        await producer.stop()
