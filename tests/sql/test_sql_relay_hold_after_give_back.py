"""A row given back to the claim keeps its key held, even when the older row that held the
key goes out in the same pass. Was a defect (found by looping the multi-instance run of
test_sql_instances_share_one_database.py on PostgreSQL, about one run in a hundred): relay A
held key ``k`` behind a failed row ``p1``; in the next pass ``p1`` went out (claimed again)
and a handed row ``k2`` was held back and given back, but ``p1``'s success ended the hold.
A commit that wrote ``k3`` while ``k2`` still read as leased to A (its release not committed
yet) handed ``k3`` to A, and A published it from memory at once, ahead of ``k2``.

The interleaving is forced: each commit's hand-off is delivered after A's concurrent pass,
as the traced run showed (rows 15, 19, 24 of one batch).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipeline_state import ManualClock, OutboxRelay
from pipeline_state.ports import Change, OutboxRow
from pipeline_state.testing import T0, message

from .test_sql_relay_given_back_order import Transport


async def test_a_row_given_back_holds_its_key_after_the_older_row_went_out(make_store: Any) -> None:
    store_a, store_b = await make_store(), await make_store()
    clock = ManualClock(T0)
    transport = Transport()
    relay_a = OutboxRelay(store_a, transport, clock, base_backoff=0.5, max_attempts=100)
    relay_b = OutboxRelay(store_b, transport, clock, base_backoff=0.5, max_attempts=100)
    deferred: list[tuple[Sequence[OutboxRow], bool]] = []
    defer = False

    def hand_off(rows: Sequence[OutboxRow], poll: bool = False) -> None:
        if defer:  # the commit's hand-off lands after the relay's concurrent pass
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
    await commit("2", "k2")  # p1 is under A's lease: k2 is handed (after the pass below)
    defer = False
    await relay_a.run_once(claim=False)  # p1 fails: A holds k
    deliver()
    assert relay_a.handed == 1

    defer = True
    await commit("3", "k3")  # k2 is under A's lease: k3 is handed (after the pass below)
    defer = False
    transport.failing.clear()
    clock.advance(1)
    await relay_a.run_once()  # p1 goes out (claimed); k2 is held back and given back
    deliver()
    await relay_a.run_once(claim=False)  # k3: not before k2

    for _ in range(20):
        clock.advance(5)
        await relay_b.run_once()
        await relay_a.run_once()
    assert await store_a.pending_count() == 0
    first = list(dict.fromkeys(transport.sent))
    assert first == ["p1", "k2", "k3"], transport.sent
