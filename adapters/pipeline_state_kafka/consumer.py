"""The inbound consumer: records in, one unit of work each, offsets committed after.

:class:`InboundConsumer` subscribes to the inbound topics in a consumer group with automatic
commits off. The records of one fetch are merged into one sequence in record-timestamp
order across partitions, each partition keeping its offset order (a k-way merge of the
partitions' heads, the way Kafka Streams' partition group synchronises co-partitioned
topics; ties go to the topic listed first in ``ConsumerSettings.topics``, which lists the
lifecycle's topics in lifecycle order). The merged sequence is split by record key (the
batch id) into ``ConsumerSettings.partition_concurrency`` lanes, each keeping the merged
order, so all of a batch's records are handled in time order in one lane while independent
batches go concurrently. Each lane is handed to the batch handler as one unit of work (one
transaction), or record by record when there is no batch handler or the lane as a whole
failed. Only then are the partitions' next offsets committed: a partition's offset never
moves past a record that was not handled (records after it that were handled come again
and are absorbed by the inbox). The offset commit (a broker round trip) goes on behind the
next fetch's work rather than before it: one commit is in flight at a time, and offsets that
come due meanwhile go in the next one (a partition's later offset replaces its earlier
one), so commits stay in order; a rebalance and the stop wait for it.

Every failure while handling a record ends in a defined outcome (see
:class:`~pipeline_state_kafka.policy.ErrorPolicy`): poison records go to ``<topic>.DLQ``
with the reason and are committed; on a transient error (store or broker unreachable) the
progress before it is committed, each partition seeks back to its first unhandled record
and the sequence is tried again after an exponential backoff. Nothing raised by one record
(including by logging it or building its dead letter) stops the consumer; only
``BaseException`` that is not an ``Exception`` (cancellation, ``KeyboardInterrupt``)
propagates.

Rebalances wait for the unit of work in flight: the listener asks the sequence to stop
after its current record and takes the lock the loop holds, so the offsets of finished work
are committed before partitions move to another member (records fetched but not handled
are fetched again from the committed offsets). A stop request (the event given to
:meth:`InboundConsumer.run`) ends fetching, lets the current unit of work finish, commits,
and leaves the group. Neither waits on the broker for ever: a fetch is given up when the
stop comes (during a rebalance aiokafka's fetch waits for the new assignment whatever its
timeout), and an offset commit and the consumer's own stop (which lets a group join in
progress finish) each wait for at most the group's session timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import attrs

from pipeline_state._intake import decode_json
from pipeline_state._retry import Backoff, pause
from pipeline_state.errors import InvalidMessageError
from pipeline_state.profiles.huleedu.events import INBOUND_TOPICS

from ._kafka import (
    CommitFailedError,
    ConsumerLike,
    IllegalStateError,
    KafkaError,
    RecordLike,
    TopicPartition,
    leave_group,
    new_consumer,
    retrieve_outcome,
    subscribe,
)
from ._startup import start_with_retry
from .dlq import DeadLetterWriter, ParkedFact, reason_of
from .handlers import BatchHandler, Handled, MessageHandler
from .metrics import ServiceMetrics
from .policy import ErrorPolicy, Verdict
from .stats import ServiceStats
from .tracing import attached, dead_lettered, trace_headers

__all__ = ["DEFAULT_PARTITION_CONCURRENCY", "ConsumerSettings", "InboundConsumer", "merge_by_timestamp"]

log = logging.getLogger("pipeline_state_kafka.consumer")

CONTEXT_MAX_BYTES = 64 * 1024
"""Records larger than this are not decoded again just to name their ids in a log line."""


DEFAULT_PARTITION_CONCURRENCY = 4
"""Lanes of one fetch handled at once when nothing else is set (see :class:`ConsumerSettings`)."""


@attrs.frozen
class ConsumerSettings:
    """Options of :class:`InboundConsumer`.

    ``topics`` are contract topic names; ``topic_prefix`` is put before each to form the
    Kafka topic (and stripped again before the service sees it). Their order breaks ties
    between records with the same timestamp. ``fetch_max_wait_ms`` bounds how long the
    broker may hold a fetch open: Apache Kafka answers as soon as data arrives, but some
    brokers wait the whole time, so keep it small when latency matters. Kafka's group join
    waits about half of ``session_timeout_ms`` on some brokers. ``partition_concurrency``
    is how many lanes of one fetch are handled at once: the merged, time-ordered sequence is
    split by record key (the batch id) into that many lanes, so a batch's records stay in one
    lane in time order while independent batches commit concurrently; ``None`` (the default)
    is :data:`DEFAULT_PARTITION_CONCURRENCY` unless whoever wires the consumer knows better:
    ``serve`` uses one lane on a store that admits one writer at a time (SQLite), where lanes
    would only queue for the writer, each with a commit of its own.
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
    partition_concurrency: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(1))
    )
    retry_base_seconds: float = 0.1
    retry_max_seconds: float = 5.0
    startup_timeout_seconds: float = 30.0

    @property
    def lanes(self) -> int:
        """How many lanes of a fetch are handled at once (``partition_concurrency`` or the
        default)."""
        given = self.partition_concurrency
        return DEFAULT_PARTITION_CONCURRENCY if given is None else given

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
class Bookkeeping:
    """What to do with the partitions of a fetch once a prefix of its merged sequence is done.

    ``commit``: the next offset of every partition with handled records (only records
    before the first unhandled one of the merged sequence count). ``seek``: the first
    unhandled record of every partition that has one.
    """

    commit: dict[TopicPartition, int]
    seek: dict[TopicPartition, int]


