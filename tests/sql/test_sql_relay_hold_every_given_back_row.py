"""Every row a relay gives back to the claim holds its key, not only the one that was held
back. Was a defect (found by a review of the fix in test_sql_relay_hold_after_give_back.py):
the key's newer handed rows given back with it (``_give_back_key``, after a failure, a
held-back row or a lapsed lease) put no hold of their own; once the first row went out
here, the hold ended while they still waited in the claim, and a row a commit wrote while
they still read as leased to this relay was handed over and published ahead of them.

The interleaving is forced as in tests/sql/test_sql_relay_hold_after_give_back.py: a
commit's hand-off lands after the relay's concurrent passes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipeline_state import ManualClock, OutboxRelay
from pipeline_state.ports import Change, OutboxRow
from pipeline_state.testing import T0, message

from .test_sql_relay_given_back_order import Transport


async def test_rows_given_back_with_the_held_row_keep_their_key_held(make_store: Any) -> None:
    """docs/guarantees.md: the relay never publishes a row while an older row with the same
    key is unpublished (a parked row aside). Relay A holds ``k`` behind a failed ``p1``; its
    handed ``k2`` and ``k2b`` are given back together when ``p1`` goes out; ``k2`` goes out
    (claimed by A): A's hold ends although ``k2b`` is still pending. Relay B claims ``k2b``
    and its first attempt fails (it backs off). ``k3``, written while ``k2b`` still read as
    A's, is handed to A and published at once, ahead of ``k2b``. Expected: p1, k2, k2b, k3."""
    store_a, store_b = await make_store(), await make_store()
    clock = ManualClock(T0)
    transport = Transport()
    relay_a = OutboxRelay(store_a, transport, clock, base_backoff=0.5, max_attempts=100)
    relay_b = OutboxRelay(store_b, transport, clock, base_backoff=0.5, max_attempts=100)
    deferred: list[tuple[Sequence[OutboxRow], bool]] = []
    defer = False

    def hand_off(rows: Sequence[OutboxRow], poll: bool = False) -> None:
        if defer:  # the commit's hand-off lands after the relay's concurrent passes
            deferred.append((rows, poll))
        else:
            relay_a.hand_off(rows, poll)

    def deliver() -> None:
        for rows, poll in deferred:
            relay_a.hand_off(rows, poll)
        deferred.clear()

    store_a.attach_relay(hand_off, clock, accepting=relay_a.accepting)

    async def commit(tag: str, event_id: str) -> None:
        change = Change(f"b-{tag}", None, None, clock.now(), outbox=(message(event_id, "k"),))
        await store_a.commit(change)

    transport.failing.add("p1")
    await commit("1", "p1")
    defer = True
    await commit("2", "k2")  # p1 is under A's lease: k2 and k2b are handed (after the pass)
    await commit("2b", "k2b")
    defer = False
    await relay_a.run_once(claim=False)  # p1 fails: A holds k
    deliver()
    assert relay_a.handed == 2

    defer = True
    await commit("3", "k3")  # k2b is under A's lease: k3 is handed (after the passes below)
    defer = False
    transport.failing.clear()
    clock.advance(1)
    await relay_a.run_once()  # p1 goes out (claimed); k2 held back, given back with k2b
    await relay_a.run_once()  # k2 goes out (claimed): A's hold on k ends
    transport.failing.add("k2b")
    await relay_b.run_once()  # B claims k2b; it fails and backs off
    transport.failing.clear()
    deliver()
    await relay_a.run_once()  # k3: not before k2b

    for _ in range(20):
        clock.advance(5)
        await relay_b.run_once()
        await relay_a.run_once()
    assert await store_a.pending_count() == 0
    first = list(dict.fromkeys(transport.sent))
    assert first == ["p1", "k2", "k2b", "k3"], transport.sent


async def test_rows_given_back_behind_a_failed_row_keep_their_key_held(make_store: Any) -> None:
    """The same gap after a failure: ``p1`` fails at A and the handed ``k2`` behind it is
    given back in the same pass (``_give_back_key``), holding nothing itself. ``k3`` was
    written while ``k2`` still read as A's. ``p1`` goes out (claimed by A): the hold ends
    with it although ``k2`` is pending; B claims ``k2`` and fails once; A publishes ``k3``
    from memory ahead of ``k2``. Expected: p1, k2, k3."""
    store_a, store_b = await make_store(), await make_store()
    clock = ManualClock(T0)
    transport = Transport()
    relay_a = OutboxRelay(store_a, transport, clock, base_backoff=0.5, max_attempts=100)
    relay_b = OutboxRelay(store_b, transport, clock, base_backoff=0.5, max_attempts=100)
    deferred: list[tuple[Sequence[OutboxRow], bool]] = []
    defer = False

    def hand_off(rows: Sequence[OutboxRow], poll: bool = False) -> None:
        if defer:
            deferred.append((rows, poll))
        else:
            relay_a.hand_off(rows, poll)

    def deliver() -> None:
        for rows, poll in deferred:
            relay_a.hand_off(rows, poll)
        deferred.clear()

    store_a.attach_relay(hand_off, clock, accepting=relay_a.accepting)

    async def commit(tag: str, event_id: str) -> None:
        change = Change(f"b-{tag}", None, None, clock.now(), outbox=(message(event_id, "k"),))
        await store_a.commit(change)

    transport.failing.add("p1")
    await commit("1", "p1")
    await commit("2", "k2")  # p1 is under A's lease: k2 is handed, queued behind p1
    assert relay_a.handed == 2
    defer = True
    await commit("3", "k3")  # k2 is under A's lease: k3 is handed (after the passes below)
    defer = False
    await relay_a.run_once(claim=False)  # p1 fails: k2 given back, A holds k
    transport.failing.clear()
    clock.advance(1)
    await relay_a.run_once()  # p1 goes out (claimed): A's hold on k ends
    transport.failing.add("k2")
    await relay_b.run_once()  # B claims k2; it fails and backs off
    transport.failing.clear()
    deliver()
    await relay_a.run_once()  # k3: not before k2

    for _ in range(20):
        clock.advance(5)
        await relay_b.run_once()
        await relay_a.run_once()
    assert await store_a.pending_count() == 0
    first = list(dict.fromkeys(transport.sent))
    assert first == ["p1", "k2", "k3"], transport.sent
