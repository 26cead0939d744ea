"""A broker-less record source for consumer unit tests: partition logs, positions, commits.

:class:`LogConsumer` implements the part of aiokafka's consumer the
:class:`~pipeline_state_kafka.InboundConsumer` uses, over in-memory partition logs: a
fetch returns records from each partition's position (bounded by ``max_records``), a seek
moves the position, a commit records the offsets. It stops the consumer (sets ``stop``)
once every partition has been read to its end and nothing was sought back. The service,
store and handlers driven through it are the real in-memory ones; only the broker is left
out (real-broker behaviour is tested in the other ``test_kafka_*`` modules).
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs
from pipeline_state_kafka import (
    ConsumerSettings,
    DeadLetterWriter,
    InboundConsumer,
    service_batch_handler,
    service_handler,
)
from pipeline_state_kafka._kafka import MessageSizeTooLargeError, TopicPartition, topic_partition

from pipeline_state import InMemoryStore, PipelineService

__all__ = ["FakeRecord", "LogConsumer", "MemoryProducer", "drain", "keys_in_different_lanes", "new_consumer"]


@attrs.frozen
class FakeRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp: int = 0


class LogConsumer:
    """In-memory partition logs read like a Kafka consumer (see the module docstring)."""

    def __init__(self, stop: asyncio.Event, *, max_fetches: int = 10_000) -> None:
        self.stop_event = stop
        self.logs: dict[TopicPartition, list[FakeRecord]] = {}
        self.positions: dict[TopicPartition, int] = {}
        self.committed: dict[TopicPartition, int] = {}
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.fetches: list[list[FakeRecord]] = []
        self.max_fetches = max_fetches
        self.listener: Any = None

    def append(
        self,
        topic: str,
        value: bytes | None,
        *,
        partition: int = 0,
        key: bytes | None = None,
        timestamp: int | None = None,
        headers: tuple[tuple[str, bytes], ...] = (),
    ) -> FakeRecord:
        tp = topic_partition(topic, partition)
        log = self.logs.setdefault(tp, [])
        self.positions.setdefault(tp, 0)
        stamp = len(log) if timestamp is None else timestamp
        record = FakeRecord(topic, partition, len(log), key, value, headers, stamp)
        log.append(record)
        return record

    # ConsumerLike
    def subscribe(self, topics: Iterable[str], listener: Any = None) -> None:
        self.listener = listener

    async def start(self) -> None:
        if self.listener is not None:
            await self.listener.on_partitions_assigned(list(self.logs))

    async def stop(self) -> None:
        return None

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> Mapping[TopicPartition, Sequence[FakeRecord]]:
        await asyncio.sleep(0)
        left = max_records or 10**9
        batch: dict[TopicPartition, list[FakeRecord]] = {}
        for tp, log in self.logs.items():
            records = log[self.positions[tp] : self.positions[tp] + left]
            if records:
                batch[tp] = records
                self.positions[tp] += len(records)
                left -= len(records)
            if left <= 0:
                break
        if not batch or len(self.fetches) >= self.max_fetches:
            self.stop_event.set()
            return {}
        self.fetches.append([r for records in batch.values() for r in records])
        return batch

    async def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        for tp, offset in (offsets or {}).items():
            assert offset >= self.committed.get(tp, 0), "an offset commit went backwards"
            self.committed[tp] = offset

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.seeks.append((partition, offset))
        self.positions[partition] = offset

    def assignment(self) -> set[TopicPartition]:
        return set(self.logs)

    def ends(self) -> dict[TopicPartition, int]:
        return {tp: len(log) for tp, log in self.logs.items()}


class MemoryProducer:
    """Keeps what is sent; refuses values above ``max_request_size`` like aiokafka does."""

    def __init__(self, max_request_size: int = 1024 * 1024) -> None:
        self.max_request_size = max_request_size
        self.sent: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]] = []

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def flush(self) -> None:
        return None

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        *,
        headers: Sequence[tuple[str, bytes]] | None = None,
    ) -> Any:
        await self.send_and_wait(topic, value, key, headers=headers)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    async def send_and_wait(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        *,
        headers: Sequence[tuple[str, bytes]] | None = None,
    ) -> object:
        listed = list(headers or ())
        size = 61 + len(key or b"") + len(value or b"") + sum(len(k) + len(v) + 4 for k, v in listed)
        if size > self.max_request_size:
            raise MessageSizeTooLargeError(f"the message is {size} bytes")
        self.sent.append((topic, key, value, listed))
        return None


def new_consumer(
    source: LogConsumer,
    service: PipelineService | None = None,
    *,
    batched: bool = True,
    producer: MemoryProducer | None = None,
    dlq_max_message_bytes: int = 1024 * 1024,
    **settings: Any,
) -> tuple[InboundConsumer, PipelineService, MemoryProducer]:
    """An :class:`InboundConsumer` over a real in-memory service, with quick retries."""
    service = service or PipelineService(InMemoryStore())
    producer = producer or MemoryProducer()
    options: dict[str, Any] = {"retry_base_seconds": 0.001, "retry_max_seconds": 0.002, **settings}
    consumer = InboundConsumer(
        ConsumerSettings("127.0.0.1:1", **options),
        service_handler(service),
        DeadLetterWriter(producer, group_id="units", max_message_bytes=dlq_max_message_bytes),
        batch_handler=service_batch_handler(service) if batched else None,
        consumer_factory=lambda _settings: source,  # the record source instead of a broker
    )
    return consumer, service, producer


async def drain(consumer: InboundConsumer, source: LogConsumer, *, within: float = 30.0) -> None:
    """Run ``consumer`` over ``source`` until every record was read (bounded in time)."""
    await asyncio.wait_for(consumer.run(source.stop_event), timeout=within)


def keys_in_different_lanes(lanes: int = 4) -> tuple[str, str]:
    """Two batch ids whose records the consumer puts in different lanes (crc32 of the key)."""
    first = "lane-a"
    for n in range(100):
        other = f"lane-b{n}"
        if zlib.crc32(other.encode()) % lanes != zlib.crc32(first.encode()) % lanes:
            return first, other
    raise AssertionError("no two keys in different lanes")
