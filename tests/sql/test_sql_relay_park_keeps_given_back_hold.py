"""A row that parks does not end its key's hold while the newer rows of the key it gave back
to the claim in the same pass are still pending. Found by the randomized model checker
(test_sql_relay_model_check.py, seed 700042 on SQLite, rows 2259/2263/2268) on the code
before every given-back row held its key (the fix of
test_sql_relay_hold_every_given_back_row.py, which it confirms on the park path); shrunk
to three rows of one key and one relay. The interleaving is forced as in
test_sql_relay_hold_after_give_back.py: a commit's hand-off is delivered after the relay's
concurrent pass.

Relay A (``max_attempts=1``) is handed ``p1`` and ``k2``; ``p1`` fails and parks, ``k2`` is
given back to the claim. ``k3`` is committed while ``k2`` still reads as leased to A, so it
is handed to A. ``p1``'s park released the hold of ``k`` (``_release_hold`` in
``_publish``), so A published ``k3`` at once, ahead of ``k2``, which never parked.
"""

from __future__ import annotations

from typing import Any

from tests.relay_kit import RaceRig


async def test_a_parked_row_leaves_the_rows_it_gave_back_holding_the_key(make_store: Any) -> None:
    rig = RaceRig(await make_store(), await make_store(), attempts_a=1)
    transport, relay_a = rig.transport, rig.relay_a
    transport.failing.add("p1")
    await rig.commit("1", "p1")
    await rig.commit("2", "k2")  # p1 is under A's lease: handed
    await rig.commit("3", "k3", deferred=True)  # k2 is under A's lease: handed (after the pass below)
    report = await relay_a.run_once(claim=False)  # p1 fails and parks; k2 is given back
    assert report.parked == 1
    rig.deliver()
    assert relay_a.handed == 1  # k3

    transport.failing.clear()
    await relay_a.run_once(claim=False)  # k3: not before k2, which is pending
    await rig.drain(rounds=10, step=31)
    assert [r.message.event_id for r in await rig.store_a.parked()] == ["p1"]
    assert transport.first() == ["k2", "k3"], transport.sent
