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

from typing import Any

from tests.relay_kit import RaceRig


async def test_rows_given_back_with_the_held_row_keep_their_key_held(make_store: Any) -> None:
    """docs/guarantees.md: the relay never publishes a row while an older row with the same
    key is unpublished (a parked row aside). Relay A holds ``k`` behind a failed ``p1``; its
    handed ``k2`` and ``k2b`` are given back together when ``p1`` goes out; ``k2`` goes out
    (claimed by A). Relay B claims ``k2b`` and its first attempt fails (it backs off).
    ``k3``, written while ``k2b`` still read as A's, is handed to A: not published ahead of
    ``k2b``."""
    rig = RaceRig(await make_store(), await make_store())
    transport, relay_a = rig.transport, rig.relay_a
    transport.failing.add("p1")
    await rig.commit("1", "p1")
    await rig.commit("2", "k2", deferred=True)  # p1 is under A's lease: handed (after the pass)
    await rig.commit("2b", "k2b", deferred=True)
    await relay_a.run_once(claim=False)  # p1 fails: A holds k
    rig.deliver()
    assert relay_a.handed == 2

    await rig.commit("3", "k3", deferred=True)  # k2b is under A's lease: k3 is handed (after the passes)
    transport.failing.clear()
    rig.clock.advance(1)
    await relay_a.run_once()  # p1 goes out (claimed); k2 held back, given back with k2b
    await relay_a.run_once()  # k2 goes out (claimed)
    await _b_fails_then_a_takes_its_handed_rows(rig, "k2b")  # k3: not before k2b
    assert transport.first() == ["p1", "k2", "k2b", "k3"], transport.sent


async def test_rows_given_back_behind_a_failed_row_keep_their_key_held(make_store: Any) -> None:
    """The same after a failure: ``p1`` fails at A and the handed ``k2`` behind it is given
    back in the same pass (``_give_back_key``). ``k3`` was written while ``k2`` still read as
    A's. ``p1`` goes out (claimed by A); B claims ``k2`` and fails once; A must not publish
    ``k3`` from memory ahead of ``k2``."""
    rig = RaceRig(await make_store(), await make_store())
    transport, relay_a = rig.transport, rig.relay_a
    transport.failing.add("p1")
    await rig.commit("1", "p1")
    await rig.commit("2", "k2")  # p1 is under A's lease: k2 is handed, queued behind p1
    assert relay_a.handed == 2
    await rig.commit("3", "k3", deferred=True)  # k2 is under A's lease: k3 is handed (after the passes)
    await relay_a.run_once(claim=False)  # p1 fails: k2 given back, A holds k
    transport.failing.clear()
    rig.clock.advance(1)
    await relay_a.run_once()  # p1 goes out (claimed)
    await _b_fails_then_a_takes_its_handed_rows(rig, "k2")  # k3: not before k2
    assert transport.first() == ["p1", "k2", "k3"], transport.sent


async def _b_fails_then_a_takes_its_handed_rows(rig: RaceRig, event_id: str) -> None:
    """Relay B claims ``event_id`` and its first attempt fails (it backs off); then A's
    pending hand-off lands and A runs a pass; then every relay drains."""
    rig.transport.failing.add(event_id)
    await rig.relay_b.run_once()
    rig.transport.failing.clear()
    rig.deliver()
    await rig.relay_a.run_once()
    await rig.drain()