HandledHook = Callable[[RecordLike, Handled], None]


def _timestamp(record: RecordLike) -> int:
    value = getattr(record, "timestamp", None)
    return value if isinstance(value, int) else -1


def merge_by_timestamp(
    batch: Mapping[TopicPartition, Sequence[RecordLike]], topic_order: Sequence[str] = ()
) -> list[RecordLike]:
    """The records of ``batch`` as one sequence in record-timestamp order.

    Each partition's records keep their offset order (the merge always takes the head of a
    partition, so an out-of-order timestamp inside a partition never reorders it). Equal
    timestamps go to the topic that comes first in ``topic_order`` (others after, by name),
    then to the lower partition.
    """
    rank = {topic: index for index, topic in enumerate(topic_order)}
    last = len(rank)

    def order(tp: TopicPartition) -> tuple[int, str, int]:
        return (rank.get(tp.topic, last), tp.topic, tp.partition)

    lanes = []
    for tp in sorted(batch, key=order):
        lane_order = order(tp)
        lanes.append([((_timestamp(r), lane_order), r) for r in batch[tp]])
    return [record for _, record in heapq.merge(*lanes, key=lambda item: item[0])]


def bookkeeping(
    batch: Mapping[TopicPartition, Sequence[RecordLike]], merged: Sequence[RecordLike], done: int
) -> Bookkeeping:
    """Offsets to commit and positions to seek back to when ``merged[:done]`` was handled."""
    return settle(batch, merged[done:])


def settle(
    batch: Mapping[TopicPartition, Sequence[RecordLike]], unhandled: Iterable[RecordLike]
) -> Bookkeeping:
    """Offsets to commit and positions to seek back to when every record of ``batch`` but
    ``unhandled`` was handled: a partition is committed up to its first unhandled record
    (records after it that were handled come again, and the inbox absorbs them) and seeks
    back to it."""
    parts = {(tp.topic, tp.partition): tp for tp in batch}
    first: dict[TopicPartition, int] = {}
    for record in unhandled:
        tp = parts[(record.topic, record.partition)]
        first[tp] = min(record.offset, first.get(tp, record.offset))
    commit: dict[TopicPartition, int] = {}
    for tp, records in batch.items():
        if not records:
            continue
        if tp not in first:
            commit[tp] = records[-1].offset + 1
        elif first[tp] > records[0].offset:
            commit[tp] = first[tp]
    return Bookkeeping(commit, dict(first))


