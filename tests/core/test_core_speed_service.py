"""Issue 12.5: the in-memory delivery path made cheaper, with the same behaviour.

Regression tests for what the speed work changed around ``decide``: the bus is counted
instead of copied, the relay makes no empty pass, the store keeps its inbox and log rows
compactly and indexes waiting facts by batch. No timing here: only what each must still do.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from core_flow import Flow, new_id

from pipeline_state import InMemoryBus, InMemoryStore, ManualClock, OutboxRelay
from pipeline_state.ports import Change, InboxEntry, OutboxMessage, OutboxRow, TransitionRecord, WaitingFact


def _message(key: str, topic: str = "test.topic") -> OutboxMessage:
    event_id = new_id()
    return OutboxMessage(event_id, topic, key, {"event_id": event_id})


class _CountingOutbox:
    """An in-memory outbox that counts the claims made on it."""

    def __init__(self, store: InMemoryStore) -> None:
        self.store = store
        self.claims = 0

    async def claim(self, now: datetime, limit: int = 100) -> list[OutboxRow]:
        self.claims += 1
        return await self.store.claim(now, limit)

    async def mark_published(self, row_ids: Sequence[int], now: datetime) -> None:
        await self.store.mark_published(row_ids, now)

    async def mark_failed(
        self, row_id: int, error: str, now: datetime, *, retry_at: datetime, park: bool
    ) -> None:
        await self.store.mark_failed(row_id, error, now, retry_at=retry_at, park=park)

    async def pending_count(self) -> int:
        return await self.store.pending_count()

    async def parked(self, limit: int = 100) -> list[OutboxRow]:
        return await self.store.parked(limit)


async def _write(store: InMemoryStore, clock: ManualClock, *messages: OutboxMessage) -> None:
    await store.commit(
        Change(batch_id=new_id(), expected_version=None, state=None, at=clock.now(), outbox=messages)
    )


# -- the bus ----------------------------------------------------------------------------------
async def test_bus_counts_and_gives_what_came_after_a_count() -> None:
    bus = InMemoryBus()
    first = [_message("k1", "a"), _message("k2", "b")]
    await bus.publish(first)
    before = bus.count()
    later = [_message("k1", "a"), _message("k3", "b"), _message("k4", "a")]
    await bus.publish(later)

    assert (before, bus.count()) == (2, 5)
    assert bus.messages(since=before) == later
    assert bus.messages("a", since=before) == [later[0], later[2]]
    assert bus.messages() == first + later
    assert bus.messages(since=bus.count()) == []


async def test_runtime_returns_the_resent_command_however_long_the_bus_log(flow: Flow) -> None:
    for n in range(5):  # messages on the bus before the one that matters
        await flow.ready(f"other-{n}")
    await flow.ready("b1")
    started = await flow.start("b1", "nlp")
    (command,) = [m for m in started.out if m["key"] == "b1" and "command" in m["topic"]]
    flow.rt.clock.advance(24 * 3600)

    out = await flow.rt.expire_overdue()

    assert [m["value"]["event_id"] for m in out] == [command["value"]["event_id"]]
    assert out[0]["value"] == command["value"]


# -- the relay --------------------------------------------------------------------------------
async def test_drain_makes_no_empty_pass_once_everything_went_out() -> None:
    store, bus, clock = InMemoryStore(), InMemoryBus(), ManualClock()
    outbox = _CountingOutbox(store)
    relay = OutboxRelay(outbox, bus, clock)
    await _write(store, clock, _message("k1"), _message("k2"), _message("k3"))

    report = await relay.drain()

    assert (report.published, report.failed, report.parked) == (3, 0, 0)
    assert outbox.claims == 1
    assert (await relay.drain()).idle
    assert outbox.claims == 2


async def test_drain_passes_again_while_a_key_holds_rows_back() -> None:
    store, bus, clock = InMemoryStore(), InMemoryBus(), ManualClock()
    outbox = _CountingOutbox(store)
    relay = OutboxRelay(outbox, bus, clock)
    messages = [_message("k1"), _message("k1"), _message("k2")]
    await _write(store, clock, *messages)

    report = await relay.drain()

    assert report.published == 3
    assert outbox.claims == 2  # k1's second row waits for its first
    assert [m.event_id for m in bus.messages()] == [
        messages[0].event_id,
        messages[2].event_id,
        messages[1].event_id,
    ]
    assert await store.pending_count() == 0


async def test_drain_stops_after_a_pass_that_published_nothing() -> None:
    store, bus, clock = InMemoryStore(), InMemoryBus(), ManualClock()
    outbox = _CountingOutbox(store)
    relay = OutboxRelay(outbox, bus, clock, max_attempts=10)
    await _write(store, clock, _message("k1"))
    bus.available = False

    report = await relay.drain()

    assert (report.published, report.failed, report.parked) == (0, 1, 0)
    assert outbox.claims == 1
    assert await store.pending_count() == 1


# -- the store --------------------------------------------------------------------------------
async def test_inbox_entries_and_log_rows_read_back_as_committed() -> None:
    store, clock = InMemoryStore(), ManualClock()
    now = clock.now()
    entry = InboxEntry("e1", "some.topic", "b1", "applied", now)
    rows = (
        TransitionRecord("b1", "batch", "b1", "start_run", "ready", "processing", "r1", "e1", "c1", now),
        TransitionRecord(
            "b1", "phase", "nlp", "dispatch", "pending", "sent", "r1", "e1", "c1", now, note="x"
        ),
    )
    await store.commit(
        Change(batch_id="b1", expected_version=None, state=None, at=now, inbox=entry, transitions=rows)
    )

    assert await store.is_processed("e1")
    assert await store.inbox_entry("e1") == entry
    assert await store.inbox_entry("e2") is None
    assert store.transitions("b1") == list(rows)
    assert store.transitions() == list(rows)
    assert store.transitions("b2") == []


def _fact(event_id: str, batch_id: str, waits_for: str, now: datetime) -> WaitingFact:
    return WaitingFact(event_id, "some.topic", batch_id, b"{}", waits_for, now)


async def test_waiting_facts_listed_per_batch_in_arrival_order() -> None:
    store, clock = InMemoryStore(), ManualClock()
    now = clock.now()
    for event_id, batch_id in [("e1", "b1"), ("e2", "b2"), ("e3", "b1"), ("e4", "b2"), ("e5", "b1")]:
        fact = _fact(event_id, batch_id, "batch_registration", now)
        await store.commit(Change(batch_id=batch_id, expected_version=None, state=None, at=now, waiting=fact))

    assert [f.event_id for f in await store.list_waiting("b1")] == ["e1", "e3", "e5"]
    assert [f.event_id for f in await store.list_waiting("b2")] == ["e2", "e4"]
    assert [f.event_id for f in await store.list_waiting("b1", limit=2)] == ["e1", "e3"]
    assert [f.event_id for f in await store.list_waiting()] == ["e1", "e2", "e3", "e4", "e5"]
    assert await store.list_waiting("b3") == []

    # A new reason keeps the fact's place; a resolved fact leaves its batch's list.
    await store.commit(
        Change(batch_id="b1", expected_version=None, state=None, at=now, rewaits=(("e1", "run_start"),))
    )
    inbox = InboxEntry("e3", "some.topic", "b1", "applied", now)
    await store.commit(
        Change(batch_id="b1", expected_version=None, state=None, at=now, inbox=inbox, resolves="e3")
    )
    assert [(f.event_id, f.waits_for) for f in await store.list_waiting("b1")] == [
        ("e1", "run_start"),
        ("e5", "batch_registration"),
    ]
    assert (await store.load_with_waiting("b1"))[1]

    assert await store.forget_waiting(["e2", "e4"], "dead_lettered:batch_registration", now) == 2
    assert (await store.load_with_waiting("b2"))[1] is False
    assert await store.list_waiting("b2") == []
    entry = await store.inbox_entry("e4")
    assert entry is not None
    assert entry.result == "dead_lettered:batch_registration"
    assert await store.count_waiting() == 2
