"""The offset commit goes on behind the next fetch's work (issue 16, completion latency).

A fetch's records are handled, then its offsets are committed: a broker round trip that the
records of the next fetch used to wait for. Now the next fetch is handled while the commit is
in flight; one commit is in flight at a time, offsets that come due meanwhile go together in
the next one, in order, and the stop and a rebalance wait for them - but not for ever: a
commit, or the consumer's own stop, held by the broker ends after the group's session
timeout, and a stop does not wait for a rebalance to assign partitions. The record source is
:class:`intake_kit.LogConsumer` (no broker); its commit refuses an offset that goes
backwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence

import pytest
from intake_kit import FakeRecord, LogConsumer, MemoryProducer, drain
from pipeline_state_kafka import DeadLetterWriter, InboundConsumer
from pipeline_state_kafka._kafka import KafkaError, TopicPartition
from pipeline_state_kafka.consumer import ConsumerSettings
from pipeline_state_kafka.handlers import Handled

TOPIC = "huleedu.essay.spellcheck.completed.v1"


class SlowCommits(LogConsumer):
    """Each offset commit waits until ``release`` is set (at most ``hold`` seconds)."""

    def __init__(self, stop: asyncio.Event, hold: float) -> None:
        super().__init__(stop)
        self.release = asyncio.Event()
        self.started = asyncio.Event()
        self.hold = hold
        self.calls: list[dict[TopicPartition, int]] = []
        self.in_flight = 0

    async def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        self.in_flight += 1
        assert self.in_flight == 1, "two offset commits in flight at once"
        try:
            self.calls.append(dict(offsets or {}))
            self.started.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), self.hold)
            await super().commit(offsets)
        finally:
            self.in_flight -= 1


def _consumer(
    source: LogConsumer, seen: list[bytes], all_seen: asyncio.Event, *, session_timeout_ms: int = 10_000
) -> InboundConsumer:
    async def handler(topic: str, raw: bytes) -> Handled:
        seen.append(raw)
        if len(seen) == len(source.logs[next(iter(source.logs))]):
            all_seen.set()
        return Handled(result="applied")

    return InboundConsumer(
        ConsumerSettings("127.0.0.1:1", max_records=1, session_timeout_ms=session_timeout_ms),
        handler,
        DeadLetterWriter(MemoryProducer()),
        consumer_factory=lambda _s: source,
    )


async def test_kafka_next_fetch_is_handled_while_the_offset_commit_is_in_flight() -> None:
    stop = asyncio.Event()
    source = SlowCommits(stop, hold=5.0)
    for n in range(4):
        source.append(TOPIC, b"r%d" % n, key=b"k%d" % n)
    seen: list[bytes] = []
    handled_during_commit: list[bytes] = []
    all_seen = asyncio.Event()
    consumer = _consumer(source, seen, all_seen)

    async def watch() -> None:
        await source.started.wait()  # the first fetch's commit has started
        await all_seen.wait()
        handled_during_commit.extend(seen[1:])  # handled while that commit still waits
        source.release.set()

    watcher = asyncio.create_task(watch())
    await drain(consumer, source, within=4.0)  # waiting 5 s for each commit would time out
    await watcher
    assert handled_during_commit == [b"r1", b"r2", b"r3"]
    tp = next(iter(source.logs))
    # The first commit carried the first record; the three fetches handled meanwhile went
    # together in the second, and everything is committed by the time the run ends.
    assert source.calls == [{tp: 1}, {tp: 4}]
    assert source.committed == source.ends()


async def test_kafka_a_rebalance_waits_for_the_offset_commit_in_flight() -> None:
    stop = asyncio.Event()
    source = SlowCommits(stop, hold=0.05)
    source.append(TOPIC, b"r0", key=b"k0")
    seen: list[bytes] = []
    consumer = _consumer(source, seen, asyncio.Event())
    revoked_at: list[dict[TopicPartition, int]] = []

    async def stop_after_first_fetch() -> None:
        await source.started.wait()
        await consumer.partitions_revoked(list(source.logs))
        revoked_at.append(dict(source.committed))  # what was committed when the hook returned

    task = asyncio.create_task(stop_after_first_fetch())
    await drain(consumer, source)
    await task
    assert revoked_at == [source.ends()]


class StuckCommits(LogConsumer):
    """An offset commit that never returns (aiokafka retries a retriable error, or waits
    for an unknown coordinator, without end)."""

    async def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        await asyncio.Event().wait()


async def test_kafka_a_commit_that_never_returns_does_not_hold_a_rebalance_or_the_stop() -> None:
    stop = asyncio.Event()
    source = StuckCommits(stop)
    source.append(TOPIC, b"r0", key=b"k0")
    seen: list[bytes] = []
    handled = asyncio.Event()
    consumer = _consumer(source, seen, handled, session_timeout_ms=200)
    revoked = asyncio.Event()

    async def revoke_once_handled() -> None:
        await handled.wait()
        # The commit of the first fetch is in flight and stuck; the rebalance waits for it,
        # but not past the group's session timeout.
        await asyncio.wait_for(consumer.partitions_revoked(list(source.logs)), timeout=2.0)
        revoked.set()

    task = asyncio.create_task(revoke_once_handled())
    await drain(consumer, source, within=3.0)  # the stop waits for the commit likewise
    await task
    assert revoked.is_set()
    assert seen == [b"r0"]
    assert consumer.stats.commit_failures == 1
    assert consumer.stats.offset_commits == 0
    assert source.committed == {}


class StuckStop(LogConsumer):
    """A consumer whose ``stop()`` never returns (aiokafka lets a group join in progress
    finish first, and the broker holds a join until every member has rejoined)."""

    def __init__(self, stop: asyncio.Event) -> None:
        super().__init__(stop)
        self.stopping = False

    async def stop(self) -> None:
        self.stopping = True
        await asyncio.Event().wait()


async def test_kafka_a_consumer_stop_held_by_a_rebalance_does_not_hold_the_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stop = asyncio.Event()
    source = StuckStop(stop)
    source.append(TOPIC, b"r0", key=b"k0")
    seen: list[bytes] = []
    consumer = _consumer(source, seen, asyncio.Event(), session_timeout_ms=200)
    with caplog.at_level(logging.WARNING, logger="pipeline_state_kafka.consumer"):
        await drain(consumer, source, within=2.0)  # waited for the stop without end before
    assert source.stopping
    assert seen == [b"r0"]
    assert source.committed == source.ends()  # the work and its offsets were done first
    assert any("did not leave its group" in r.getMessage() for r in caplog.records)


class HeldByARebalance(LogConsumer):
    """After the first fetch, ``getmany`` waits for an assignment that does not come, as
    aiokafka's does (whatever its timeout) while the broker holds a rebalance."""

    def __init__(self, stop: asyncio.Event) -> None:
        super().__init__(stop)
        self.held = asyncio.Event()

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> Mapping[TopicPartition, Sequence[FakeRecord]]:
        if self.fetches:
            self.held.set()
            await asyncio.Event().wait()
        return await super().getmany(*partitions, timeout_ms=timeout_ms, max_records=max_records)


