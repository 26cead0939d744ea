"""Was a defect (found by an attack on sizes): a completion the results consumer accepts
(within the documented 1,048,576-byte inbound limit) whose ``BatchResultsReadyV1``
announcement is larger than the producer's 1,048,576-byte request limit, so the
announcement could never be published. A completion now lists at most
``MAX_PHASES_LISTED`` phases in each list."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pipeline_state_kafka import KafkaPublisher, ProducerSettings, create_producer, ensure_topics
from pipeline_state_kafka.testing import Collector, LocalBroker

from pipeline_state._clock import ManualClock
from pipeline_state._intake import DEFAULT_MAX_MESSAGE_BYTES
from pipeline_state._relay import OutboxRelay
from pipeline_state.errors import InvalidMessageError
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.results import InMemoryResultsStore, ResultsService

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "results"))
from results_events import at, completion, registered

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(60)]

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _hostile_completion(phases: int) -> tuple[str, str]:
    """A completion of ``phases`` phase results, each ``duration_seconds: 1e15`` (4 bytes on
    the way in, ``1000000000000000.0`` (18 bytes) in the announcement)."""
    results = {f"p{i}": ("s", 0, 0, 1e15) for i in range(phases)}
    topic, envelope = completion("b1", "r1", "c1", when=at(10), phases=results)
    envelope["data"]["completed_phases"] = []
    envelope["data"]["skipped_phases"] = []
    raw = json.dumps(envelope, separators=(",", ":")).replace("1000000000000000.0", "1e15")
    return topic, raw


def _largest_within_limit() -> tuple[str, str]:
    phases = 10_000
    while len(_hostile_completion(phases + 100)[1].encode()) <= DEFAULT_MAX_MESSAGE_BYTES:
        phases += 100
    return _hostile_completion(phases)


async def test_an_accepted_completion_gets_an_announcement_that_can_be_published(
    broker: LocalBroker, prefix: str
) -> None:
    """Expected: a completion the results consumer accepts yields a ``BatchResultsReadyV1``
    that the relay can publish with the default producer (as the engine guarantees for its
    own commands with ``max_command_bytes``), or the completion is refused at intake
    (``InvalidMessageError``, dead-lettered) - e.g. phase results bounded by the profile's
    phases. Actual: a ~1.04 MB completion with ~14,000 phase results is applied; its
    announcement is ~1.24 MB (``1e15`` re-serialised as ``1000000000000000.0``), the
    producer refuses it every time (``MessageSizeTooLargeError``) and the relay parks it:
    the results-ready event of the run is never published."""
    store = InMemoryResultsStore()
    clock = ManualClock(T0)
    service = ResultsService(store, clock=clock)
    await service.handle_message(*registered("b1"))
    topic, raw = _largest_within_limit()
    assert len(raw.encode()) <= DEFAULT_MAX_MESSAGE_BYTES
    try:
        await service.handle_message(topic, raw)
    except InvalidMessageError:
        return  # refused at intake: fixed
    producer = create_producer(ProducerSettings(broker.bootstrap, client_id="relay"))  # default limits
    await producer.start()
    relay = OutboxRelay(
        store, KafkaPublisher(producer, topic_prefix=prefix), clock, max_attempts=3, base_backoff=0.01
    )
    ready = Topic.RESULTS_READY.value
    await ensure_topics(broker.bootstrap, [f"{prefix}{ready}", f"{prefix}{Topic.TEACHER_NOTIFICATION.value}"])
    try:
        async with Collector(broker.bootstrap, [ready], topic_prefix=prefix) as out:
            for _ in range(20):
                await relay.run_once()
                clock.advance(1.0)
                if not await store.pending_count():
                    break
            parked = [(r.message.topic, (r.last_error or "")[:220]) for r in await store.parked()]
            assert parked == [], "the announcement of an accepted completion was parked"

            await out.wait_for(lambda c: len(c.records) >= 1, what="the results-ready announcement")
    finally:
        await producer.stop()
