"""Hand-off: rows a commit wrote go to the relay of the same process in memory, already
leased to it, and are published with no claim statement (issue 16). Against a real SQLite
file and PostgreSQL: statements counted, a crash between commit and publish, per-key order
behind an older failing row, several rows of one key in one pass."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from pipeline_state_service.relay_runner import RelayRunner
from pipeline_state_sql import SqlStore

from pipeline_state import InMemoryStore, ManualClock, OutboxRelay
from pipeline_state.errors import PublishError, StoreUnavailableError
from pipeline_state.ports import Change, OutboxMessage, OutboxRow
from pipeline_state.testing import T0, make_state, message

from .conftest import statements


class Transport:
    """Records each publish call (a wave); fails every message of the topics in ``failing``."""

    def __init__(self, failing: Sequence[str] = ()) -> None:
        self.calls: list[list[str]] = []
        self.failing = set(failing)

    @property
    def published(self) -> list[str]:
        return [e for call in self.calls for e in call]

    async def publish(self, messages: Sequence[OutboxMessage]) -> Sequence[BaseException | None]:
        results: list[BaseException | None] = []
        sent: list[str] = []
        for m in messages:
            if m.topic in self.failing:
                results.append(PublishError(f"broker rejected {m.topic}"))
            else:
                sent.append(m.event_id)
                results.append(None)
        self.calls.append(sent)
        return results


class Inbox:
    """Stands where the relay's hand-off is: keeps what commits hand over."""

    def __init__(self) -> None:
        self.rows: list[OutboxRow] = []
        self.polls = 0

    def __call__(self, rows: Sequence[OutboxRow], poll: bool) -> None:
        self.rows.extend(rows)
        self.polls += int(poll)


async def commit(store: SqlStore, *messages: OutboxMessage, tag: str) -> None:
    await store.commit(Change(f"handoff-{tag}", None, None, T0, outbox=messages))


def attach(store: SqlStore, relay: OutboxRelay) -> None:
    store.attach_relay(relay.hand_off, relay.clock)


async def test_handed_off_rows_are_published_without_a_claim(make_store: Any) -> None:
    store = await make_store()
    transport = Transport()
    relay = OutboxRelay(store, transport, ManualClock(T0))
    attach(store, relay)
    await commit(store, message("a1", "a"), message("b1", "b"), message("a2", "a"), tag="1")
    assert relay.handed == 3
    with statements(store) as sent:
        passes = 0
        while relay.handed:
            await relay.run_once(claim=False, mark=False)
            passes += 1
        await relay.flush_marks()
    assert transport.calls == [["a1", "b1"], ["a2"]]  # a2 only after a1 was acknowledged
    assert passes == 2
    # One statement in all: the rows are marked published together; nothing claimed them.
    assert len(sent) == 1, sent
    assert sent[0].startswith("UPDATE outbox SET published_at"), sent
    assert await store.pending_count() == 0
    assert await store.claim(T0 + timedelta(days=1)) == []


async def test_the_unit_of_work_writes_the_rows_leased_in_its_own_insert(make_store: Any) -> None:
    store = await make_store()
    inbox = Inbox()
    store.attach_relay(inbox, ManualClock(T0))
    with statements(store) as sent:
        await commit(store, message("a1", "a"), message("b1", "b"), tag="1")
    outbox_writes = [s for s in sent if "INSERT INTO outbox" in s or s.startswith("UPDATE outbox")]
    assert len(outbox_writes) == 1, outbox_writes
    assert "UPDATE outbox" not in outbox_writes[0], outbox_writes
    if store.engine.dialect.name == "postgresql":
        # The whole unit of work, its leased outbox rows included, is one statement.
        assert sent == outbox_writes, sent
        assert sent[0].startswith("WITH d AS ("), sent
    else:
        assert outbox_writes[0].startswith("INSERT INTO outbox"), outbox_writes
    assert [r.message.event_id for r in inbox.rows] == ["a1", "b1"]
    assert inbox.polls == 0
    # Leased to this store's relay: another relay's claim does not take them...
    other = await make_store()
    assert await other.claim(T0 + timedelta(seconds=29)) == []


async def test_commit_many_writes_the_rows_leased_in_its_own_statement(make_store: Any) -> None:
    store = await make_store()
    inbox = Inbox()
    store.attach_relay(inbox, ManualClock(T0))
    changes = [
        Change("many-1", None, make_state("many-1"), T0, outbox=(message("m1", "k1"), message("m2", "k2"))),
        Change("many-2", None, make_state("many-2"), T0, outbox=(message("m3", "k1"),)),
    ]
    with statements(store) as sent:
        await store.commit_many(changes)
    assert [r.message.event_id for r in inbox.rows] == ["m1", "m2", "m3"]
    assert [r.id for r in inbox.rows] == sorted(r.id for r in inbox.rows)
    assert inbox.polls == 0
    if store.engine.dialect.name == "postgresql":  # the documents and the leased rows at once
        assert len(sent) == 1, sent
        assert sent[0].startswith("WITH "), sent
    other = await make_store()
    assert await other.claim(T0 + timedelta(seconds=29)) == []  # leased to this store's relay


