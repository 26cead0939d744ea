"""The next fetch is handled while the last one's units of work are in flight (issue 16).

A fetch's records go in lanes by key; the records of the next fetch used to wait for every
lane of the last one, whatever their key (the completion latency's "fetch" stage on a
durable store). Now a lane of the next fetch starts as soon as the same lane of the last
one has ended, so a key's records are still handled one after the other, and offsets still
never pass a record that was not handled. The record source is :class:`intake_kit.LogConsumer`
(no broker; its commit refuses an offset that goes backwards).
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Mapping

from intake_kit import LogConsumer, MemoryProducer, drain
from pipeline_state_kafka import DeadLetterWriter, InboundConsumer
from pipeline_state_kafka._kafka import TopicPartition
from pipeline_state_kafka.consumer import ConsumerSettings
from pipeline_state_kafka.handlers import Handled

from pipeline_state.errors import StoreUnavailableError

TOPIC = "huleedu.essay.spellcheck.completed.v1"
A, B = b"a", b"b"  # two keys in different lanes of four
assert zlib.crc32(A) % 4 != zlib.crc32(B) % 4


class WatchedCommits(LogConsumer):
    """Keeps, with each offset commit, the values handled by then."""

    def __init__(self, stop: asyncio.Event, handled: list[bytes]) -> None:
        super().__init__(stop)
        self.handled = handled
        self.commits: list[tuple[dict[TopicPartition, int], list[bytes]]] = []

    async def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        self.commits.append((dict(offsets or {}), list(self.handled)))
        await super().commit(offsets)


def _consumer(source: LogConsumer, handler: object) -> InboundConsumer:
    return InboundConsumer(
        ConsumerSettings("127.0.0.1:1", max_records=2, partition_concurrency=4, retry_base_seconds=0.001),
        handler,  # type: ignore[arg-type]
        DeadLetterWriter(MemoryProducer()),
        consumer_factory=lambda _s: source,
    )


def _log(source: LogConsumer) -> None:
    # Two fetches of two records: r0 (key a), r1 (key b), then r2 (key a), r3 (key b).
    for n, key in enumerate((A, B, A, B)):
        source.append(TOPIC, b"r%d" % n, key=key)


class HeldFirst:
    """A handler whose unit of work for r0 waits until ``release`` is set (a slow commit to
    a busy database); ``last`` is set once r3, the last record, is handled."""

    def __init__(self) -> None:
        self.handled: list[bytes] = []
        self.release = asyncio.Event()
        self.last = asyncio.Event()

    async def __call__(self, topic: str, raw: bytes) -> Handled:
        if raw == b"r0":
            await self.release.wait()
        self.handled.append(raw)
        if raw == b"r3":
            self.last.set()
        return Handled(result="applied")


def _held(stop: asyncio.Event) -> tuple[HeldFirst, WatchedCommits]:
    handler = HeldFirst()
    source = WatchedCommits(stop, handler.handled)
    _log(source)
    return handler, source


async def test_kafka_the_next_fetch_goes_on_for_other_keys_while_a_unit_of_work_is_in_flight() -> None:
    stop = asyncio.Event()
    handler, source = _held(stop)
    handled = handler.handled
    while_held: list[bytes] = []

    async def watch() -> None:
        # Before fetching ahead, r3 waited for r0 whatever its key: this timed out.
        await asyncio.wait_for(handler.last.wait(), timeout=2.0)
        await asyncio.sleep(0.05)  # whatever else would run meanwhile
        while_held.extend(handled)
        handler.release.set()

    watcher = asyncio.create_task(watch())
    await drain(_consumer(source, handler), source, within=5.0)
    await watcher
    # r3 (key b, second fetch) went on while r0 (key a, first fetch) was in flight; r2 (key a,
    # second fetch) waited for r0: one key's records stay in order.
    assert while_held == [b"r1", b"r3"]
    assert handled == [b"r1", b"r3", b"r0", b"r2"]
    tp = next(iter(source.logs))
    assert source.committed == {tp: 4}
    for offsets, seen in source.commits:  # no commit passed r0 before it was handled
        assert offsets[tp] == 0 or b"r0" in seen


async def test_kafka_a_retried_record_holds_its_key_in_the_fetch_ahead_and_its_offset() -> None:
    stop = asyncio.Event()
    handled: list[bytes] = []
    source = WatchedCommits(stop, handled)
    _log(source)
    attempts: list[bytes] = []

    async def handler(topic: str, raw: bytes) -> Handled:
        attempts.append(raw)
        if raw == b"r0" and attempts.count(b"r0") == 1:
            await asyncio.sleep(0.02)  # the second fetch is in flight by now
            raise StoreUnavailableError("the database is restarting")
        handled.append(raw)
        return Handled(result="applied")

    consumer = _consumer(source, handler)
    await drain(consumer, source, within=5.0)
    # r2 (key a) never ran before r0 succeeded; the records of key b that ran ahead of the
    # retry come again after the seek back (the inbox would absorb them).
    assert handled.index(b"r0") < handled.index(b"r2")
    assert b"r2" not in attempts[: attempts.index(b"r0", 1)]
    assert sorted(set(handled)) == [b"r0", b"r1", b"r2", b"r3"]
    tp = next(iter(source.logs))
    assert source.committed == {tp: 4}
    for offsets, seen in source.commits:
        assert offsets[tp] == 0 or b"r0" in seen
    assert consumer.stats.retries == 1
    assert (tp, 0) in source.seeks


async def test_kafka_a_stop_with_two_fetches_in_flight_commits_only_what_was_handled() -> None:
    stop = asyncio.Event()
    handler, source = _held(stop)
    handled = handler.handled
    consumer = _consumer(source, handler)

    async def stop_while_held() -> None:
        await asyncio.wait_for(handler.last.wait(), timeout=2.0)
        stop.set()  # r0 is in flight, r2 waits behind it
        await asyncio.sleep(0.02)
        handler.release.set()

    stopper = asyncio.create_task(stop_while_held())
    await asyncio.wait_for(consumer.run(stop), timeout=5.0)
    await stopper
    # r0 finished (a unit of work in flight ends), r2 never started; the offset stops at r2.
    assert handled == [b"r1", b"r3", b"r0"]
    tp = next(iter(source.logs))
    assert source.committed == {tp: 2}
    assert consumer.in_flight == 0
