"""A bounded randomized model checker of the outbox relay's order per key with several
relays (each its own SqlStore, hand-off attached) on one database.

Random steps: commits of 1-3 rows on a few keys (some without a key) through a store, their
hand-off delivered at once or deferred past later passes (a commit racing a pass), relay
passes (claim or not, mark or not), mark flushes, a transport that refuses chosen messages
(refusing a message also refuses the later messages of its key in the same call, as the
Kafka publisher keeps one call's order per key), clock steps (some past the lease), small
``max_handed`` and ``rows_per_key``, small ``max_attempts`` so rows park.

Checked after a drain (healthy transport, clock past the lease): every row not parked was
published; the first publication of each keyed row follows id order within its key, except
behind a row that was parked (docs/guarantees.md "Order per key"); no relay still holds a
key, has handed rows or overflow, and nothing is pending.

Interleavings: while a relay awaits (its claim, publish, mark_failed, release, mark
statements) other steps may run (commits, deferred hand-offs, another relay's pass, clock
steps). One store's hand-offs keep their commits' order. Knobs: RELAYMC_SEED (default 7,
whose scenario 42 found the defect of test_sql_relay_park_keeps_given_back_hold.py),
RELAYMC_SCENARIOS (default 80 per backend, about 10-30 s), RELAYMC_INTERLEAVE.
"""

from __future__ import annotations

import functools
import os
import random
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from pipeline_state_sql import create_engine
from pipeline_state_sql.schema import OUTBOX
from sqlalchemy import delete

from pipeline_state import ManualClock, OutboxRelay
from pipeline_state.errors import PublishError
from pipeline_state.ports import Change, OutboxMessage, OutboxRow
from pipeline_state.testing import T0, message

SCENARIOS = int(os.environ.get("RELAYMC_SCENARIOS", "80"))
SEED = int(os.environ.get("RELAYMC_SEED", "7"))
STEPS = 36
INTERLEAVE = float(os.environ.get("RELAYMC_INTERLEAVE", "0.5"))
WRAPPED = ("claim", "release", "mark_published", "mark_failed")
REORDER = os.environ.get("RELAYMC_REORDER") == "1"
KEYS = ("a", "b", None)


