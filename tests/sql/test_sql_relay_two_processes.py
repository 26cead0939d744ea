"""Two processes share one database, each a store with its relay attached (hand-off on), in
a random interleaving of commits (one unit of work or a group commit), relay passes with and
without a claim, failing publishes and time passing. Leases never run out here, so every
event goes out exactly once, and the events of one key in the order they were written.

Found by an attack on the hand-off (SQLite): a unit of work that wrote two rows of a key
behind an older pending row of another process handed the second one to its relay, which
published it first (10 of 12 seeds out of order). A bounded number of seeds and steps."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import pytest

from pipeline_state import ManualClock, OutboxRelay
from pipeline_state.errors import PublishError
from pipeline_state.ports import Change, OutboxMessage
from pipeline_state.testing import T0, message

KEYS = ("k1", "k2", "k3", None)


class KeyOrderedTransport:
    """Publishes in call order; a message set to fail fails, and so does every later message
    of its key in the same call (a transport that keeps key order)."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.failing: set[str] = set()

    async def publish(self, messages: Sequence[OutboxMessage]) -> Sequence[BaseException | None]:
        stopped: set[str | None] = set()
        results: list[BaseException | None] = []
        for m in messages:
            if m.event_id in self.failing or (m.key is not None and m.key in stopped):
                stopped.add(m.key)
                results.append(PublishError(f"{m.event_id} refused"))
            else:
                self.sent.append(m.event_id)
                results.append(None)
        return results


@pytest.mark.parametrize("seed", range(4))
async def test_two_processes_publish_each_event_once_and_each_key_in_order(
    make_store: Any, seed: int
) -> None:
    rng = random.Random(seed)
    stores = [await make_store(), await make_store()]
    clocks = [ManualClock(T0), ManualClock(T0)]
    transport = KeyOrderedTransport()
    relays = [
        OutboxRelay(
            store,
            transport,
            clock,
            base_backoff=0.001,
            max_backoff=0.01,
            max_attempts=10_000,
            batch_size=rng.choice([1, 3, 100]),
            rows_per_key=rng.choice([1, 2]),
        )
        for store, clock in zip(stores, clocks, strict=True)
    ]
    for store, relay, clock in zip(stores, relays, clocks, strict=True):
        store.attach_relay(relay.hand_off, clock)
    written: dict[str | None, list[str]] = {}
    count = 0
    for _ in range(120):
        roll, who = rng.random(), rng.randrange(2)
        store, clock = stores[who], clocks[who]
        if roll < 0.45:
            messages = []
            for _ in range(rng.randint(1, 3)):
                count += 1
                key, event_id = rng.choice(KEYS), f"e{count}"
                messages.append(message(event_id, key))
                written.setdefault(key, []).append(event_id)
                if rng.random() < 0.2:
                    transport.failing.add(event_id)
            if rng.random() < 0.5:
                await store.commit(Change(f"b{count}", None, None, clock.now(), outbox=tuple(messages)))
            else:
                half = max(1, len(messages) // 2)
                await store.commit_many(
                    [
                        Change(f"b{count}a", None, None, clock.now(), outbox=tuple(messages[:half])),
                        Change(f"b{count}b", None, None, clock.now(), outbox=tuple(messages[half:])),
                    ]
                )
        elif roll < 0.85:
            await relays[who].run_once(claim=rng.random() < 0.6, mark=rng.random() < 0.7)
        elif roll < 0.92:
            if transport.failing:
                transport.failing.discard(rng.choice(sorted(transport.failing)))
        else:
            for c in clocks:
                c.advance(0.02)
    transport.failing.clear()
    for _ in range(400):
        for c in clocks:
            c.advance(0.02)
        for relay in relays:
            await relay.run_once()
        if not await stores[0].pending_count() and not any(r.handed for r in relays):
            break
    assert await stores[0].pending_count() == 0
    assert sorted(transport.sent) == sorted(e for ids in written.values() for e in ids)  # each once
    for key, ids in written.items():
        if key is not None:
            assert [e for e in transport.sent if e in set(ids)] == ids, key
