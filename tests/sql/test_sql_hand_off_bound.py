"""The relay's hand-off queue is bounded (noticed by an attack last session, fixed here; the
first test failed before the fix).

A ``serve`` whose broker accepts connections but stalls or refuses a topic keeps consuming:
every commit handed its rows to the relay in memory, and while a publish call hung, the
queue of handed rows grew with no bound (each row with its whole message). Past
``max_handed`` rows the store now leaves a commit's rows to the claim (it asks the relay's
``accepting`` before leasing them), and the claim keeps each key's order; rows handed to a
full relay all the same are released by its next pass, so nobody waits for their lease."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import pytest
from pipeline_state_sql import SqlStore

from pipeline_state import ManualClock, OutboxRelay
from pipeline_state.ports import Change, OutboxMessage
from pipeline_state.testing import T0, message

KEYS = 7


class StalledTransport:
    """A broker that takes the first publish call and answers it only once ``release`` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = asyncio.Event()
        self.published: list[OutboxMessage] = []

    async def publish(self, messages: Sequence[OutboxMessage]) -> Sequence[BaseException | None]:
        self.entered.set()
        await self.release.wait()
        self.published.extend(messages)
        return [None] * len(messages)


async def _commit(store: SqlStore, number: int) -> None:
    key = f"k{number % KEYS}"
    await store.commit(Change(f"bound-{number}", None, None, T0, outbox=(message(f"m{number}", key),)))


@pytest.mark.timeout(120)
async def test_handed_rows_stay_bounded_while_a_publish_hangs_and_all_go_out_in_key_order(
    make_store: Any,
) -> None:
    store: SqlStore = await make_store()
    transport = StalledTransport()
    relay = OutboxRelay(store, transport, ManualClock(T0), batch_size=4, max_handed=10)
    store.attach_relay(relay.hand_off, relay.clock, accepting=relay.accepting)  # as serve does
    for number in range(4):
        await _commit(store, number)
    stuck = asyncio.ensure_future(relay.run_once(claim=False))
    await transport.entered.wait()  # the wave of the first rows hangs in the broker
    for number in range(4, 200):
        await _commit(store, number)
        assert relay.handed <= 10, f"{relay.handed} rows held in memory after {number + 1} commits"
    transport.release.set()
    await stuck
    await relay.drain()  # at the same instant: nobody waits for a lease to lapse
    sent = [m.event_id for m in transport.published]
    assert sorted(sent) == sorted(f"m{n}" for n in range(200)), "every row published once"
    assert _key_order_kept(transport.published)
    assert await store.pending_count() == 0
    assert relay.handed == 0


def _key_order_kept(published: Sequence[OutboxMessage]) -> bool:
    by_key: dict[str | None, list[int]] = defaultdict(list)
    for m in published:
        by_key[m.key].append(int(m.event_id[1:]))
    return all(numbers == sorted(numbers) for numbers in by_key.values())


@pytest.mark.timeout(120)
async def test_rows_handed_to_a_full_relay_are_released_by_its_next_pass(make_store: Any) -> None:
    """A store attached without ``accepting`` (or a commit in flight when the relay filled)
    hands rows to a full relay: it keeps their ids, not the rows, and its next pass takes
    its lease off them, so the claim publishes them at once, in key order."""
    store: SqlStore = await make_store()
    transport = StalledTransport()
    transport.release.set()
    relay = OutboxRelay(store, transport, ManualClock(T0), batch_size=4, max_handed=5)
    store.attach_relay(relay.hand_off, relay.clock)
    for number in range(9):
        await _commit(store, number)
    assert relay.handed == 5
    await relay.drain()  # the clock stands still: no lease lapses
    assert sorted(m.event_id for m in transport.published) == sorted(f"m{n}" for n in range(9))
    assert _key_order_kept(transport.published)
    assert await store.pending_count() == 0


async def test_max_handed_must_be_a_whole_number_of_at_least_one(make_store: Any) -> None:
    store: SqlStore = await make_store()
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="max_handed"):
            OutboxRelay(store, StalledTransport(), ManualClock(T0), max_handed=bad)  # type: ignore[arg-type]