async def test_kafka_a_stop_during_a_rebalance_does_not_wait_for_the_new_assignment() -> None:
    stop = asyncio.Event()
    source = HeldByARebalance(stop)
    source.append(TOPIC, b"r0", key=b"k0")
    seen: list[bytes] = []
    consumer = _consumer(source, seen, asyncio.Event())
    run = asyncio.create_task(consumer.run(stop))
    await asyncio.wait_for(source.held.wait(), timeout=2.0)  # the first fetch is handled
    stop.set()  # SIGTERM while the group rebalances
    await asyncio.wait_for(run, timeout=2.0)  # waited for the assignment without end before
    assert seen == [b"r0"]
    assert source.committed == source.ends()


class FailsFirstFetch(LogConsumer):
    """The first ``getmany`` fails (the broker went away for a moment)."""

    def __init__(self, stop: asyncio.Event) -> None:
        super().__init__(stop)
        self.failed = False

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> Mapping[TopicPartition, Sequence[FakeRecord]]:
        if not self.failed:
            self.failed = True
            raise KafkaError("the broker went away")
        return await super().getmany(*partitions, timeout_ms=timeout_ms, max_records=max_records)


async def test_kafka_a_failed_fetch_backs_off_and_fetches_again(caplog: pytest.LogCaptureFixture) -> None:
    stop = asyncio.Event()
    source = FailsFirstFetch(stop)
    source.append(TOPIC, b"r0", key=b"k0")
    seen: list[bytes] = []
    consumer = _consumer(source, seen, asyncio.Event())
    with caplog.at_level(logging.WARNING, logger="pipeline_state_kafka.consumer"):
        await drain(consumer, source, within=2.0)
    assert any(r.getMessage().startswith("fetch failed") for r in caplog.records)
    assert seen == [b"r0"]
    assert source.committed == source.ends()
