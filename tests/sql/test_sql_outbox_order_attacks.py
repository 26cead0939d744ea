"""Found by an attack on per-key order of outbox rows with relays attached (hand-off on),
failing or hanging transports, store outages and leases running out, on SQLite and
PostgreSQL. Order is checked per key over the first publication of each event: no row may
go out before every older row (lower id) of its key went out once. The tests whose
docstring says "Was a defect" failed before their fix; the other held."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from pipeline_state_sql import SqlStore, open_store
from sqlalchemy.engine import make_url

from pipeline_state import ManualClock, OutboxRelay
from pipeline_state.errors import ConcurrencyConflictError, StoreUnavailableError
from pipeline_state.ports import Change, OutboxMessage
from pipeline_state.testing import T0, make_state, message
from tests.sql.outbox_kit import Transport, attach, order_broken, pg_execute


async def ids_of(store: SqlStore, event_ids: Sequence[str]) -> dict[str, int]:
    return {r.message.event_id: r.id for r in await store.outbox_rows(list(event_ids))}


async def _slow_insert_trigger(url: str, schema: str, event_id: str, seconds: float) -> None:
    """A trigger that makes the insert of outbox row ``event_id`` take ``seconds`` (a slow
    unit of work: its statement holds what it locked meanwhile)."""
    await pg_execute(
        url,
        f"""
        CREATE FUNCTION "{schema}".slow_insert() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF NEW.event_id = '{event_id}' THEN PERFORM pg_sleep({seconds}); END IF;
          RETURN NEW;
        END $$;
        CREATE TRIGGER slow_insert BEFORE INSERT ON "{schema}".outbox
          FOR EACH ROW EXECUTE FUNCTION "{schema}".slow_insert();
        """,
    )


# -- 1. a one-statement unit of work that waited for the batch's row lock ----------------------


async def _lock_wait_race(pg: Any, *, hand_off: bool, together: bool = False) -> list[str]:
    """Process 2 emits x of key K with no new document (its statement holds batch B's row
    lock while it writes x, slowly); process 1 commits B, emitting y of K, meanwhile (its
    statement waits for the lock), then, after a conflict, again from a fresh read, as the
    service does. Returns the event ids in the order process 1's relay published them."""
    p1 = await open_store(pg.url, schema=pg.schema, upgrade=True)
    p2 = await open_store(pg.url, schema=pg.schema, upgrade=False)
    try:
        await p1.commit(Change("B", None, make_state("B", version=1), T0))
        await _slow_insert_trigger(pg.url, pg.schema, "x", 1.0)
        log: list[OutboxMessage] = []
        relay1 = OutboxRelay(p1, Transport(log=log), ManualClock(T0))
        if hand_off:
            attach(p1, relay1)
        touch = asyncio.ensure_future(p2.commit(Change("B", 1, None, T0, outbox=(message("x", "K"),))))
        await asyncio.sleep(0.4)
        for _ in range(3):
            try:
                y = Change("B", 1, make_state("B", version=2), T0, outbox=(message("y", "K"),))
                if together:  # group commit: one statement for several batches
                    await p1.commit_many([y, Change("C", None, make_state("C", version=1), T0)])
                else:
                    await p1.commit(y)
                break
            except ConcurrencyConflictError:
                await touch
        await touch
        await relay1.run_once(claim=False)  # a runner's pass when no claim is due: handed rows only
        await relay1.drain()
        return [m.event_id for m in log]
    finally:
        await p1.close()
        await p2.close()


@pytest.mark.postgres
@pytest.mark.timeout(120)
async def test_a_lock_wait_without_hand_off_keeps_order(pg: Any) -> None:
    """The same race with no relay attached (every row to the claim): x, then y."""
    assert await _lock_wait_race(pg, hand_off=False) == ["x", "y"]


@pytest.mark.postgres
@pytest.mark.timeout(120)
@pytest.mark.parametrize("together", [False, True], ids=["commit", "commit_many"])
async def test_a_lock_wait_with_hand_off_keeps_order(pg: Any, together: bool) -> None:
    """Was a defect (fixed): process 1's one-statement commit, having waited for the lock,
    went on with the snapshot it took before the wait, where x is not yet visible: y was
    leased to process 1's relay and handed off, and went out before x. The compare-and-set
    now also asks that the row be the one its snapshot saw (same ``xmin``): after such a
    wait it is not, the commit is a conflict, and the unit of work is decided again."""
    assert await _lock_wait_race(pg, hand_off=True, together=together) == ["x", "y"]


# -- 2. the store fails while the relay records a failed publish -------------------------------


