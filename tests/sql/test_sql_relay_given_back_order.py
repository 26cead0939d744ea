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

from collections.abc import Sequence
from typing import Any

from pipeline_state import ManualClock, OutboxRelay
from pipeline_state.errors import PublishError
from pipeline_state.ports import Change, OutboxMessage, OutboxRow
from pipeline_state.testing import T0, message


class Transport:
    def __init__(self) -> None:
        self.sent: list[str] = []
        self.failing: set[str] = set()

    async def publish(self, messages: Sequence[OutboxMessage]) -> Sequence[BaseException | None]:
        out: list[BaseException | None] = []
        for m in messages:
            if m.event_id in self.failing:
                out.append(PublishError(f"{m.event_id} refused"))
            else:
                self.sent.append(m.event_id)
                out.append(None)
        return out


async def test_a_row_handed_behind_a_given_back_row_never_overtakes_it(make_store: Any) -> None:
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

    store_a.attach_relay(hand_off, clock, accepting=relay_a.accepting)

    async def commit(tag: str, *event_ids: str) -> None:
        outbox = tuple(message(e, "k") for e in event_ids)
        await store_a.commit(Change(f"b-{tag}", None, None, clock.now(), outbox=outbox))

    transport.failing.add("p1")
    await commit("1", "p1")
    await commit("2", "k2")  # p1 is under A's lease: handed
    defer = True
    await commit("3", "k3", "k4")  # k2 is under A's lease: handed (after the pass below)
    defer = False
    await relay_a.run_once(claim=False)  # p1 fails: A holds k, gives k2 back
    for rows, poll in deferred:
        relay_a.hand_off(rows, poll)
    assert relay_a.handed == 2

    transport.failing = {"k2"}
    clock.advance(1)
    await relay_a.run_once()  # p1 goes out (claimed); k3 is held back and given back; k4 stays
    await relay_b.run_once()  # B claims k2, which fails: k2 backs off, pending
    await relay_a.run_once()  # A's hold ended with p1: what does it do with k4?

    transport.failing.clear()
    for _ in range(20):
        clock.advance(5)
        await relay_a.run_once()
        await relay_b.run_once()
    assert await store_a.pending_count() == 0
    first = list(dict.fromkeys(transport.sent))
    assert first == ["p1", "k2", "k3", "k4"], transport.sent
