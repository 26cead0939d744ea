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

from typing import Any

from tests.relay_kit import RaceRig


async def test_a_row_given_back_holds_its_key_after_the_older_row_went_out(make_store: Any) -> None:
    rig = RaceRig(await make_store(), await make_store())
    transport, relay_a = rig.transport, rig.relay_a
    transport.failing.add("p1")
    await rig.commit("1", "p1")
    await rig.commit("2", "k2", deferred=True)  # p1 is under A's lease: k2 is handed (after the pass below)
    await relay_a.run_once(claim=False)  # p1 fails: A holds k
    rig.deliver()
    assert relay_a.handed == 1

    await rig.commit("3", "k3", deferred=True)  # k2 is under A's lease: k3 is handed (after the pass below)
    transport.failing.clear()
    rig.clock.advance(1)
    await relay_a.run_once()  # p1 goes out (claimed); k2 is held back and given back
    rig.deliver()
    await relay_a.run_once(claim=False)  # k3: not before k2

    await rig.drain()
    assert transport.first() == ["p1", "k2", "k3"], transport.sent