async def test_a_crash_between_commit_and_publish_is_recovered_after_the_lease(make_store: Any) -> None:
    crashed = await make_store()
    lost = Inbox()  # the process dies before its relay publishes what it was handed
    crashed.attach_relay(lost, ManualClock(T0))
    await commit(crashed, message("m1", "a"), message("m2", "b"), message("m3", "a"), tag="1")
    assert [r.message.event_id for r in lost.rows] == ["m1", "m2", "m3"]

    survivor = await make_store()
    transport = Transport()
    relay = OutboxRelay(survivor, transport, ManualClock(T0 + timedelta(seconds=29)))
    assert (await relay.run_once()).published == 0  # still under the dead process's lease
    relay.clock = ManualClock(T0 + timedelta(seconds=30))
    assert (await relay.drain()).published == 3
    assert transport.published == ["m1", "m2", "m3"]  # the same event ids, key order kept
    assert await survivor.pending_count() == 0


async def test_a_handed_row_never_overtakes_an_older_failing_row_of_its_key(make_store: Any) -> None:
    store = await make_store()
    transport = Transport(failing=["poison"])
    clock = ManualClock(T0)
    relay = OutboxRelay(store, transport, clock, base_backoff=10.0)
    attach(store, relay)
    await commit(store, message("p1", "k", "poison"), message("o1", "other"), tag="1")
    await commit(store, message("k2", "k"), tag="2")  # p1 was under this relay's lease: handed
    assert relay.handed == 3
    report = await relay.run_once(claim=False)
    assert (report.published, report.failed) == (1, 1)
    assert relay.handed == 0  # k2 was waiting for the next wave: given back to the claim
    assert transport.published == ["o1"]

    # Written while p1 backs off (not under a lease): left to the claim, which holds it back.
    await commit(store, message("k3", "k"), tag="3")
    assert relay.handed == 0
    assert relay.claim_due
    assert (await relay.run_once()).published == 0

    transport.failing.clear()
    clock.advance(10)
    await relay.drain()
    assert transport.published == ["o1", "p1", "k2", "k3"]
    assert await store.pending_count() == 0


async def _behind_a_row_of_another_process(make_store: Any) -> tuple[SqlStore, Transport, OutboxRelay]:
    """A store with its relay attached, and a pending row of key ``k`` (``old``) written by
    another process (another store on the database, no relay of ours): not this relay's."""
    other = await make_store()
    await other.commit(Change("handoff-other", None, None, T0, outbox=(message("old", "k"),)))
    store = await make_store()
    transport = Transport()
    relay = OutboxRelay(store, transport, ManualClock(T0))
    attach(store, relay)
    return store, transport, relay


async def test_every_row_of_one_insert_behind_an_older_row_of_its_key_is_left_to_the_claim(
    make_store: Any,
) -> None:
    # Before, on SQLite: the second row of the insert read the first (leased to this relay)
    # as the newest older row of its key, was handed over, and went out before "old".
    store, transport, relay = await _behind_a_row_of_another_process(make_store)
    await commit(store, message("new1", "k"), message("new2", "k"), message("x1", "x"), tag="1")
    assert relay.handed == 1  # x1 only
    await relay.run_once(claim=False)
    assert transport.published == ["x1"]
    await relay.drain()
    assert transport.published == ["x1", "old", "new1", "new2"]


async def test_every_row_of_a_group_commit_behind_an_older_row_of_its_key_is_left_to_the_claim(
    make_store: Any,
) -> None:
    store, transport, relay = await _behind_a_row_of_another_process(make_store)
    await store.commit_many(
        [
            Change("handoff-1", None, None, T0, outbox=(message("new1", "k"),)),
            Change("handoff-2", None, None, T0, outbox=(message("new2", "k"),)),
        ]
    )
    assert relay.handed == 0
    await relay.run_once(claim=False)
    assert transport.published == []
    await relay.drain()
    assert transport.published == ["old", "new1", "new2"]


async def test_rows_behind_a_requeued_row_of_their_key_wait_for_it(make_store: Any) -> None:
    # One process: a republished row is pending again and left to the claim; the rows a
    # later unit of work writes on its key go after it.
    store = await make_store()
    transport = Transport()
    relay = OutboxRelay(store, transport, ManualClock(T0))
    attach(store, relay)
    await commit(store, message("old", "k"), tag="1")
    await relay.drain()
    await store.commit(Change("handoff-1", None, None, T0, republish=("old",)))
    await commit(store, message("new1", "k"), message("new2", "k"), tag="2")
    await relay.run_once(claim=False)
    assert transport.published == ["old"]
    await relay.drain()
    assert transport.published == ["old", "old", "new1", "new2"]


