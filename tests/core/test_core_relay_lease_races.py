"""The outbox relay over the in-memory store, with publishers that fail in
controlled ways: raise on the Nth call, answer a batch partly, hang until cancelled, or
succeed while the relay "dies" before it marks.

Held: every committed row goes out at least once, in order per key, with its event id;
rows park after ``max_attempts`` failures and an operator's ``RepublishOutbox`` delivers
them again (same event id, once); a crash between publish and mark re-publishes the same
event id after the lease; pending/parked counts and the oldest age are right.

Were defects (fixed): a relay whose lease ran out during a slow publish records its failure on a row
another relay holds (memory store: ``KeyError`` out of the relay when that row was published
meanwhile; any store: the other relay's lease is dropped, so a third claim takes the row
while that lease is still held).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta

import pytest

from pipeline_state import InMemoryStore, ManualClock, OutboxRelay, PipelineService
from pipeline_state._commands import Command, RepublishOutbox
from pipeline_state.errors import PublishError
from pipeline_state.ports import Change, OutboxMessage
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from pipeline_state.testing import T0, message
from tests.relay_kit import Scripted, first_order, relay_logs_off


@pytest.fixture(autouse=True)
def _quiet_relay() -> Iterator[None]:
    with relay_logs_off():
        yield


@pytest.mark.parametrize("seed", range(8))
async def test_nth_call_and_partial_failures_publish_every_row_in_key_order(seed: int) -> None:
    rng = random.Random(seed)
    store, clock = InMemoryStore(), ManualClock(T0)
    written: list[OutboxMessage] = []
    for i in range(40):
        m = message(f"e{i:03d}", f"k{rng.randrange(5)}")
        written.append(m)
        await store.commit(Change(f"w{i}", None, None, T0, outbox=(m,)))
    publisher = Scripted(raise_on=range(1, 60, 3), fail_rate=0.3, seed=seed)
    relay = OutboxRelay(store, publisher, clock, batch_size=7, max_attempts=1000, max_backoff=1.0)
    for _ in range(2000):
        await relay.run_once()
        clock.advance(2)
        if not await store.pending_count():
            break
    assert await store.pending_count() == 0
    assert {m.event_id for m in publisher.sent} == {m.event_id for m in written}
    expected: dict[str | None, list[str]] = {}
    for m in written:
        expected.setdefault(m.key, []).append(m.event_id)
    assert first_order(publisher.sent) == expected


async def test_rows_park_after_max_attempts_and_operator_republish_delivers_them_once() -> None:
    clock = ManualClock(T0)
    store = InMemoryStore()
    service, env = PipelineService(store, clock=clock), HuleEduEnvelopes()
    await service.handle_message(*env.register("b1", items=1))
    await service.handle_message(*env.provisioned("b1", env.item_ids("b1", 1)))
    down = Scripted(fail_all=True)
    relay = OutboxRelay(store, down, clock, max_attempts=3, base_backoff=1, max_backoff=4)
    pending = await store.pending_count()
    assert pending >= 1
    for attempt in range(3):
        report = await relay.run_once()
        assert report.failed >= 1
        assert (report.parked > 0) == (attempt == 2), (attempt, report)
        clock.advance(10)
    parked = await store.parked()
    assert len(parked) == pending
    assert all(r.attempts == 3 and r.last_error for r in parked)
    assert await store.outbox_backlog() == (0, None, pending)
    clock.advance(3600)
    assert (await relay.run_once()).idle
    assert down.calls == 3  # parked rows are not tried again

    ids = tuple(r.message.event_id for r in parked)
    command = Command(RepublishOutbox("b1", ids), "rp-1", "c", requested_by="ops")
    assert (await service.handle(command, topic="operator.x")).label == "applied"
    assert await store.outbox_backlog() == (pending, parked[0].created_at, 0)
    up = Scripted()
    relay.publisher = up
    await relay.drain()
    assert [m.event_id for m in up.sent] == list(ids)
    again = Command(RepublishOutbox("b1", ids), "rp-2", "c", requested_by="ops")
    await service.handle(again, topic="operator.x")
    await relay.drain()
    assert [m.event_id for m in up.sent] == list(ids)  # not parked any more: nothing twice
    assert await store.outbox_backlog() == (0, None, 0)


async def test_a_crash_between_publish_and_mark_republishes_the_same_event_id() -> None:
    store, clock = InMemoryStore(lease_seconds=30), ManualClock(T0)
    await store.commit(Change("w", None, None, T0, outbox=(message("e1", "k"), message("e2", "j"))))
    seen: list[str] = []

    class DiesAfterPublish:
        async def publish(self, messages: Sequence[OutboxMessage]) -> Sequence[BaseException | None]:
            seen.extend(m.event_id for m in messages)
            asyncio.current_task().cancel()  # type: ignore[union-attr]  # the process dies now
            return [None] * len(messages)

    class RoundTrip:  # the store behind a network round trip: the mark can be cut short
        def __getattr__(self, name: str) -> object:
            return getattr(store, name)

        async def mark_published(self, row_ids: Sequence[int], now: datetime) -> None:
            await asyncio.sleep(0)
            await store.mark_published(row_ids, now)

    with pytest.raises(asyncio.CancelledError):
        await asyncio.create_task(OutboxRelay(RoundTrip(), DiesAfterPublish(), clock).run_once())  # type: ignore[arg-type]
    assert seen == ["e1", "e2"]
    assert await store.pending_count() == 2
    survivor = Scripted()
    relay = OutboxRelay(store, survivor, clock)
    assert (await relay.run_once()).idle  # leased to the dead relay
    clock.advance(31)
    await relay.drain()
    assert [m.event_id for m in survivor.sent] == ["e1", "e2"]
    assert await store.pending_count() == 0


async def test_a_hanging_publish_cancelled_leaves_its_rows_to_the_next_relay() -> None:
    store, clock = InMemoryStore(lease_seconds=30), ManualClock(T0)
    await store.commit(Change("w", None, None, T0, outbox=(message("e1", "k"), message("e2", "k"))))
    hang = Scripted(gate=asyncio.Event())
    task = asyncio.create_task(OutboxRelay(store, hang, clock).run_once())
    await hang.entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    other = Scripted()
    relay = OutboxRelay(store, other, clock)
    clock.advance(31)
    await relay.drain()
    assert [m.event_id for m in other.sent] == ["e1", "e2"]


async def test_pending_parked_and_oldest_age_follow_the_rows() -> None:
    store, clock = InMemoryStore(), ManualClock(T0)
    await store.commit(Change("a", None, None, T0, outbox=(message("a1", "a"),)))
    later = T0 + timedelta(minutes=5)
    await store.commit(Change("b", None, None, later, outbox=(message("b1", "b"), message("b2", "b"))))
    assert await store.outbox_backlog() == (3, T0, 0)
    relay = OutboxRelay(store, Scripted(fail_all=True), clock, max_attempts=1)
    await relay.run_once()  # a1 and b1 park
    assert await store.outbox_backlog() == (1, later, 2)
    assert await store.pending_count() == 1
    assert sorted(r.message.event_id for r in await store.parked()) == ["a1", "b1"]
    relay.publisher = Scripted()
    await relay.drain()
    assert await store.outbox_backlog() == (0, None, 2)


async def test_a_late_failure_on_a_row_another_relay_published_does_not_crash_the_relay() -> None:
    """Relay A's publish hangs past its lease; relay B claims the row and publishes it; then
    A's publish fails. A records the failure: the memory store raises ``KeyError`` (the row
    was dropped when published) out of ``run_once``, which neither ``OutboxRelay.run`` nor
    ``RelayRunner`` catches, so the relay task dies. The SQL store ignores such a mark."""
    store, clock = InMemoryStore(lease_seconds=30), ManualClock(T0)
    await store.commit(Change("w", None, None, T0, outbox=(message("e1", "k"),)))
    gate = asyncio.Event()
    slow = Scripted(gate=gate, fail_all=True)
    a = asyncio.create_task(OutboxRelay(store, slow, clock).run_once())
    await slow.entered.wait()
    clock.advance(31)  # A's lease is over: B claims and publishes the row
    assert (await OutboxRelay(store, Scripted(), clock).run_once()).published == 1
    gate.set()  # A's publish now fails
    report = await a  # was: KeyError from InMemoryStore.mark_failed
    assert report.failed == 1
    assert await store.pending_count() == 0


async def test_a_late_failure_leaves_the_lease_of_a_row_another_relay_holds() -> None:
    """Relay A's publish hangs past its lease; relay B claims the row (a fresh lease) and is
    publishing it; A's publish then fails and A's ``mark_failed`` drops B's lease: once A's
    short back-off passes, a claim takes the row again while B's lease still runs."""
    store, clock = InMemoryStore(lease_seconds=30), ManualClock(T0)
    await store.commit(Change("w", None, None, T0, outbox=(message("e1", "k"),)))
    a_gate, b_gate = asyncio.Event(), asyncio.Event()
    a_pub = Scripted(gate=a_gate, fail_all=True)
    b_pub = Scripted(gate=b_gate)
    a = asyncio.create_task(OutboxRelay(store, a_pub, clock).run_once())
    await a_pub.entered.wait()
    clock.advance(31)  # A's lease is over
    b = asyncio.create_task(OutboxRelay(store, b_pub, clock).run_once())
    await b_pub.entered.wait()  # B holds the row until T0 + 61 s and is publishing it
    a_gate.set()
    assert (await a).failed == 1
    clock.advance(1)  # past A's back-off (0.5 s); B's lease has 29 s left
    stolen = await store.claim(clock.now(), 10)
    b_gate.set()
    await b
    assert [r.message.event_id for r in stolen] == [], "claimed while another relay's lease is held"


class _OutlastsTheLease:
    """A transport whose every send outlasts the lease, then fails."""

    def __init__(self, clock: ManualClock, seconds: float) -> None:
        self.clock, self.seconds, self.calls = clock, seconds, 0

    async def publish(self, messages: Sequence[OutboxMessage]) -> Sequence[BaseException | None]:
        self.calls += 1
        self.clock.advance(self.seconds)
        raise PublishError("timed out")


async def test_a_row_whose_every_publish_outlasts_the_lease_still_parks() -> None:
    """Nobody else claimed the row: each failure is counted under the lease the relay held,
    though it ended, so the row backs off and parks after ``max_attempts``. Was a defect
    (of this session's lease check, found by a review): such a failure was not recorded, so
    the row was tried again at once for ever and held its key back."""
    store, clock = InMemoryStore(lease_seconds=5), ManualClock(T0)
    await store.commit(Change("w", None, None, T0, outbox=(message("e1", "k"),)))
    transport = _OutlastsTheLease(clock, 6)
    relay = OutboxRelay(store, transport, clock, max_attempts=3)
    for _ in range(10):
        await relay.run_once()
        clock.advance(120)  # past any back-off
    [parked] = await store.parked()
    assert parked.attempts == 3
    assert transport.calls == 3