async def _store_with_outage(backend: str, database: Any, tmp_path: Path) -> tuple[SqlStore, Any]:
    """A store and an async context factory that makes its database unreachable for a while:
    SQLite, another process holding the write lock past a short busy timeout; PostgreSQL, the
    store's connections terminated (a failover)."""
    if backend == "sqlite":
        store = await open_store(database.url, busy_timeout=0.2)
        path = make_url(database.url).database

        class Locked:
            async def __aenter__(self) -> None:
                self.conn = sqlite3.connect(path, isolation_level=None, timeout=5)
                self.conn.execute("BEGIN IMMEDIATE")

            async def __aexit__(self, *exc: object) -> None:
                self.conn.execute("ROLLBACK")
                self.conn.close()

        return store, Locked
    name = f"attackL_{uuid.uuid4().hex[:10]}"
    store = await open_store(
        database.url,
        schema=database.schema,
        upgrade=True,
        connect_args={"server_settings": {"application_name": name}},
    )

    class Terminated:
        async def __aenter__(self) -> None:
            await pg_execute(
                database.url,
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{name}'",
            )

        async def __aexit__(self, *exc: object) -> None:
            return None

    return store, Terminated


@pytest.mark.timeout(120)
async def test_a_failure_the_store_cannot_record_still_holds_its_key_back(
    backend: str, database: Any, tmp_path: Path
) -> None:
    """Was a defect: x and y (key K) are handed to the relay. The wave with x hangs in the
    broker; the database becomes unreachable meanwhile; the broker answers that x failed and
    ``mark_failed`` raises StoreUnavailableError (retried by the runner). The relay held K
    back only after recording the failure, so it never did: y went out at the next pass and
    x, still leased, after its lease. The hold (and y's give-back) now come first."""
    store, outage = await _store_with_outage(backend, database, tmp_path)
    try:
        clock = ManualClock(T0)
        log: list[OutboxMessage] = []
        gate = asyncio.Event()
        transport = Transport(failing=["x"], gate=gate, log=log)
        relay = OutboxRelay(store, transport, clock, base_backoff=1.0)
        attach(store, relay)
        await store.commit(Change("b-x", None, None, T0, outbox=(message("x", "K"),)))
        await store.commit(Change("b-y", None, None, T0, outbox=(message("y", "K"),)))
        assert relay.handed == 2
        stuck = asyncio.ensure_future(relay.run_once(claim=False))
        await asyncio.wait_for(transport.entered.wait(), 5)
        async with outage():
            gate.set()
            with pytest.raises(StoreUnavailableError):
                await asyncio.wait_for(stuck, 10)
        # The database is back; the relay goes on as its runner does, a second at a time.
        for _ in range(60):
            with contextlib.suppress(StoreUnavailableError):
                await relay.run_once()
            if not await store.pending_count():
                break
            clock.advance(1)
        assert sorted(m.event_id for m in log) == ["x", "y"]
        assert [m.event_id for m in log] == ["x", "y"], "y went out before the older x of its key"
    finally:
        await store.close()


# -- 3. several processes, several commits at once each, relays running meanwhile --------------


class Decider:
    """The decisions of one process: read a batch, emit one event keyed by the batch and move
    it to the next version (compare-and-set; a lost one is decided again from a fresh read)."""

    def __init__(self, store: SqlStore, clock: ManualClock, counter: list[int], conflicts: list[int]) -> None:
        self.store, self.clock, self.counter, self.conflicts = store, clock, counter, conflicts

    def _event(self) -> str:
        self.counter[0] += 1
        return f"e{self.counter[0]:05d}"

    async def _change(self, batch: str) -> Change:
        state = await self.store.load(batch)
        version = None if state is None else state.version
        new = make_state(batch, version=(version or 0) + 1)
        return Change(batch, version, new, self.clock.now(), outbox=(message(self._event(), batch),))

    async def one(self, batch: str) -> None:
        for _ in range(200):
            try:
                await self.store.commit(await self._change(batch))
                return
            except ConcurrencyConflictError:
                self.conflicts[0] += 1
                await asyncio.sleep(0)
        raise AssertionError(f"no commit of {batch} in 200 tries")

    async def group(self, batches: Sequence[str]) -> None:
        for _ in range(200):
            try:
                await self.store.commit_many([await self._change(b) for b in batches])
                return
            except ConcurrencyConflictError:
                self.conflicts[0] += 1
                await asyncio.sleep(0)
        raise AssertionError(f"no commit of {batches} in 200 tries")


async def _relay_loop(relay: OutboxRelay, stop: asyncio.Event, rng: random.Random) -> None:
    """A runner's loop: passes with or without a claim, store errors retried."""
    while not stop.is_set():
        with contextlib.suppress(StoreUnavailableError):
            await relay.run_once(claim=relay.claim_due or rng.random() < 0.3, mark=rng.random() < 0.7)
        await asyncio.sleep(rng.choice([0, 0, 0.001, 0.005]))