class Transport:
    """Refuses the messages in ``failing``; a refused message refuses the later ones of its
    key in the same call (a transport that keeps one call's order per key)."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.failing: set[str] = set()
        self.during: Any = None  # a coroutine function run while a publish is in flight

    async def publish(self, messages: Sequence[OutboxMessage]) -> Sequence[BaseException | None]:
        if self.during is not None:
            await self.during("publish")
        out: list[BaseException | None] = []
        refused_keys: set[str | None] = set()
        for m in messages:
            if m.event_id in self.failing or (m.key is not None and m.key in refused_keys):
                refused_keys.add(m.key)
                out.append(PublishError(f"{m.event_id} refused"))
            else:
                self.sent.append(m.event_id)
                out.append(None)
        return out


class Scenario:
    def __init__(self, seed: int, stores: list[Any]) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.stores = stores
        self.clock = ManualClock(T0 + timedelta(days=seed % 1000))
        self.transport = Transport()
        self.trace: list[str] = []
        self.keys: dict[str, str | None] = {}  # event id -> key
        self.ids: dict[str, int] = {}  # event id -> row id
        self.ever_parked: set[str] = set()
        self.deferred: list[list[tuple[Sequence[OutboxRow], bool]]] = [[] for _ in stores]
        self.defer_next: list[bool] = [False for _ in stores]
        rng = self.rng
        self.relays: list[OutboxRelay] = []
        for i, store in enumerate(stores):
            relay = OutboxRelay(
                store,
                self.transport,
                self.clock,
                base_backoff=0.5,
                max_backoff=2.0,
                max_attempts=rng.choice([1, 2, 3, 100]),
                rows_per_key=rng.choice([1, 1, 2, 3]),
                max_handed=rng.choice([1, 2, 3, 10_000]),
                batch_size=rng.choice([2, 100]),
            )
            self.relays.append(relay)
            self.trace.append(
                f"relay{i}: max_attempts={relay.max_attempts} rows_per_key={relay.rows_per_key} "
                f"max_handed={relay.max_handed} batch_size={relay.batch_size}"
            )
            store.attach_relay(self._hand_off(i), self.clock, accepting=relay.accepting)
        self.counter = 0
        self.depth = 0
        self.draining = False
        self.busy: set[int] = set()
        self.transport.during = self.interleave
        for i, store in enumerate(stores):
            for name in WRAPPED:
                setattr(store, name, self._wrapped(i, name, getattr(type(store), name).__get__(store)))

    def _wrapped(self, i: int, name: str, real: Any) -> Any:
        @functools.wraps(real)  # the relay reads mark_failed's signature (leased_until)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            await self.interleave(f"store{i}.{name} (before)")
            result = await real(*args, **kwargs)
            await self.interleave(f"store{i}.{name} (after)")
            return result

        return wrapper

    async def interleave(self, where: str) -> None:
        """While a relay awaits (a statement, a publish), other work may run: a commit, a
        deferred hand-off, another relay's pass."""
        if self.draining or self.depth > 1 or self.rng.random() >= INTERLEAVE:
            return
        self.depth += 1
        try:
            self.trace.append(f"  [during {where}]")
            for _ in range(self.rng.randint(1, 3)):
                await self.step(nested=True)
        finally:
            self.depth -= 1

    def _hand_off(self, i: int) -> Any:
        def hand_off(rows: Sequence[OutboxRow], poll: bool = False) -> None:
            for r in rows:
                self.ids[r.message.event_id] = r.id
            # One store's hand-offs keep their commits' order (FIFO): a deferred one is
            # delivered before a later commit's (unless REORDER allows overtaking).
            if self.defer_next[i]:
                self.deferred[i].append((list(rows), poll))
            else:
                if not REORDER:
                    self.deliver(i)
                self.relays[i].hand_off(rows, poll)

        return hand_off

    def deliver(self, i: int) -> None:
        for rows, poll in self.deferred[i]:
            self.relays[i].hand_off(rows, poll)
        self.deferred[i].clear()

    async def note_parked(self) -> None:
        for row in await self.stores[0].parked(1000):
            self.ever_parked.add(row.message.event_id)
            self.ids[row.message.event_id] = row.id

    async def step(self, nested: bool = False) -> None:
        rng = self.rng
        i = rng.randrange(len(self.stores))
        idle = i not in self.busy
        what = rng.choices(
            ["commit", "pass", "deliver", "flush", "clock", "fail", "heal"],
            weights=[6, 6 if idle else 0, 2, 1 if idle else 0, 2, 2, 1],
        )[0]
        if what == "commit":
            self.counter += 1
            events = []
            for _ in range(rng.randint(1, 3)):
                key = rng.choice(KEYS if self.seed % 3 else ("a", "a", None))
                eid = f"e{self.counter}.{len(events)}{key or '-'}"
                self.keys[eid] = key
                events.append(message(eid, key))
            defer = rng.random() < 0.35
            self.defer_next[i] = defer
            change = Change(
                f"s{self.seed}-c{self.counter}", None, None, self.clock.now(), outbox=tuple(events)
            )
            self.trace.append(
                f"commit via store{i}{' (hand-off deferred)' if defer else ''}: "
                + ", ".join(e.event_id for e in events)
            )
            await self.stores[i].commit(change)
            self.defer_next[i] = False
        elif what == "pass":
            claim, mark = rng.random() < 0.6, rng.random() < 0.7
            self.trace.append(f"relay{i}.run_once(claim={claim}, mark={mark})")
            self.busy.add(i)
            try:
                report = await self.relays[i].run_once(claim=claim, mark=mark)
            finally:
                self.busy.discard(i)
            self.trace.append(f"  relay{i} pass -> {report}")
        elif what == "deliver":
            if self.deferred[i]:
                self.trace.append(f"deliver deferred hand-offs to relay{i}")
                self.deliver(i)
        elif what == "flush":
            self.trace.append(f"relay{i}.flush_marks()")
            self.busy.add(i)
            try:
                await self.relays[i].flush_marks()
            finally:
                self.busy.discard(i)
        elif what == "clock":
            seconds = rng.choice([0.3, 1, 3, 12, 31])
            self.clock.advance(seconds)
            self.trace.append(f"clock.advance({seconds})")
        elif what == "fail":
            if self.keys:
                eid = rng.choice(list(self.keys))
                self.transport.failing.add(eid)
                self.trace.append(f"transport refuses {eid}")
        else:
            self.transport.failing.clear()
            self.trace.append("transport heals")
        await self.note_parked()

    async def drain(self) -> None:
        self.trace.append("-- drain")
        self.draining = True
        for i in range(len(self.stores)):
            self.deliver(i)
        self.transport.failing.clear()
        self.transport.during = None
        for _ in range(300):  # a long run of one key drains a row per claim
            self.clock.advance(31)
            for relay in self.relays:
                await relay.run_once()
                await relay.run_once(claim=False)
            await self.note_parked()
            if not await self.stores[0].pending_count() and not any(r.handed for r in self.relays):
                break
        self.clock.advance(31)
        for relay in self.relays:
            await relay.run_once()
            await relay.flush_marks()

    async def check(self) -> list[str]:
        problems: list[str] = []
        for row in await self.stores[0].outbox_rows(list(self.keys)):  # every row's id
            self.ids[row.message.event_id] = row.id
        sent = self.transport.sent
        first: dict[str, int] = {}
        for n, eid in enumerate(sent):
            first.setdefault(eid, n)
        for eid in self.keys:
            if eid not in first and eid not in self.ever_parked:
                problems.append(f"{eid} never published (not parked)")
        by_key: dict[str, list[str]] = {}
        for eid, key in self.keys.items():
            if key is not None and eid in self.ids:
                by_key.setdefault(key, []).append(eid)
        for key, eids in by_key.items():
            eids.sort(key=lambda e: self.ids[e])
            for x, older in enumerate(eids):
                if older in self.ever_parked:
                    continue
                for newer in eids[x + 1 :]:
                    if newer in first and (older not in first or first[newer] < first[older]):
                        problems.append(
                            f"key {key}: {newer} (row {self.ids[newer]}) first published before "
                            f"{older} (row {self.ids[older]}), which never parked"
                        )
        now = self.clock.now()
        for i, relay in enumerate(self.relays):
            live = {k: v for k, v in relay._held.items() if v[1] > now}
            if live:
                problems.append(f"relay{i} still holds {live}")
            if relay.handed or relay.overflow or relay.unmarked:
                problems.append(
                    f"relay{i}: handed={relay.handed} overflow={relay.overflow} unmarked={relay.unmarked}"
                )
        pending = await self.stores[0].pending_count()
        if pending:
            problems.append(f"{pending} rows still pending")
        return problems


async def test_relays_on_one_database_keep_order_per_key(make_store: Any, database: Any) -> None:
    stores = [await make_store() for _ in range(3)]
    engine = create_engine(database.url, schema=database.schema)
    try:
        for n in range(SCENARIOS):
            seed = SEED * 100_000 + n
            async with engine.begin() as conn:
                await conn.execute(delete(OUTBOX))
            count = 2 + seed % 2
            scenario = Scenario(seed, stores[:count])
            for _ in range(STEPS):
                await scenario.step()
            await scenario.drain()
            problems = await scenario.check()
            for store in stores:
                store.detach_relay()
                for name in WRAPPED:
                    store.__dict__.pop(name, None)
            assert not problems, (
                f"seed {seed}:\n  "
                + "\n  ".join(problems)
                + "\ntrace:\n  "
                + "\n  ".join(scenario.trace)
                + f"\nsent: {scenario.transport.sent}\nids: {scenario.ids}"
            )
    finally:
        await engine.dispose()
