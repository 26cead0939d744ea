"""The inbound consumer: records in, one unit of work each, offsets committed after.

:class:`InboundConsumer` subscribes to the inbound topics in a consumer group with automatic
commits off. Each fetched batch is split by partition; a partition's records are handled
strictly in offset order (producers key by ``batch_id``, so a batch's events share a
partition), and different partitions are handled concurrently up to
``ConsumerSettings.partition_concurrency``. Only once every unit of work of the batch has
committed are the partitions' next offsets committed to Kafka.

Errors follow :class:`~pipeline_state_kafka.policy.ErrorPolicy`: poison records go to
``<topic>.DLQ`` and are committed; on a transient error the partition's progress so far is
committed, the consumer seeks back to the failed record and retries it after an
exponential backoff (nothing is committed past it, nothing goes to the DLQ).

Rebalances wait for the unit of work in flight: the listener asks the batch to stop after
its current record and takes the lock the batch holds, so the offsets of finished work are
committed before partitions move to another member (records fetched but not handled are
fetched again from the committed offsets). A stop request (the event given to
:meth:`InboundConsumer.run`) ends fetching, lets the current unit of work finish, commits,
and leaves the group.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import attrs

from pipeline_state.events import INBOUND_TOPICS

from ._kafka import (
    CommitFailedError,
    ConsumerLike,
    IllegalStateError,
    KafkaError,
    RecordLike,
    TopicPartition,
    leave_group,
    new_consumer,
    subscribe,
)
from ._startup import start_with_retry
from .dlq import DeadLetterWriter, reason_of
from .handlers import BatchHandler, Handled, MessageHandler
from .policy import ErrorPolicy, Verdict
from .stats import ServiceStats

__all__ = ["ConsumerSettings", "InboundConsumer"]

log = logging.getLogger("pipeline_state_kafka.consumer")


@attrs.frozen
class ConsumerSettings:
    """Options of :class:`InboundConsumer`.

    ``topics`` are contract topic names; ``topic_prefix`` is put before each to form the
    Kafka topic (and stripped again before the service sees it). ``fetch_max_wait_ms``
    bounds how long the broker may hold a fetch open: Apache Kafka answers as soon as data
    arrives, but some brokers wait the whole time, so keep it small when latency matters.
    Kafka's group join waits about half of ``session_timeout_ms`` on some brokers.
    """

    bootstrap_servers: str
    group_id: str = "pipeline-state"
    topics: tuple[str, ...] = INBOUND_TOPICS
    topic_prefix: str = ""
    client_id: str = "pipeline-state"
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    max_records: int = attrs.field(default=500, validator=attrs.validators.ge(1))
    poll_timeout_ms: int = 200
    fetch_max_wait_ms: int = 100
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    max_poll_interval_ms: int = 300_000
    metadata_max_age_ms: int = 30_000
    request_timeout_ms: int = 40_000
    partition_concurrency: int = attrs.field(default=4, validator=attrs.validators.ge(1))
    retry_base_seconds: float = 0.1
    retry_max_seconds: float = 5.0
    startup_timeout_seconds: float = 30.0

    def kafka_topics(self) -> list[str]:
        return [f"{self.topic_prefix}{t}" for t in self.topics]

    def options(self) -> dict[str, Any]:
        """Keyword arguments for ``AIOKafkaConsumer``."""
        return {
            "group_id": self.group_id,
            "client_id": self.client_id,
            "enable_auto_commit": False,
            "auto_offset_reset": self.auto_offset_reset,
            "fetch_max_wait_ms": self.fetch_max_wait_ms,
            "session_timeout_ms": self.session_timeout_ms,
            "heartbeat_interval_ms": self.heartbeat_interval_ms,
            "max_poll_interval_ms": self.max_poll_interval_ms,
            "metadata_max_age_ms": self.metadata_max_age_ms,
            "request_timeout_ms": self.request_timeout_ms,
        }


@attrs.frozen
class _Progress:
    partition: TopicPartition
    next_offset: int | None
    retry_offset: int | None


HandledHook = Callable[[RecordLike, Handled], None]


class InboundConsumer:
    """Consumes records, hands each to ``handler`` and commits offsets after the work.

    ``dead_letters`` parks poison records; ``on_handled`` is called after each successful
    unit of work (the service uses it to wake the relay). ``consumer_factory`` builds the
    underlying aiokafka consumer (tests and embedders may pass their own).
    """

    def __init__(
        self,
        settings: ConsumerSettings,
        handler: MessageHandler,
        dead_letters: DeadLetterWriter,
        *,
        policy: ErrorPolicy | None = None,
        stats: ServiceStats | None = None,
        on_handled: HandledHook | None = None,
        consumer_factory: Callable[[ConsumerSettings], ConsumerLike] | None = None,
        name: str = "inbound",
        batch_handler: BatchHandler | None = None,
    ) -> None:
        self.settings = settings
        self.handler = handler
        self.batch_handler = batch_handler
        self.dead_letters = dead_letters
        self.policy = policy or ErrorPolicy()
        self.stats = stats or ServiceStats()
        self.on_handled = on_handled
        self.name = name
        self._factory = consumer_factory or (lambda s: new_consumer(s.bootstrap_servers, **s.options()))
        self._lock = asyncio.Lock()
        self._unexpected: dict[tuple[str, int, int], int] = {}
        self._failures = 0
        self._yielding = False
        self._consumer: ConsumerLike | None = None
        self.ready = asyncio.Event()
        """Set once partitions have been assigned for the first time."""

    # -- rebalance hooks -------------------------------------------------------------------
    async def partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        parts = list(revoked)
        self._yielding = True  # the batch in flight stops after its current unit of work...
        try:
            async with self._lock:  # ...and commits its progress before the partitions move
                gone = {(tp.topic, tp.partition) for tp in parts}
                self._unexpected = {k: v for k, v in self._unexpected.items() if (k[0], k[1]) not in gone}
        finally:
            self._yielding = False
        if parts:
            log.info("partitions revoked", extra={"consumer": self.name, "partitions": len(parts)})
            log.debug("revoked %s", _names(parts), extra={"consumer": self.name})

    async def partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        parts = list(assigned)
        log.info(
            "partitions assigned",
            extra={
                "consumer": self.name,
                "partitions": len(parts),
                "topics": len({tp.topic for tp in parts}),
            },
        )
        log.debug("assigned %s", _names(parts), extra={"consumer": self.name})
        self.ready.set()

    # -- the loop --------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; then finish the unit of work, commit and leave."""
        consumer = self._factory(self.settings)
        self._consumer = consumer
        subscribe(consumer, self.settings.kafka_topics(), self)
        try:
            started = await start_with_retry(
                consumer.start, "kafka consumer", self.settings.startup_timeout_seconds, stop
            )
            while started and not stop.is_set():
                try:
                    batch = await consumer.getmany(
                        timeout_ms=self.settings.poll_timeout_ms, max_records=self.settings.max_records
                    )
                except KafkaError as exc:
                    log.warning("fetch failed: %s", reason_of(exc), extra={"consumer": self.name})
                    await self._backoff(stop)
                    continue
                if not batch:
                    continue
                async with self._lock:
                    retry = await self._process(consumer, batch, stop)
                if retry:
                    await self._backoff(stop)
                else:
                    self._failures = 0
        finally:
            self._consumer = None
            with contextlib.suppress(Exception):
                await leave_group(consumer)
            with contextlib.suppress(Exception):
                await consumer.stop()

    async def _process(
        self,
        consumer: ConsumerLike,
        batch: Mapping[TopicPartition, Sequence[RecordLike]],
        stop: asyncio.Event,
    ) -> bool:
        limit = asyncio.Semaphore(self.settings.partition_concurrency)

        async def one_partition(tp: TopicPartition, records: Sequence[RecordLike]) -> _Progress:
            async with limit:
                return await self._partition(tp, records, stop)

        if len(batch) == 1:
            ((tp, records),) = batch.items()
            progress = [await self._partition(tp, records, stop)]
        else:
            progress = list(await asyncio.gather(*(one_partition(tp, recs) for tp, recs in batch.items())))
        offsets = {p.partition: p.next_offset for p in progress if p.next_offset is not None}
        await self._commit(consumer, offsets)
        retry = False
        for p in progress:
            if p.retry_offset is not None:
                retry = True
                try:
                    consumer.seek(p.partition, p.retry_offset)
                except (IllegalStateError, KafkaError, AssertionError):
                    log.info("partition %s moved away before its retry", _name(p.partition))
        return retry

    async def _partition(
        self, tp: TopicPartition, records: Sequence[RecordLike], stop: asyncio.Event
    ) -> _Progress:
        if self.batch_handler is not None and len(records) > 1 and not (stop.is_set() or self._yielding):
            progress = await self._batched(tp, records)
            if progress is not None:
                return progress
        next_offset: int | None = None
        for record in records:
            if stop.is_set() or self._yielding:
                break  # records not handled are fetched again from the committed offset
            if not await self._one(record):
                return _Progress(tp, next_offset, record.offset)
            next_offset = record.offset + 1
        return _Progress(tp, next_offset, None)

    async def _batched(self, tp: TopicPartition, records: Sequence[RecordLike]) -> _Progress | None:
        """Handle a partition's records in one unit of work. ``None`` when the batch as a whole
        failed: nothing of it was committed and the caller handles the records one by one,
        which classifies each failure against its own record."""
        assert self.batch_handler is not None
        items = [(self._topic(r), r.value if r.value is not None else b"") for r in records]
        try:
            results = await self.batch_handler(items)
        except Exception as exc:
            log.info("batched unit of work failed, handling one by one: %s", reason_of(exc))
            return None
        next_offset: int | None = None
        for record, (topic, _), result in zip(records, items, results, strict=True):
            self.stats.consumed += 1
            if isinstance(result, Exception):
                if not await self._failed(record, result):
                    return _Progress(tp, next_offset, record.offset)
            else:
                self._done(record, topic, result)
            next_offset = record.offset + 1
        return _Progress(tp, next_offset, None)

    def _topic(self, record: RecordLike) -> str:
        topic = record.topic
        prefix = self.settings.topic_prefix
        if prefix and topic.startswith(prefix):
            topic = topic[len(prefix) :]
        return topic

    async def _one(self, record: RecordLike) -> bool:
        """Handle one record; ``False`` means retry it later (do not commit past it)."""
        self.stats.consumed += 1
        topic = self._topic(record)
        try:
            handled = await self.handler(topic, record.value if record.value is not None else b"")
        except Exception as exc:
            return await self._failed(record, exc)
        self._done(record, topic, handled)
        return True

    def _done(self, record: RecordLike, topic: str, handled: Handled) -> None:
        if self._unexpected:
            self._unexpected.pop((record.topic, record.partition, record.offset), None)
        self._count(handled)
        log.info(
            "handled %s",
            topic,
            extra={
                "consumer": self.name,
                "event_id": handled.event_id,
                "batch_id": handled.batch_id,
                "correlation_id": handled.correlation_id,
                "result": handled.result,
                "emitted": handled.emitted,
                "partition": record.partition,
                "offset": record.offset,
            },
        )
        if self.on_handled is not None:
            self.on_handled(record, handled)

    def _count(self, handled: Handled) -> None:
        self.stats.handled += 1
        if handled.result == "duplicate":
            self.stats.duplicates += 1
        elif handled.result.startswith("ignored:"):
            self.stats.ignored += 1

    async def _failed(self, record: RecordLike, error: Exception) -> bool:
        verdict = self.policy.classify(error)
        context = _context(record, error)
        if verdict is Verdict.RETRY:
            self.stats.retries += 1
            log.warning("transient failure, will retry: %s", reason_of(error), extra=context)
            return False
        if verdict is Verdict.UNEXPECTED:
            key = (record.topic, record.partition, record.offset)
            attempts = self._unexpected.get(key, 0) + 1
            self._unexpected[key] = attempts
            if attempts < self.policy.max_unexpected_attempts:
                self.stats.retries += 1
                log.error(
                    "unexpected failure (attempt %s of %s): %s",
                    attempts,
                    self.policy.max_unexpected_attempts,
                    reason_of(error),
                    extra=context,
                    exc_info=error,
                )
                return False
            self._unexpected.pop(key, None)
        try:
            await self.dead_letters.send(record, error)
        except (TimeoutError, KafkaError, OSError) as exc:
            self.stats.retries += 1
            log.warning("could not write the dead letter, will retry: %s", reason_of(exc), extra=context)
            return False
        self.stats.dead_lettered += 1
        log.warning("dead-lettered: %s", reason_of(error), extra=context)
        return True

    async def _commit(self, consumer: ConsumerLike, offsets: dict[TopicPartition, int]) -> None:
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError, KafkaError) as exc:
            # The work is committed in the store; a redelivery is absorbed by the inbox.
            self.stats.commit_failures += 1
            log.warning("offset commit failed (records may be redelivered): %s", reason_of(exc))
            return
        self.stats.offset_commits += 1

    async def _backoff(self, stop: asyncio.Event) -> None:
        self._failures += 1
        delay = min(
            self.settings.retry_max_seconds, self.settings.retry_base_seconds * 2 ** (self._failures - 1)
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)


def _name(tp: TopicPartition) -> str:
    return f"{tp.topic}[{tp.partition}]"


def _names(parts: Iterable[TopicPartition]) -> str:
    return ",".join(sorted(_name(tp) for tp in parts))


def _context(record: RecordLike, error: BaseException) -> dict[str, Any]:
    """Log fields of a failed record: where it came from and, when readable, its ids."""
    context: dict[str, Any] = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "error_type": type(error).__name__,
    }
    batch_id = getattr(error, "batch_id", None)
    try:
        envelope = json.loads(record.value or b"")
    except ValueError:
        envelope = None
    if isinstance(envelope, dict):
        context["event_id"] = envelope.get("event_id")
        context["correlation_id"] = envelope.get("correlation_id")
        data = envelope.get("data")
        if batch_id is None and isinstance(data, dict):
            batch_id = data.get("batch_id")
    context["batch_id"] = batch_id
    return context
