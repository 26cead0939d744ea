"""Found by an attack on what the outbox relay keeps in memory in a long-running process.

Were defects (fixed; the tests failed before): the relay remembered, for ever, every key
whose row failed here (``_held``): after the row was parked, or published by another relay,
10,000 distinct keys stayed. Now a lapsed hold is forgotten and a parked row frees its key.

Held: a hold is cleared when the relay's own retry succeeds; the machine's refusal cache
stays bounded under distinct unknown states and triggers.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

import pytest

from pipeline_state import InMemoryBus, InMemoryStore, ManualClock, OutboxRelay
from pipeline_state.ports import Change, OutboxMessage

N_KEYS = 10_000
LEASE = 30.0


@pytest.fixture(autouse=True)
def _quiet_relay() -> Iterator[None]:
    """One warning per failed row would flood the captured log (N rows x attempts)."""
    logger = logging.getLogger("pipeline_state.relay")
    was = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = was


def _message(key: str) -> OutboxMessage:
    event_id = str(uuid.uuid4())
    return OutboxMessage(event_id, "grow4.topic", key, {"event_id": event_id, "data": {"key": key}})


async def _write_distinct_keys(store: InMemoryStore, clock: ManualClock, n: int) -> list[OutboxMessage]:
    messages = [_message(f"batch-{i:06d}") for i in range(n)]
    await store.commit(
        Change(
            batch_id="grow4-writer", expected_version=None, state=None, at=clock.now(), outbox=tuple(messages)
        )
    )
    return messages


async def _pass_all(relay: OutboxRelay) -> None:
    """Passes until one claims nothing more (every due row was tried once)."""
    for _ in range(1000):
        report = await relay.run_once()
        if report.idle:
            return


@pytest.mark.timeout(120)
async def test_relay_forgets_the_keys_of_parked_rows() -> None:
    """Was a defect, fixed.

    Expected: once a failed row's key is no longer held back (its row was parked and the
    lease passed), the relay forgets that key; ``_held`` stays bounded (at most the keys whose
    failed row is still within its lease). Before the fix: one entry per key whose row failed and was
    parked stays in ``OutboxRelay._held`` for ever; N distinct keys -> N entries, never
    trimmed (it is only pruned when a later handed-off row of the same key comes, which a
    finished batch never sends)."""
    store, bus, clock = InMemoryStore(), InMemoryBus(), ManualClock()
    relay = OutboxRelay(store, bus, clock, batch_size=1000, max_attempts=2, base_backoff=0.1, max_backoff=0.1)
    await _write_distinct_keys(store, clock, N_KEYS)
    bus.available = False
    await _pass_all(relay)  # attempt 1: every row fails, its key is held back
    clock.advance(1.0)
    await _pass_all(relay)  # attempt 2: every row is parked
    assert len(await store.parked(limit=N_KEYS + 1)) == N_KEYS
    assert await store.pending_count() == 0
    # The broker is back, the lease has long passed, the relay keeps working on other keys.
    bus.available = True
    clock.advance(LEASE * 10)
    fresh = [_message(f"other-{i}") for i in range(50)]
    await store.commit(Change("grow4-other", None, None, clock.now(), outbox=tuple(fresh)))
    await _pass_all(relay)
    assert {m.event_id for m in bus.messages()} == {m.event_id for m in fresh}
    held = len(relay._held)
    assert held <= 100, (
        f"OutboxRelay._held keeps {held} keys for rows parked {LEASE * 10:.0f}s ago "
        f"(N={N_KEYS} distinct keys): never trimmed"
    )


@pytest.mark.timeout(120)
async def test_relay_forgets_keys_another_relay_published() -> None:
    """Was a defect, fixed.

    Expected: two relays (two serve processes) share one outbox; rows that failed on relay
    A during a broker hiccup are published by relay B after their back-off; A forgets those
    keys once their lease passed. Before the fix: A keeps one ``_held`` entry per such key for ever
    (N distinct keys -> N entries), although every row is published and nothing of those
    keys will come again."""
    store, bus, clock = InMemoryStore(), InMemoryBus(), ManualClock()
    relay_a = OutboxRelay(store, bus, clock, batch_size=1000, base_backoff=0.1, max_backoff=0.1)
    relay_b = OutboxRelay(store, bus, clock, batch_size=1000, base_backoff=0.1, max_backoff=0.1)
    messages = await _write_distinct_keys(store, clock, N_KEYS)
    bus.available = False
    await _pass_all(relay_a)
    assert len(relay_a._held) == N_KEYS  # held back while the lease runs: expected
    bus.available = True
    clock.advance(1.0)
    await relay_b.drain(max_passes=100)
    assert await store.pending_count() == 0
    assert {m.event_id for m in bus.messages()} == {m.event_id for m in messages}
    clock.advance(LEASE * 10)
    fresh = [_message(f"later-{i}") for i in range(50)]
    await store.commit(Change("grow4-later", None, None, clock.now(), outbox=tuple(fresh)))
    await _pass_all(relay_a)
    held = len(relay_a._held)
    assert held <= 100, (
        f"relay A keeps {held} _held keys for rows relay B published {LEASE * 10:.0f}s ago: never trimmed"
    )


@pytest.mark.timeout(60)
async def test_relay_held_entries_cleared_when_own_retry_succeeds() -> None:
    store, bus, clock = InMemoryStore(), InMemoryBus(), ManualClock()
    relay = OutboxRelay(store, bus, clock, batch_size=1000, base_backoff=0.1, max_backoff=0.1)
    messages = await _write_distinct_keys(store, clock, 2000)
    bus.available = False
    await _pass_all(relay)
    bus.available = True
    clock.advance(1.0)
    await relay.drain(max_passes=100)
    assert await store.pending_count() == 0
    assert sorted(m.event_id for m in bus.messages()) == sorted(m.event_id for m in messages)
    assert len({m.event_id for m in bus.messages()}) == len(messages)
    assert len(relay._held) == 0


@pytest.mark.timeout(60)
def test_refusal_cache_stays_bounded_under_distinct_unknown_triggers() -> None:
    from pipeline_state._machine import BATCH_MACHINE, BoundMachine, Refused

    bound: BoundMachine[object] = BoundMachine(BATCH_MACHINE.lifecycle, {})
    for i in range(20_000):
        refused = bound.select(object(), f"state-{i}", f"trigger-{i}")
        assert isinstance(refused, Refused)
    assert len(bound._refusals) <= 4096
