"""A relay counts a park, and lets its key go, only when the store recorded it. Was a defect
(found by the randomized model checker, test_sql_relay_model_check.py): a relay that
"parked" a row whose lease ended during the publish released the key's hold, although its
``mark_failed`` changed nothing (another relay had claimed the row): a newer row of the key
handed to this relay then went out ahead of the older row, still pending and never parked
(docs/guarantees.md "Order per key" allows overtaking only a parked row). ``mark_failed``
now says whether it counted the failure.

The interleaving is forced: relay A's last try of ``p1``
 (claimed, ``max_attempts=2``) hangs past A's lease; meanwhile a
commit through A's store writes ``k2`` while ``p1`` is still leased to A (so ``k2`` is
handed to A), the lease ends, relay B claims ``p1`` and its publish fails too (``p1`` backs
off, pending). A's publish then fails: A counted ``p1`` as parked and ends the hold of ``k``
(pipeline_state/_relay.py ``_publish``: ``if park: self._release_hold(...)``), but its
``mark_failed`` (under A's lease, which B replaced) changes nothing in the store. ``k2``'s
hand-off lands while A records that failure (the commit's unit of work finished then, a
few milliseconds after its INSERT), and A's next pass publishes ``k2`` before ``p1``.
"""

from __future__ import annotations

from typing import Any

from tests.relay_kit import RaceRig


async def test_a_row_not_parked_by_the_store_keeps_its_key_held(make_store: Any) -> None:
    rig = RaceRig(await make_store(), await make_store(), attempts_a=2)
    transport, relay_a, clock = rig.transport, rig.relay_a, rig.clock
    real_mark_failed = rig.store_a.mark_failed

    async def mark_failed(*args: Any, **kwargs: Any) -> bool:
        rig.deliver()  # a commit's hand-off lands while A records a failure
        return bool(await real_mark_failed(*args, **kwargs))

    rig.store_a.mark_failed = mark_failed

    transport.failing.add("p1")
    await rig.commit("1", "p1")
    await relay_a.run_once(claim=False)  # p1's first try fails: attempts 1, due in 0.5 s
    clock.advance(1)

    async def while_a_publishes_p1() -> None:
        clock.advance(20)
        await rig.commit("2", "k2", deferred=True)  # p1 is still under A's lease: k2 is handed to A
        clock.advance(11)  # A's publish of p1 outlasts its lease (not k2's)
        await rig.relay_b.run_once()  # B claims p1; its publish fails: p1 backs off, pending

    transport.during = while_a_publishes_p1
    report = await relay_a.run_once()  # A claims p1 (its last try here), which fails
    assert relay_a.handed == 1  # k2
    parked = await rig.store_a.parked()
    assert [r.message.event_id for r in parked] == [], "the store did not park p1"
    assert (report.failed, report.parked) == (1, 0)  # not parked by A: B holds p1

    transport.failing.clear()
    await relay_a.run_once(claim=False)  # k2: not before p1, which is pending and not parked
    await rig.drain(rounds=10, step=31)
    assert transport.first() == ["p1", "k2"], transport.sent
