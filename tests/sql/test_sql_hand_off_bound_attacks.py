"""The relay's hand-off under attack (its bound, rows refused past it, holds, the
one-statement commit), against a real SQLite file and PostgreSQL: key order, nothing lost,
memory bounded, two processes on one database. The tests whose docstring says "Was a defect"
failed before their fix; the others held."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pipeline_state_sql import SqlStore, open_store

from pipeline_state import ManualClock, OutboxRelay
from pipeline_state.ports import Change, OutboxMessage
from pipeline_state.testing import T0, message
from tests.sql.outbox_kit import Transport, attach, order_broken, pg_execute


@pytest.mark.timeout(120)
async def test_rows_past_the_bound_hold_their_key_back_until_they_go_out(
    make_store: Any,
) -> None:
    """Was a defect (found by an attack on the bound): one commit (its relay accepting when
    it began) wrote more rows than the relay takes plus its overflow list kept: the rest
    stayed leased to this relay, in nobody's memory, until the lease lapsed, and a later row
    of such a key, written as 'not held back' (the newest older row of its key was under
    this relay's lease), was handed off and went out first. Now every refused row is kept
    by id and released, and holds its key back meanwhile."""
    store: SqlStore = await make_store()
    clock = ManualClock(T0)
    transport = Transport()
    relay = OutboxRelay(store, transport, clock, batch_size=50, max_handed=2)
    attach(store, relay)
    first = tuple(message(f"m{n}", f"k{n}") for n in range(6))  # one row per key
    await store.commit(Change("overflow-0", None, None, T0, outbox=first))
    assert relay.handed == 2
    await relay.run_once()  # releases the overflow ids it kept; the rest stay leased to it
    await store.commit(Change("overflow-1", None, None, T0, outbox=(message("late4", "k4"),)))
    await relay.run_once()
    clock.advance(31)  # past the lease: everything is claimable again
    await relay.drain()
    rank = {**{f"m{n}": n for n in range(6)}, "late4": 100}
    assert {m.event_id for m in transport.published} == set(rank), "every row published"
    assert await store.pending_count() == 0
    assert order_broken(transport.published, rank) == {}, "order per key kept"


def _one(n: int, key: str) -> Change:
    return Change(f"grp-{n}", None, None, T0, outbox=(message(f"m{n}", key),))


async def _settle(relay: OutboxRelay, store: SqlStore, clock: ManualClock, *others: OutboxRelay) -> None:
    """Drain (the clock moving a second at a time) until nothing is pending; bounded."""
    for _ in range(80):
        for r in (relay, *others):
            await r.drain()
        if not await store.pending_count():
            return
        clock.advance(1)
    raise AssertionError(f"{await store.pending_count()} rows still pending")


@pytest.mark.timeout(120)
async def test_hanging_publish_then_failure_with_grouped_commits_stays_bounded_and_ordered(
    make_store: Any,
) -> None:
    store: SqlStore = await make_store()
    clock = ManualClock(T0)
    gate = asyncio.Event()
    transport = Transport(failing=["m0", "m9"], gate=gate)
    relay = OutboxRelay(store, transport, clock, batch_size=4, max_handed=3)
    attach(store, relay)
    for n in range(4):
        await store.commit(_one(n, f"k{n % 3}"))
    stuck = asyncio.ensure_future(relay.run_once(claim=False))
    await transport.entered.wait()  # the wave (m0, m1, m2) hangs in the broker
    for n in range(4, 80, 2):
        await store.commit_many([_one(n, f"k{n % 3}"), _one(n + 1, f"k{(n + 1) % 3}")])
        assert relay.handed <= 3, relay.handed
        assert relay.overflow <= 3, relay.overflow
    gate.set()
    await stuck  # m0 failed: its key is held back, its handed rows given back to the claim
    await _settle(relay, store, clock)
    rank = {f"m{n}": n for n in range(80)}
    assert sorted(m.event_id for m in transport.published) == sorted(rank), "each row once"
    assert order_broken(transport.published, rank) == {}
    assert relay.handed == 0
    assert relay.overflow == 0


@pytest.mark.timeout(120)
async def test_two_processes_one_database_full_relays_failures_keep_key_order(
    make_store: Any,
) -> None:
    clock = ManualClock(T0)
    log: list[OutboxMessage] = []
    stores: list[SqlStore] = [await make_store(), await make_store()]
    relays = [
        OutboxRelay(
            s, Transport(failing=[f"m{n}" for n in (3, 10, 17)], log=log), clock, batch_size=3, max_handed=2
        )
        for s in stores
    ]
    for s, r in zip(stores, relays, strict=True):
        attach(s, r)
    for n in range(60):
        which = (n // 3) % 2  # runs of three commits per process
        await stores[which].commit(_one(n, f"k{n % 4}"))
        if n % 5 == 4:
            await relays[n % 2].run_once()
    await _settle(relays[0], stores[0], clock, relays[1])
    rank = {f"m{n}": n for n in range(60)}
    assert {m.event_id for m in log} == set(rank)
    assert order_broken(log, rank) == {}


@pytest.mark.timeout(120)
async def test_a_failure_after_a_long_publish_keeps_the_key_held_for_a_refused_row(make_store: Any) -> None:
    """Was a defect (found by a review): while a publish hung past the lease, a row of key K
    was refused by the full hand-off and held K back; then an older row of K in the hanging
    wave failed, and its hold, stamped from before the call (so already lapsed), replaced
    the refused row's. A later row of K, handed off once the relay had room, then went out
    before both. Holds now merge (the older row, the later end) and a failure's hold runs a
    lease from the answer."""
    store: SqlStore = await make_store()
    clock = ManualClock(T0)
    gate = asyncio.Event()
    transport = Transport(failing=["k1", "j1"], gate=gate)
    relay = OutboxRelay(store, transport, clock, batch_size=2, max_handed=3, base_backoff=1.0)
    # Attached without ``accepting``: every row past the bound is refused by the relay (as a
    # commit under way when it fills is, with serve's wiring).
    store.attach_relay(relay.hand_off, relay.clock)
    await store.commit(Change("hold-1", None, None, T0, outbox=(message("k1", "K"), message("j1", "J"))))
    await store.commit(Change("hold-2", None, None, T0, outbox=(message("j2", "J"),)))
    stuck = asyncio.ensure_future(relay.run_once(claim=False))  # the wave k1, j1 hangs
    await transport.entered.wait()
    clock.advance(20)
    await store.commit(Change("hold-3", None, None, T0, outbox=(message("m1", "M"), message("m2", "M"))))
    await store.commit(Change("hold-4", None, None, T0, outbox=(message("k2", "K"),)))
    assert relay.handed == 3  # k2 came when the relay was full: refused, it holds K back
    assert relay.overflow == 1
    clock.advance(15)  # the call answers 35 s after it began: both rows failed
    gate.set()
    await stuck
    await store.commit(Change("hold-5", None, None, T0, outbox=(message("k3", "K"),)))
    for _ in range(40):
        await relay.run_once()
        if not await store.pending_count():
            break
        clock.advance(1)
    rank = {"k1": 1, "j1": 2, "j2": 3, "m1": 4, "m2": 5, "k2": 6, "k3": 7}
    assert sorted(m.event_id for m in transport.published) == sorted(rank)
    assert order_broken(transport.published, rank) == {}


@pytest.mark.timeout(120)
async def test_a_row_held_back_in_a_one_statement_commit_is_never_this_relay_s_even_for_a_moment(
    pg: Any,
) -> None:
    """Was a defect (found by an attack): PostgreSQL writes a single change in one
    autocommit statement, and wrote the rows an older row of their key holds back leased to
    this relay, releasing them with a second statement. In between, a concurrent commit of
    the same key on the store's other writing lane read the held-back row as "the newest
    older row of my key is this relay's" and handed its own row off, which went out before
    the older rows of its key (another process's row, then the held-back one). The lease is
    now decided in the insert itself. A trigger that makes the release slow (pg_sleep)
    widened the one-round-trip window so that the test failed every time before."""
    process1: SqlStore = await open_store(pg.url, schema=pg.schema, upgrade=True)
    process2: SqlStore = await open_store(pg.url, schema=pg.schema, upgrade=False)
    try:
        schema = pg.schema
        await pg_execute(
            pg.url,
            f"""
            CREATE FUNCTION "{schema}".slow_release() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF OLD.event_id = 'b1' AND OLD.claimed_by IS NOT NULL AND NEW.claimed_by IS NULL
                 AND NEW.published_at IS NULL THEN
                PERFORM pg_sleep(1.5);
              END IF;
              RETURN NEW;
            END $$;
            CREATE TRIGGER slow_release BEFORE UPDATE ON "{schema}".outbox
              FOR EACH ROW EXECUTE FUNCTION "{schema}".slow_release();
            """,
        )
        clock = ManualClock(T0)
        log: list[OutboxMessage] = []  # both processes publish to one broker
        sent1, sent2 = Transport(log=log), Transport(log=log)
        relay1 = OutboxRelay(process1, sent1, clock)
        relay2 = OutboxRelay(process2, sent2, clock)
        attach(process1, relay1)
        attach(process2, relay2)
        # Process 2 wrote the first row of key K; its relay has it (not published yet).
        await process2.commit(Change("p2", None, None, T0, outbox=(message("a", "K"),)))
        assert relay2.handed == 1
        # Process 1: two units of work of key K at about the same time, on two lanes.
        first = asyncio.ensure_future(
            process1.commit(Change("p1-b1", None, None, T0, outbox=(message("b1", "K"),)))
        )
        await asyncio.sleep(0.5)  # b1 committed; the statement releasing it is running
        await asyncio.wait_for(
            process1.commit(Change("p1-b2", None, None, T0, outbox=(message("b2", "K"),))), 10
        )
        await first
        # Both relays run; process 1 first (its pass comes around first).
        await relay1.run_once()
        await relay2.run_once()
        for _ in range(5):
            await relay1.run_once()
            await relay2.run_once()
        assert await process1.pending_count() == 0
        seen = [m.event_id for m in log]
        assert seen == ["a", "b1", "b2"], f"key K went out as {seen}"
    finally:
        await process1.close()
        await process2.close()