def lanes(records: Sequence[RecordLike], count: int) -> list[list[RecordLike]]:
    """``records`` split into at most ``count`` lanes by key, each keeping their order: all
    records of one key (one batch) are in the same lane."""
    if count <= 1:
        return [list(records)]
    split: list[list[RecordLike]] = [[] for _ in range(count)]
    for record in records:
        split[zlib.crc32(record.key or b"") % count].append(record)
    return [lane for lane in split if lane]


class InboundConsumer:
    """Consumes records, hands each to ``handler`` and commits offsets after the work.

    ``dead_letters`` parks poison records; ``on_handled`` is called after each successful
    unit of work (the service uses it to wake the relay). ``consumer_factory`` builds the
    underlying aiokafka consumer (tests and embedders may pass their own). ``metrics``
    counts what each unit of work did and exports the consumer lag (:meth:`lag`).
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
        metrics: ServiceMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self._clock = metrics.clock if metrics is not None else time.monotonic
        self._lag: dict[tuple[str, int], int] = {}
        if metrics is not None:
            metrics.watch_lag(self.lag)
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
        self._parked: set[tuple[str, int, int]] = set()
        """Positions dead-lettered that no commit covers yet: a record of one may come again
        (another lane kept its partition's commit behind it, and a rebalance may hand the
        partition back) and is not dead-lettered twice."""
        self._miskeyed_topics: set[str] = set()  # warned of once each (see _check_key)
        self._failures = 0
        self._yielding = False
        self._consumer: ConsumerLike | None = None
        self._due: dict[TopicPartition, int] = {}
        self._committing: asyncio.Task[None] | None = None
        self._closing: asyncio.Future[None] | None = None
        self._topic_order = settings.kafka_topics()
        self.ready = asyncio.Event()
        """Set once partitions have been assigned for the first time."""

    # -- rebalance hooks -------------------------------------------------------------------
    async def partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        parts = list(revoked)
        self._yielding = True  # the sequence in flight stops after its current unit of work...
        try:
            async with self._lock:  # ...and commits its progress before the partitions move
                await self._committed()
                gone = {(tp.topic, tp.partition) for tp in parts}
                self._unexpected = {k: v for k, v in self._unexpected.items() if (k[0], k[1]) not in gone}
                # Dead-lettered positions are kept: the commit may still sit behind them (another
                # lane was retrying), and a partition handed back resumes from that commit. They
                # are forgotten once a fetch of their partition shows the commit past them.
                for topic, partition in gone:
                    self._lag.pop((self._bare(topic), partition), None)
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
        stopped = asyncio.ensure_future(stop.wait())
        try:
            started = await start_with_retry(
                consumer.start, "kafka consumer", self.settings.startup_timeout_seconds, stop
            )
            while started and not stop.is_set():
                try:
                    batch = await self._fetch(consumer, stopped)
                except UnicodeDecodeError as exc:  # a record the client cannot read (see below)
                    log.warning("fetch failed: %s", _safe_reason(exc), extra={"consumer": self.name})
                    try:
                        found = await self._undecodable(consumer, stop)
                    except Exception as again:  # a rebalance meanwhile, the broker away...
                        log.warning(
                            "could not find the undecodable record: %s",
                            _safe_reason(again),
                            extra={"consumer": self.name},
                        )
                        found = False
                    if not found:
                        await self._backoff(stop)
                    continue
                except Exception as exc:
                    log.warning("fetch failed: %s", _safe_reason(exc), extra={"consumer": self.name})
                    await self._backoff(stop)
                    continue
                if not batch:
                    continue
                async with self._lock:
                    try:
                        retry = await self._process(consumer, batch, stop)
                    except Exception as exc:  # a bug of this loop: never let it end the consumer
                        log.error(
                            "fetched records could not be processed, fetching them again: %s",
                            _safe_reason(exc),
                            extra={"consumer": self.name},
                            exc_info=exc,
                        )
                        self._seek(consumer, {tp: recs[0].offset for tp, recs in batch.items() if recs})
                        retry = True
                if retry:
                    await self._backoff(stop)
                else:
                    self._failures = 0
        finally:
            stopped.cancel()
            await self._committed()
            self._consumer = None
            with contextlib.suppress(Exception):
                await leave_group(consumer)
            await self._closed(consumer)

    async def _fetch(
        self, consumer: ConsumerLike, stopped: asyncio.Future[Any]
    ) -> Mapping[TopicPartition, Sequence[RecordLike]]:
        """The next records, or none once ``stopped`` is done.

        aiokafka's ``getmany`` waits for the group's new assignment whatever its timeout while
        a rebalance is in progress, and the broker holds a rebalance until every member has
        rejoined (up to the rebalance timeout, minutes): a stop request must not wait for
        that. A fetch given up is cancelled before it takes any record.
        """
        fetching = asyncio.ensure_future(
            consumer.getmany(timeout_ms=self.settings.poll_timeout_ms, max_records=self.settings.max_records)
        )
        try:
            await asyncio.wait([fetching, stopped], return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not fetching.done():
                fetching.cancel()
                await asyncio.wait([fetching])
        if fetching.cancelled():
            return {}
        return fetching.result()

    async def _undecodable(self, consumer: ConsumerLike, stop: asyncio.Event) -> bool:
        """Find and park a record the Kafka client cannot decode; ``True`` once one is parked.

        aiokafka decodes each record's header names as UTF-8 while it hands records out, and a
        record whose names are other bytes (legal on the wire) raises there, in ``getmany``:
        every fetch that reached it failed, so nothing fetched with it was handled, for ever;
        and the records a failed call had already taken from other partitions are passed
        over by the next one (aiokafka moved their positions before the exception). So:
        commit what is due, go back to the committed offsets (the inbox absorbs what comes
        again; a partition with nothing committed goes back to its beginning when the group
        reads from the earliest offset), then read each partition one record at a time,
        handling what reads, up to the one that does not; park it (the letter, empty, names
        its partition and offset: its bytes cannot be read through the client), commit past
        it and go on. The normal fetch resumes after it; another such record is found the
        same way. The lock is held only while records are handled or the letter written, as
        in :meth:`run`: a rebalance meanwhile takes the partitions (the next step raises and
        the search starts again after the back-off).
        """
        await self._committed()
        parts = sorted(consumer.assignment(), key=lambda tp: (tp.topic, tp.partition))
        if not parts:
            return False
        committed = await consumer.seek_to_committed(*parts)
        fresh = [tp for tp in parts if not committed.get(tp)]
        if fresh and self.settings.auto_offset_reset == "earliest":
            await consumer.seek_to_beginning(*fresh)
        for tp in parts:
            expected = await consumer.position(tp)
            read: list[RecordLike] = []
            while not stop.is_set():
                try:
                    got = await consumer.getmany(tp, timeout_ms=self.settings.poll_timeout_ms, max_records=1)
                except UnicodeDecodeError as exc:
                    if read and await self._locked_process(consumer, {tp: read}, stop):
                        return False  # a record before it must be tried again first
                    async with self._lock:
                        return await self._park_undecodable(consumer, tp, expected, exc)
                records = got.get(tp, ())
                if not records:
                    break
                read.append(records[0])
                expected = records[0].offset + 1
                if len(read) >= self.settings.max_records:
                    if await self._locked_process(consumer, {tp: read}, stop):
                        return False
                    read = []
            if read and await self._locked_process(consumer, {tp: read}, stop):
                return False
        return False

    async def _locked_process(
        self,
        consumer: ConsumerLike,
        batch: Mapping[TopicPartition, Sequence[RecordLike]],
        stop: asyncio.Event,
    ) -> bool:
        async with self._lock:
            return await self._process(consumer, batch, stop)

    async def _park_undecodable(
        self, consumer: ConsumerLike, tp: TopicPartition, offset: int, error: UnicodeDecodeError
    ) -> bool:
        """Park the record at ``offset`` of ``tp`` by where it is; ``False`` when the dead
        letter could not be written (the recovery runs again after the back-off)."""
        # Its bytes cannot be read through the client: the letter is empty and says where it is.
        record = ParkedFact(topic=tp.topic, key=None, value=b"", partition=tp.partition, offset=offset)
        reason = InvalidMessageError(
            self._bare(tp.topic), f"the Kafka client cannot decode the record ({_safe_reason(error)})"
        )
        context = {"consumer": self.name, "topic": tp.topic, "partition": tp.partition, "offset": offset}
        if not await self._park(record, reason, context):
            return False
        self.stats.dead_lettered += 1
        if self.metrics is not None:
            self.metrics.dead_lettered(self._bare(tp.topic), type(reason).__name__)
        log.warning("dead-lettered a record the client cannot decode", extra=context)
        self._commit_behind(consumer, {tp: offset + 1})
        self._seek(consumer, {tp: offset + 1})
        return True

    async def _closed(self, consumer: ConsumerLike) -> None:
        """Stop ``consumer``, waiting for at most the group's session timeout.

        aiokafka's ``stop()`` first lets a group join in progress finish, and the broker holds
        a join until every member has rejoined (up to the rebalance timeout, minutes): a
        member told to stop during a rebalance could wait that long. The work is done and
        its offsets committed by now; past the session timeout the group would drop this
        member anyway, so the stop goes on in the background and :meth:`run` returns.
        """
        closing = self._closing = asyncio.ensure_future(consumer.stop())  # kept alive till it ends
        closing.add_done_callback(retrieve_outcome)
        done, _ = await asyncio.wait([closing], timeout=self._patience)
        if not done:
            log.warning(
                "the consumer did not leave its group within %.1fs (a rebalance in progress); "
                "it goes on closing in the background",
                self._patience,
                extra={"consumer": self.name},
            )

    async def _process(
        self,
        consumer: ConsumerLike,
        batch: Mapping[TopicPartition, Sequence[RecordLike]],
        stop: asyncio.Event,
    ) -> bool:
        """Handle one fetch in timestamp order; commit, seek back; ``True`` to back off."""
        merged = merge_by_timestamp(batch, self._topic_order)
        split = lanes(merged, self.settings.lanes)
        outcomes = await asyncio.gather(*(self._sequence(lane, stop) for lane in split))
        retry = any(again for _, again in outcomes)
        book = settle(
            batch, (r for lane, (done, _) in zip(split, outcomes, strict=True) for r in lane[done:])
        )
        self._commit_behind(consumer, book.commit)
        self._seek(consumer, book.seek)
        self._note_lag(consumer, batch, book.seek)
        if self._parked:
            self._forget_parked(batch, book.seek)
        return retry

    def _forget_parked(
        self, batch: Mapping[TopicPartition, Sequence[RecordLike]], unhandled: Mapping[TopicPartition, int]
    ) -> None:
        """Forget the dead-lettered positions of ``batch``'s partitions that will not come
        again: those before the partition's first unhandled record (the commit covers them)."""
        below = {(tp.topic, tp.partition): unhandled.get(tp) for tp in batch}
        kept = set()
        for key in self._parked:
            part = (key[0], key[1])
            if part not in below:
                kept.add(key)  # a partition of another fetch
                continue
            first = below[part]
            if first is not None and key[2] >= first:
                kept.add(key)
        self._parked = kept

    def lag(self) -> dict[tuple[str, int], int]:
        """Records behind the end of each partition, as of its last fetch: the partition's
        high watermark minus the position of its first record not handled yet."""
        return dict(self._lag)

    def _note_lag(
        self,
        consumer: ConsumerLike,
        batch: Mapping[TopicPartition, Sequence[RecordLike]],
        unhandled: Mapping[TopicPartition, int],
    ) -> None:
        highwater = getattr(consumer, "highwater", None)
        if highwater is None:
            return
        for tp, records in batch.items():
            try:
                end = highwater(tp)
            except Exception:  # the partition moved away meanwhile
                continue
            if records and isinstance(end, int):
                position = unhandled.get(tp, records[-1].offset + 1)
                self._lag[(self._bare(tp.topic), tp.partition)] = max(0, end - position)

    async def _sequence(self, records: Sequence[RecordLike], stop: asyncio.Event) -> tuple[int, bool]:
        """Handle ``records`` in order; returns how many (a prefix) are done and whether the
        first record not done must be retried (else the loop was asked to stop)."""
        if self.batch_handler is not None and len(records) > 1 and not self._stopping(stop):
            outcome = await self._batched(records)
            if outcome is not None:
                return outcome
        for index, record in enumerate(records):
            if self._stopping(stop):
                return index, False  # records not handled are fetched again
            if not await self._one(record):
                return index, True
        return len(records), False

    @property
    def _patience(self) -> float:
        """Seconds an offset commit or the consumer's stop may wait on the broker: the
        group's session timeout, past which it would drop this member anyway."""
        return self.settings.session_timeout_ms / 1000

    def _stopping(self, stop: asyncio.Event) -> bool:
        return stop.is_set() or self._yielding

    async def _batched(self, records: Sequence[RecordLike]) -> tuple[int, bool] | None:
        """Handle the records in one unit of work. ``None`` when the unit as a whole failed:
        nothing of it was committed and the caller handles the records one by one, which
        classifies each failure against its own record."""
        assert self.batch_handler is not None
        items = [(self._topic(r), r.value if r.value is not None else b"") for r in records]
        started = self._clock()
        try:
            results = await self.batch_handler(items, [trace_headers(r.headers) for r in records])
            if len(results) != len(items):
                raise RuntimeError(f"the batch handler returned {len(results)} results for {len(items)}")
        except Exception as exc:
            log.info("batched unit of work failed, handling one by one: %s", _safe_reason(exc))
            return None
        if self.metrics is not None:
            self.metrics.unit_of_work(self._clock() - started)
        for index, (record, (topic, _), result) in enumerate(zip(records, items, results, strict=True)):
            self.stats.consumed += 1
            if isinstance(result, Exception):
                if not await self._failed(record, result):
                    return index, True
            else:
                self._done(record, topic, result, started)
        return len(records), False

    def _topic(self, record: RecordLike) -> str:
        return self._bare(record.topic)

    def _bare(self, topic: str) -> str:
        """The contract topic of a Kafka topic (the prefix taken off)."""
        prefix = self.settings.topic_prefix
        if prefix and topic.startswith(prefix):
            topic = topic[len(prefix) :]
        return topic

    async def _one(self, record: RecordLike) -> bool:
        """Handle one record; ``False`` means retry it later (do not commit past it)."""
        self.stats.consumed += 1
        started = self._clock()
        try:
            topic = self._topic(record)
            with attached(record.headers):  # the handler's span continues the record's trace
                handled = await self.handler(topic, record.value if record.value is not None else b"")
        except Exception as exc:
            return await self._failed(record, exc)
        if self.metrics is not None:
            self.metrics.unit_of_work(self._clock() - started)
        self._done(record, topic, handled, started)
        return True

    def _done(self, record: RecordLike, topic: str, handled: Handled, started: float) -> None:
        """Count and log a handled record; the unit of work is committed, so nothing here may
        undo it: a failing log line or hook is logged and otherwise ignored."""
        try:
            if self._unexpected:
                self._unexpected.pop((record.topic, record.partition, record.offset), None)
            self._count(handled)
            self._check_key(record, topic, handled)
            if self.metrics is not None:
                self.metrics.handled(topic, handled, consumed_at=started)
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
                    **_span_fields(handled.span_ids),
                },
            )
            if self.on_handled is not None:
                self.on_handled(record, handled)
        except Exception as exc:
            log.error("after handling a record: %s", _safe_reason(exc), extra=_position(record), exc_info=exc)

    def _check_key(self, record: RecordLike, topic: str, handled: Handled) -> None:
        """Count a record keyed otherwise than by its batch id, and warn once per topic while
        fetches are split into lanes: lanes keep one key's records in order, so a batch whose
        records carry several keys may have them handled out of order (a request decided
        before its batch's provisioning of the same fetch, and denied). A record with no key
        is one of them: it goes to the lane of the empty key."""
        batch_id, key = handled.batch_id, record.key
        if batch_id is None or key == batch_id.encode():
            return
        self.stats.miskeyed += 1
        lanes = self.settings.lanes
        if lanes > 1 and topic not in self._miskeyed_topics:
            self._miskeyed_topics.add(topic)
            log.warning(
                "records of %s are keyed otherwise than by their batch id (batch %s under key %r): "
                "with %d lanes per fetch a batch's records may be handled out of order; key them by "
                "batch id, or set PIPELINE_STATE_KAFKA_PARTITION_CONCURRENCY=1",
                topic,
                batch_id,
                None if key is None else key[:80],
                lanes,
                extra=_position(record),
            )

    def _count(self, handled: Handled) -> None:
        self.stats.handled += 1
        if handled.result == "duplicate":
            self.stats.duplicates += 1
        elif handled.result.startswith("ignored:"):
            self.stats.ignored += 1
        elif handled.result.startswith("deferred:"):
            self.stats.deferred += 1

    async def _failed(self, record: RecordLike, error: Exception) -> bool:
        """Settle a record whose handling raised ``error``: ``True`` when it is done with
        (dead-lettered), ``False`` when it must be retried. Never raises an ``Exception``."""
        try:
            return await self._settle(record, error)
        except Exception as bug:
            self.stats.retries += 1
            log.error(
                "could not settle a failed record, will retry: %s",
                _safe_reason(bug),
                extra=_position(record),
                exc_info=bug,
            )
            return False

    def _classify(self, error: BaseException) -> Verdict:
        try:
            return self.policy.classify(error)
        except Exception:
            return Verdict.UNEXPECTED

    async def _settle(self, record: RecordLike, error: Exception) -> bool:
        position = (record.topic, record.partition, record.offset)
        if position in self._parked:
            # Fetched again after its dead letter was written (another lane held the
            # partition's commit back): done with, not dead-lettered twice.
            log.info("already dead-lettered, not written again", extra=_position(record))
            return True
        verdict = self._classify(error)
        context = _context(record, error)
        if verdict is Verdict.RETRY:
            self.stats.retries += 1
            log.warning("transient failure, will retry: %s", _safe_reason(error), extra=context)
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
                    _safe_reason(error),
                    extra=context,
                    exc_info=error,
                )
                return False
            self._unexpected.pop(key, None)
        if not await self._park(record, error, context):
            return False
        self._parked.add(position)
        self.stats.dead_lettered += 1
        if self.metrics is not None:
            self.metrics.dead_lettered(self._topic(record), type(error).__name__)
        log.warning("dead-lettered: %s", _safe_reason(error), extra=context)
        dead_lettered(self._topic(record), record.headers, error)  # a span in the record's trace
        return True

    async def _park(self, record: RecordLike, error: Exception, context: dict[str, Any]) -> bool:
        """Write the dead letter; ``False`` (retry) only when the broker could not take it
        for a reason that can clear. A letter refused for what it is (too large, headers the
        broker rejects) is replaced by a minimal one: truncated value, no original headers."""
        try:
            await self.dead_letters.send(record, error)
            return True
        except Exception as exc:
            if self._classify(exc) is Verdict.RETRY:
                self.stats.retries += 1
                log.warning(
                    "could not write the dead letter, will retry: %s", _safe_reason(exc), extra=context
                )
                return False
            refused = exc
        log.warning(
            "the dead letter was refused (%s): sending a minimal one", _safe_reason(refused), extra=context
        )
        try:
            await self.dead_letters.send(record, error, minimal=True)
        except Exception as exc:
            self.stats.retries += 1
            log.error("could not write the dead letter, will retry: %s", _safe_reason(exc), extra=context)
            return False
        return True

    def _commit_behind(self, consumer: ConsumerLike, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit ``offsets`` without making the next fetch's work wait for the broker: after
        the commit in flight, together with any offsets that come due meanwhile."""
        if not offsets:
            return
        self._due.update(offsets)
        if self._committing is None or self._committing.done():
            self._committing = asyncio.get_running_loop().create_task(self._commit_due(consumer))

    async def _commit_due(self, consumer: ConsumerLike) -> None:
        while self._due:
            offsets, self._due = self._due, {}
            await self._commit(consumer, offsets)

    async def _committed(self) -> None:
        """Wait until every offset that came due is committed (or its commit failed)."""
        task = self._committing
        if task is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(task)
        self._committing = None

    async def _commit(self, consumer: ConsumerLike, offsets: dict[TopicPartition, int]) -> None:
        """Commit ``offsets``, for at most the group's session timeout.

        aiokafka retries a retriable commit error (and waits for an unknown coordinator)
        without end; a rebalance and the stop wait for the commit in flight, so an unbounded
        commit could keep a member from ever leaving the group or exiting. Past the session
        timeout the group has moved on anyway: the commit counts as failed, and the records
        after the last committed offset come again and are absorbed by the inbox.
        """
        if not offsets:
            return
        try:
            await asyncio.wait_for(consumer.commit(offsets), self._patience)
        except TimeoutError:
            self.stats.commit_failures += 1
            log.warning(
                "offset commit gave up after %.1fs (records may be redelivered)",
                self._patience,
                extra={"consumer": self.name},
            )
            return
        except (CommitFailedError, IllegalStateError, KafkaError) as exc:
            # The work is committed in the store; a redelivery is absorbed by the inbox.
            self.stats.commit_failures += 1
            log.warning("offset commit failed (records may be redelivered): %s", reason_of(exc))
            return
        except Exception as exc:
            self.stats.commit_failures += 1
            log.error(
                "offset commit failed (records may be redelivered): %s", _safe_reason(exc), exc_info=exc
            )
            return
        self.stats.offset_commits += 1

    def _seek(self, consumer: ConsumerLike, positions: Mapping[TopicPartition, int]) -> None:
        for tp, offset in positions.items():
            try:
                consumer.seek(tp, offset)
            except Exception:
                log.info("partition %s moved away before it could be fetched again", _name(tp))

    async def _backoff(self, stop: asyncio.Event) -> None:
        self._failures += 1
        backoff = Backoff(self.settings.retry_base_seconds, self.settings.retry_max_seconds)
        await pause(backoff.delay(self._failures), stop)


def _name(tp: TopicPartition) -> str:
    return f"{tp.topic}[{tp.partition}]"


def _names(parts: Iterable[TopicPartition]) -> str:
    return ",".join(sorted(_name(tp) for tp in parts))


def _span_fields(ids: tuple[str, str] | None) -> dict[str, str]:
    """The ``trace_id`` and ``span_id`` a "handled" line carries: those of the record's own
    span, which has ended by the time the line is written."""
    return {} if ids is None else {"trace_id": ids[0], "span_id": ids[1]}


def _safe_reason(error: BaseException, limit: int = 1000) -> str:
    """:func:`reason_of`, bounded and never raising (``str()`` of an error can fail)."""
    try:
        text = reason_of(error)
    except Exception:
        text = f"{type(error).__name__}: <unprintable>"
    return text if len(text) <= limit else f"{text[:limit]}..."


def _position(record: RecordLike) -> dict[str, Any]:
    try:
        return {"topic": record.topic, "partition": record.partition, "offset": record.offset}
    except Exception:
        return {}


def _text(value: object, limit: int = 200) -> str | None:
    """A log-safe id: ``None`` unless a string, bounded, surrogates escaped."""
    if not isinstance(value, str):
        return None
    text = value[:limit]
    try:
        text.encode()
    except UnicodeError:
        text = text.encode("utf-8", "backslashreplace").decode()
    return text


def _context(record: RecordLike, error: BaseException) -> dict[str, Any]:
    """Log fields of a failed record: where it came from and, when readable, its ids.

    Never raises: the record is only decoded again when it is small, within the intake
    limits, and any failure just leaves the ids out.
    """
    context: dict[str, Any] = {**_position(record), "error_type": type(error).__name__}
    batch_id = _text(getattr(error, "batch_id", None))
    try:
        value = record.value
        envelope = (
            decode_json(record.topic, value)
            if value is not None and len(value) <= CONTEXT_MAX_BYTES
            else None
        )
    except Exception:
        envelope = None
    if isinstance(envelope, dict):
        context["event_id"] = _text(envelope.get("event_id"))
        context["correlation_id"] = _text(envelope.get("correlation_id"))
        data = envelope.get("data")
        if batch_id is None and isinstance(data, dict):
            batch_id = _text(data.get("batch_id"))
    context["batch_id"] = batch_id
    return context