async def test_a_row_handed_late_is_held_back_by_a_row_of_its_key_that_failed(make_store: Any) -> None:
    store = await make_store()
    transport = Transport(failing=["poison"])
    clock = ManualClock(T0)
    relay = OutboxRelay(store, transport, clock, base_backoff=10.0)
    held = Inbox()  # commits hand over here; the test passes the rows on one by one
    store.attach_relay(held, clock)
    await commit(store, message("p1", "k", "poison"), tag="1")
    await commit(store, message("k2", "k"), tag="2")  # committed before p1 failed
    first, second = held.rows
    relay.hand_off([first])
    assert (await relay.run_once(claim=False)).failed == 1
    relay.hand_off([second])  # arrives after the failure
    assert (await relay.run_once(claim=False)).published == 0
    assert transport.published == []
    transport.failing.clear()
    clock.advance(10)
    await relay.drain()
    assert transport.published == ["p1", "k2"]


async def test_several_rows_of_one_key_go_out_wave_after_wave_without_a_claim(make_store: Any) -> None:
    store = await make_store()
    transport = Transport()
    relay = OutboxRelay(store, transport, ManualClock(T0))
    attach(store, relay)
    for i in range(5):
        await commit(store, message(f"t{i}", "teacher-1"), message(f"b{i}", f"batch-{i}"), tag=str(i))
    with statements(store) as sent:
        while relay.handed:
            await relay.run_once(claim=False, mark=False)
        await relay.flush_marks()
    assert [e for e in transport.published if e.startswith("t")] == [f"t{i}" for i in range(5)]
    # One wave per teacher row, every batch row in the first; no claim between the waves.
    assert transport.calls[0] == ["t0", *(f"b{i}" for i in range(5))]
    assert transport.calls[1:] == [[f"t{i}"] for i in range(1, 5)]
    assert len(sent) == 1, sent
    assert await store.pending_count() == 0


async def test_a_transport_that_keeps_key_order_takes_a_key_s_rows_in_one_wave(make_store: Any) -> None:
    store = await make_store()
    transport = Transport()
    relay = OutboxRelay(store, transport, ManualClock(T0), rows_per_key=100)
    attach(store, relay)
    for i in range(5):
        await commit(store, message(f"t{i}", "teacher-1"), message(f"b{i}", f"batch-{i}"), tag=str(i))
    await relay.run_once(claim=False)
    assert transport.calls == [["t0", "b0", "t1", "b1", "t2", "b2", "t3", "b3", "t4", "b4"]]
    assert await store.pending_count() == 0


async def test_rows_without_a_key_and_requeued_rows_are_left_to_the_claim(make_store: Any) -> None:
    store = await make_store()
    inbox = Inbox()
    store.attach_relay(inbox, ManualClock(T0))
    await commit(store, message("n1", None), message("a1", "a"), tag="1")
    assert [r.message.event_id for r in inbox.rows] == ["a1"]
    assert inbox.polls == 1
    assert [r.message.event_id for r in await store.claim(T0)] == ["n1"]


async def test_the_runner_publishes_handed_rows_at_once_and_marks_them_together(make_store: Any) -> None:
    store = await make_store()
    transport = Transport()
    relay = OutboxRelay(store, transport, ManualClock(T0))
    runner = RelayRunner(relay, idle_seconds=60.0, hand_off=True, mark_seconds=2.0)
    store.attach_relay(runner.hand_off, relay.clock)
    stop = asyncio.Event()
    with statements(store) as sent:
        task = asyncio.create_task(runner.run(stop))
        for _ in range(500):  # the first pass claims (nothing is pending yet)
            if any("claimed_until" in s for s in sent):
                break
            await asyncio.sleep(0.01)
        sent.clear()
        for i in range(3):
            await commit(store, message(f"m{i}", f"k{i}"), tag=str(i))
            for _ in range(1000):  # published before the next commit, well before any claim
                if len(transport.published) > i:
                    break
                await asyncio.sleep(0.001)
        assert transport.published == ["m0", "m1", "m2"]
        for _ in range(1000):
            if await store.pending_count() == 0:
                break
            await asyncio.sleep(0.01)
        relay_statements = [s for s in sent if s.startswith("UPDATE outbox")]
        stop.set()
        await task
    # No claim: every relay statement marks rows published (a claim sets a lease).
    assert all(s.startswith("UPDATE outbox SET published_at") for s in relay_statements), relay_statements
    assert len(relay_statements) == 1, relay_statements  # one mark for the three commits
    assert relay_statements[0].startswith("UPDATE outbox SET published_at")
    assert await store.pending_count() == 0


