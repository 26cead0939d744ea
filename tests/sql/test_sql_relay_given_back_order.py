"""Two processes' relays on one database, the case the multi-instance run
(test_sql_instances_share_one_database.py) found. Was a defect (fixed): a row of key ``k``
handed to relay A is held back behind an older row of ``k`` that failed, and given back to
the claim; a newer row of ``k`` handed to A in the same commit stayed in A's memory. Once
the failed row went out, A's hold ended and A published that newer row from memory, while
the given-back rows were still pending (relay B claimed one of them and its publication
failed): a key's rows went out of order. Now the newer handed rows of the key are given
back to the claim with the held-back one.

The sequence is forced deterministically (the commit's hand-off is delivered after A's
failing pass, as happens when the commit and the pass run concurrently: the trace of the
random run showed exactly these steps on PostgreSQL, rows 26/28/34/36 of one batch).
"""

from __future__ import annotations

from typing import Any

from tests.relay_kit import RaceRig


async def test_a_row_handed_behind_a_given_back_row_never_overtakes_it(make_store: Any) -> None:
    rig = RaceRig(await make_store(), await make_store())
    transport, relay_a = rig.transport, rig.relay_a
    transport.failing.add("p1")
    await rig.commit("1", "p1")
    await rig.commit("2", "k2")  # p1 is under A's lease: handed
    await rig.commit("3", "k3", "k4", deferred=True)  # k2 is under A's lease: handed (after the pass below)
    await relay_a.run_once(claim=False)  # p1 fails: A holds k, gives k2 back
    rig.deliver()
    assert relay_a.handed == 2

    transport.failing = {"k2"}
    rig.clock.advance(1)
    await relay_a.run_once()  # p1 goes out (claimed); k3 is held back and given back; k4 stays
    await rig.relay_b.run_once()  # B claims k2, which fails: k2 backs off, pending
    await relay_a.run_once()  # A's hold ended with p1: what does it do with k4?

    await rig.drain()
    assert transport.first() == ["p1", "k2", "k3", "k4"], transport.sent