async def _settle(relays: Sequence[OutboxRelay], store: SqlStore, clock: ManualClock, step: float) -> None:
    for _ in range(300):
        for relay in relays:
            await relay.run_once()
        if not await store.pending_count() and not any(r.handed for r in relays):
            return
        clock.advance(step)
    raise AssertionError(f"{await store.pending_count()} rows still pending")


# -- 4. the claim fails in a pass that already took handed rows --------------------------------


@pytest.mark.timeout(120)
async def test_a_claim_the_store_refuses_takes_no_handed_row_out_of_the_relay(
    backend: str, database: Any, tmp_path: Path
) -> None:
    """Was a defect: x and y (key K) are handed to the relay (a wave carries one row of a
    key). A pass took x out of the hand-off, then claimed: the database was unreachable,
    the claim raised (retried by the runner), and x was gone from the relay's memory while
    still leased to it; the next pass published y, and x only after its lease. The claim
    now runs before the handed rows are taken."""
    store, outage = await _store_with_outage(backend, database, tmp_path)
    try:
        clock = ManualClock(T0)
        log: list[OutboxMessage] = []
        relay = OutboxRelay(store, Transport(log=log), clock)
        attach(store, relay)
        await store.commit(Change("b-x", None, None, T0, outbox=(message("x", "K"),)))
        await store.commit(Change("b-y", None, None, T0, outbox=(message("y", "K"),)))
        assert relay.handed == 2
        async with outage():
            with pytest.raises(StoreUnavailableError):
                await asyncio.wait_for(relay.run_once(claim=True), 10)
        for _ in range(60):
            with contextlib.suppress(StoreUnavailableError):
                await relay.run_once()
            if not await store.pending_count():
                break
            clock.advance(1)
        assert sorted(m.event_id for m in log) == ["x", "y"]
        assert [m.event_id for m in log] == ["x", "y"], "y went out before the older x of its key"
    finally:
        await store.close()


# -- 5. the connection drops after the one statement committed ---------------------------------


@pytest.mark.postgres
@pytest.mark.timeout(120)
async def test_a_one_statement_commit_sends_nothing_after_it_committed(pg: Any) -> None:
    """Was a defect: process 1 commits one unit of work with a1 (key K1, held back by process
    2's pending a0: written unleased) and b1 (key K2: written leased to process 1's relay).
    The one statement committed; then, although the insert had decided the lease, the store
    sent a second statement to "release" a1, and a connection lost there (a failover, here
    a trigger on any outbox UPDATE that ends the session) made the commit raise, nobody
    handed b1 off, and the next row of K2 went out 30 s before it. Nothing is sent after the
    one statement now: the commit succeeds and every key keeps its order."""
    from pipeline_state.errors import DuplicateEventError
    from pipeline_state.ports import InboxEntry

    p1 = await open_store(pg.url, schema=pg.schema, upgrade=True)
    p2 = await open_store(pg.url, schema=pg.schema, upgrade=False)
    try:
        clock = ManualClock(T0)
        log: list[OutboxMessage] = []
        relay1 = OutboxRelay(p1, Transport(log=log), clock)
        relay2 = OutboxRelay(p2, Transport(log=log), clock)
        attach(p1, relay1)
        attach(p2, relay2)
        await p2.commit(Change("p2", None, None, T0, outbox=(message("a0", "K1"),)))
        schema = pg.schema
        await pg_execute(
            pg.url,
            f"""
            CREATE FUNCTION "{schema}".drop_conn() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NULL; END $$;
            CREATE TRIGGER drop_conn BEFORE UPDATE ON "{schema}".outbox
              FOR EACH STATEMENT EXECUTE FUNCTION "{schema}".drop_conn();
            """,
        )
        change = Change(
            "p1",
            None,
            None,
            T0,
            outbox=(message("a1", "K1"), message("b1", "K2")),
            inbox=InboxEntry("in-1", "t.in", "p1", "applied", T0),
        )
        await p1.commit(change)  # one statement: no UPDATE of the outbox after it
        await pg_execute(pg.url, f'DROP TRIGGER drop_conn ON "{schema}".outbox')
        with pytest.raises(DuplicateEventError):  # a retry finds it done
            await p1.commit(change)
        await p1.commit(Change("p1b", None, None, T0, outbox=(message("c1", "K2"),)))
        for _ in range(60):
            await relay1.run_once()
            await relay2.run_once()
            if not await p1.pending_count():
                break
            clock.advance(1)
        assert sorted(m.event_id for m in log) == ["a0", "a1", "b1", "c1"]
        assert order_broken(log, await ids_of(p1, ["a0", "a1", "b1", "c1"])) == {}
    finally:
        await p1.close()
        await p2.close()