async def test_a_slow_mark_does_not_hold_back_rows_handed_meanwhile(make_store: Any) -> None:
    """The runner marks published rows behind its loop: while one mark waits on the store,
    rows handed to the relay are published at once, and marked by the next mark."""
    store = await make_store()
    transport = Transport()
    relay = OutboxRelay(store, transport, ManualClock(T0))
    runner = RelayRunner(relay, idle_seconds=60.0, hand_off=True, mark_seconds=0.0)
    store.attach_relay(runner.hand_off, relay.clock)
    gate = asyncio.Event()
    marks: list[list[int]] = []
    mark_published = store.mark_published

    async def slow_mark(ids: Sequence[int], now: Any) -> None:
        marks.append(list(ids))
        await gate.wait()  # the store is slow to answer this mark
        await mark_published(ids, now)

    store.mark_published = slow_mark
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        await commit(store, message("m0", "k0"), tag="0")
        assert await _within(lambda: bool(marks))  # m0 published, its mark waits at the gate
        await commit(store, message("m1", "k1"), tag="1")
        assert await _within(lambda: "m1" in transport.published)
        assert len(marks) == 1  # the first mark still waits
        gate.set()
        assert await _within(lambda: len(marks) == 2)
        for _ in range(500):
            if not await store.pending_count():
                break
            await asyncio.sleep(0.01)
    finally:
        gate.set()
        stop.set()
        await task
    assert transport.published == ["m0", "m1"]
    assert len(marks) == 2  # m1 was marked by a second mark, not lost
    assert await store.pending_count() == 0


async def _within(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    """Whether ``condition`` holds within ``seconds`` (polled every millisecond)."""
    for _ in range(int(seconds * 1000)):
        if condition():
            return True
        await asyncio.sleep(0.001)
    return condition()


async def _drains_one_key(store: Any, *, hand_off: bool, name: str = "n") -> list[str]:
    """What a runner with a long idle period publishes of 30 rows of one key within a few
    seconds (its first pass claims; every row after the first waits behind the one before)."""
    transport = Transport()
    relay = OutboxRelay(store, transport, ManualClock(T0))
    runner = RelayRunner(relay, idle_seconds=60.0, hand_off=hand_off, mark_seconds=0.0)
    if hand_off:
        store.attach_relay(runner.hand_off, relay.clock)
    for i in range(3):  # the backlog: rows of one key from three units of work
        await commit(store, *(message(f"{name}{i}-{j}", "teacher-1") for j in range(10)), tag=f"{name}{i}")
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        await _within(lambda: len(transport.published) >= 30)
        published = list(transport.published)  # not what the flush at the stop sends
    finally:
        stop.set()
        await task
    return published


async def test_a_backlog_on_one_key_drains_without_waiting_for_the_idle_period(make_store: Any) -> None:
    """A claim hands out one row per key; the runner claims again at once while claims
    publish, instead of one row of the key per idle period (60 s here)."""
    for hand_off in (True, False):  # handed rows, and rows left to the claim
        name = "h" if hand_off else "c"
        published = await _drains_one_key(await make_store(), hand_off=hand_off, name=name)
        assert published == [f"{name}{i}-{j}" for i in range(3) for j in range(10)], hand_off


async def test_a_backlog_on_one_key_drains_on_the_memory_store_too() -> None:
    published = await _drains_one_key(InMemoryStore(), hand_off=False)
    assert published == [f"n{i}-{j}" for i in range(3) for j in range(10)]


async def test_a_failing_mark_is_retried_after_the_wait_not_at_once(make_store: Any) -> None:
    """A mark running behind the loop that fails (the store is down) does not wake the loop:
    it is tried again after the loop's wait, not in a tight loop against the store."""
    store = await make_store()
    transport = Transport()
    relay = OutboxRelay(store, transport, ManualClock(T0))
    runner = RelayRunner(relay, idle_seconds=0.2, hand_off=True, mark_seconds=0.0)
    store.attach_relay(runner.hand_off, relay.clock)
    marks = 0

    async def failing_mark(ids: Sequence[int], now: Any) -> None:
        nonlocal marks
        marks += 1
        raise StoreUnavailableError("the outbox is unreachable")

    store.mark_published = failing_mark
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        await commit(store, message("f1", "k1"), tag="f1")
        assert await _within(lambda: transport.published == ["f1"])
        await asyncio.sleep(0.5)  # about two of the loop's waits
    finally:
        stop.set()
        await task
    assert 1 <= marks <= 6, marks  # once per wait, and once more when stopping
    assert relay.unmarked == 1  # kept, to be marked when the store is back
