"""Found by an attack on the retention purge of the pipeline stores (memory, SQLite,
PostgreSQL).

Were defects (fixed; the tests failed before): a purge of a large in-memory inbox sorted
every expired entry on every round and never let the event loop run, freezing a service for
seconds; ``purge_expired`` with a naive ``now`` failed deep in a store (a ``TypeError`` on the
memory store, a ``StoreError`` blaming the database on the SQL ones) instead of saying so.

Held: a second store purging during live traffic with the hand-off relay (each run once,
nothing published twice, the re-send's row kept); two purgers racing on PostgreSQL; a fact
resolved at the cutoff stays a duplicate; migration 0006 down and up with data; a clock
behind the rows deletes nothing.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from pipeline_state_sql import (
    METADATA,
    VERSION_TABLE,
    SqlStore,
    alembic_config,
    create_engine,
    create_or_upgrade,
    current_revision,
    head_revision,
    open_store,
)
from sqlalchemy import Connection, event, inspect, text

from pipeline_state import InMemoryBus, InMemoryStore, ManualClock, OutboxRelay, PipelineService
from pipeline_state.ports import PurgeCutoffs, Purged, Retention, purge_expired
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

StoreMaker = Callable[[], Awaitable[SqlStore]]
DAY = 86_400.0


async def _counts(store: SqlStore) -> dict[str, int]:
    out = {}
    async with store.engine.connect() as conn:
        for table in ("inbox", "transitions", "runs", "outbox", "batches", "waiting"):
            out[table] = (await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()
    return out


# -----------------------------------------------------------------------------------------
# Was a defect: the memory store's purge freezes the event loop
# -----------------------------------------------------------------------------------------


@pytest.mark.timeout(120)
async def test_memory_purge_lets_the_event_loop_run_between_rounds() -> None:
    """Was a defect, fixed: ``InMemoryStore`` sorted every expired inbox entry on every round
    and ``purge_expired`` never gave the loop back between rounds, so with 300,000 expired
    entries one call froze a service (consumer heartbeats, relay, HTTP) for ~2.5 s, and
    ~19 s with 1,000,000. Now a round walks the inbox from its oldest entry and costs what
    it deletes, and other work runs between rounds."""
    store, clock = InMemoryStore(), ManualClock()
    service = PipelineService(store, clock=clock)
    env = HuleEduEnvelopes()
    await service.handle_message(*env.register("real", items=1))  # one real entry
    t0 = clock.now()
    # A long-lived memory serve's inbox: many processed event ids (as commits record them).
    inbox = store._inbox
    for i in range(300_000):
        inbox[f"e{i:07d}"] = ("huleedu.t", f"b{i % 1000}", "applied", t0 + timedelta(microseconds=i))
    clock.advance(31 * DAY)

    turns = 0
    done = asyncio.Event()

    async def other_work() -> None:  # the rest of a service: it needs the loop now and then
        nonlocal turns
        while not done.is_set():
            turns += 1
            await asyncio.sleep(0)

    worker = asyncio.create_task(other_work())
    await asyncio.sleep(0)
    before = turns
    purged = await purge_expired(store, Retention(), clock.now())
    during = turns - before
    done.set()
    await worker
    assert purged.inbox == 300_001  # in 61 rounds of 5,000: none left for a later call
    assert not store._inbox
    assert during >= 60, f"other work ran {during} times during the 61 rounds of one purge_expired call"


# -----------------------------------------------------------------------------------------
# Held: a purge by another store while units of work and the hand-off relay run
# -----------------------------------------------------------------------------------------


@pytest.mark.timeout(120)
async def test_purge_from_a_second_store_during_live_traffic(make_store: StoreMaker) -> None:
    store = await make_store()
    purger = await make_store()  # another process's store on the same database
    clock = ManualClock()
    service = PipelineService(store, clock=clock)
    bus = InMemoryBus()
    relay = OutboxRelay(store, bus, clock)
    store.attach_relay(relay.hand_off, clock)
    env = HuleEduEnvelopes()

    # One batch whose spellcheck phase waits for its outcome (deadline pending).
    ids = env.item_ids("waiting", 1)
    for delivery in (
        env.register("waiting", items=1),
        env.provisioned("waiting", ids),
        env.request("waiting", "nlp"),
    ):
        await service.handle_message(*delivery)
    await relay.drain()
    [command_msg] = bus.messages(Topic.SPELLCHECK.value)

    stop_relay, stop_purge = asyncio.Event(), asyncio.Event()
    relay_task = asyncio.create_task(relay.run(stop_relay, idle_seconds=0.01))
    purged_total = Purged()
    purge_errors: list[BaseException] = []
    # Everything published/processed/logged up to far in the future is purgeable.
    everything = PurgeCutoffs(
        published_before=clock.now() + timedelta(days=3650),
        processed_before=clock.now() + timedelta(days=3650),
        logged_before=clock.now() + timedelta(days=3650),
    )

    async def purge_loop() -> None:
        nonlocal purged_total
        while not stop_purge.is_set():
            try:
                purged_total += await purger.purge(everything, limit=7)
            except Exception as exc:
                purge_errors.append(exc)
            await asyncio.sleep(0)

    purge_task = asyncio.create_task(purge_loop())
    errors: list[BaseException] = []

    async def flow(n: int) -> None:
        b, corr = f"live{n}", str(uuid.uuid4())
        items = env.item_ids(b, 1)
        steps = [
            env.register(b, items=1),
            env.provisioned(b, items),
            env.request(b, "nlp", correlation_id=corr),
            env.outcome(b, "spellcheck", corr, processed=items),
            env.outcome(b, "nlp", corr, processed=items),
        ]
        for step in steps:
            try:
                await service.handle_message(*step)
                # A redelivery of an outcome right after (its inbox entry may be purged by
                # now): decided again at most, never a second completion.
                if step is steps[3]:
                    await service.handle_message(*step)
            except Exception as exc:
                errors.append(exc)
            await asyncio.sleep(0)

    await asyncio.gather(*(flow(n) for n in range(24)))
    await asyncio.sleep(0.2)
    stop_purge.set()
    await purge_task
    stop_relay.set()
    await relay_task
    await relay.drain()

    assert errors == [], errors
    assert purge_errors == [], purge_errors
    completions = bus.messages(Topic.PIPELINE_COMPLETED.value)
    per_batch = Counter(m.key for m in completions)
    assert per_batch == Counter({f"live{n}": 1 for n in range(24)}), per_batch
    published = Counter(m.event_id for m in bus.messages())
    assert [e for e, c in published.items() if c > 1] == []
    assert purged_total.inbox > 0
    assert purged_total.outbox > 0
    assert purged_total.transitions > 0
    assert (relay.handed, relay.unmarked) == (0, 0)
    # The waiting batch's command row survived every round: its re-send still goes out.
    assert [r.message.event_id for r in await store.outbox_rows([command_msg.event_id])] == [
        command_msg.event_id
    ]
    sent = bus.count()
    clock.advance(3600)
    [result] = await service.expire_overdue()
    assert result.decision is not None
    assert result.decision.resend == (command_msg.event_id,)
    await relay.drain()
    assert [m.event_id for m in bus.messages(since=sent)] == [command_msg.event_id]


# -----------------------------------------------------------------------------------------
# Held: two purgers at once on PostgreSQL
# -----------------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.timeout(120)
async def test_two_purgers_race_on_postgres(pg: Any) -> None:
    stores = [await open_store(pg.url, schema=pg.schema, upgrade=True) for _ in range(3)]
    try:
        writer = stores[0]
        async with writer.engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO inbox (event_id, topic, batch_id, result, processed_at) "
                    "SELECT 'ev' || g, 't', 'b' || (g % 50), 'applied', "
                    "timestamptz '2020-01-01' + g * interval '1 millisecond' FROM generate_series(1, 6000) g"
                )
            )
            await conn.execute(
                text(
                    "INSERT INTO transitions (batch_id, entity, name, trigger, source, dest, run_id, "
                    "event_id, correlation_id, at) "
                    "SELECT 'b' || (g % 50), 'batch', 'b', 'x', 'a', 'b', NULL, "
                    "'ev' || g, 'c', timestamptz '2020-01-01' + g * interval '1 millisecond' "
                    "FROM generate_series(1, 6000) g"
                )
            )
        clock = ManualClock()
        retention = Retention(published=DAY, inbox=DAY, transitions=DAY)

        async def run(store: SqlStore) -> Purged:
            total = Purged()
            for _ in range(5):
                total += await purge_expired(store, retention, clock.now(), rows_per_round=97)
            return total

        a, b = await asyncio.gather(run(stores[1]), run(stores[2]))
        total = a + b
        assert (total.inbox, total.transitions) == (6000, 6000), (a, b)
        counts = await _counts(writer)
        assert (counts["inbox"], counts["transitions"]) == (0, 0)
    finally:
        for store in stores:
            await store.close()


def _plan_with(store: SqlStore, setting: str) -> None:
    """Every new connection of ``store`` runs ``setting`` first."""

    @event.listens_for(store.engine.sync_engine, "connect")
    def _set(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(setting)
        cursor.close()


@pytest.mark.postgres
@pytest.mark.timeout(120)
async def test_purgers_planning_differently_never_deadlock_on_postgres(pg: Any) -> None:
    """Was a defect: purgers deleting ``WHERE key IN (SELECT ... LIMIT n)`` at once picked the
    same oldest rows, and two that locked them in different orders were killed by PostgreSQL
    with "deadlock detected" (seen in CI). Each purger now locks the rows it picks, skipping
    those another holds, so purgers share the work and never wait on each other."""
    stores = [await open_store(pg.url, schema=pg.schema, upgrade=True) for _ in range(9)]
    try:
        # Two sessions can plan the same DELETE differently (statistics change under
        # autovacuum between them), and so lock the same rows in different orders: half the
        # purgers here plan it as a merge join (event id order), half as a hash join (the
        # table's physical order).
        for number, store in enumerate(stores[1:]):
            _plan_with(store, "SET enable_hashjoin = off" if number % 2 else "SET enable_mergejoin = off")
            await store.engine.dispose()
        retention = Retention(published=DAY, inbox=DAY, transitions=DAY)
        cutoffs = retention.cutoffs(ManualClock().now())

        async def run(store: SqlStore) -> Purged:
            total = Purged()
            while True:
                purged = await store.purge(cutoffs, limit=400)
                if not (purged.inbox or purged.transitions):
                    return total
                total += purged

        for _ in range(10):
            async with stores[0].engine.begin() as conn:
                await conn.execute(
                    text(
                        "INSERT INTO inbox (event_id, topic, batch_id, result, processed_at) "
                        "SELECT 'ev' || g, 't', 'b' || (g % 50), 'applied', timestamptz '2020-01-01' "
                        "FROM generate_series(1, 8000) g"
                    )
                )
                await conn.execute(
                    text(
                        "INSERT INTO transitions (batch_id, entity, name, trigger, source, dest, "
                        "run_id, event_id, correlation_id, at) "
                        "SELECT 'b' || (g % 50), 'batch', 'b', 'x', 'a', 'b', NULL, "
                        "'ev' || g, 'c', timestamptz '2020-01-01' FROM generate_series(1, 8000) g"
                    )
                )
            parts = await asyncio.gather(*(run(store) for store in stores[1:]))
            total = sum(parts, Purged())
            assert (total.inbox, total.transitions) == (8000, 8000), parts
            counts = await _counts(stores[0])
            assert (counts["inbox"], counts["transitions"]) == (0, 0)
    finally:
        for store in stores:
            await store.close()


# -----------------------------------------------------------------------------------------
# Held: a waiting fact resolved right before a purge at its cutoff
# -----------------------------------------------------------------------------------------


@pytest.mark.timeout(120)
async def test_resolved_fact_purged_at_its_cutoff_stays_a_duplicate(make_store: StoreMaker) -> None:
    store = await make_store()
    purger = await make_store()
    clock = ManualClock()
    service = PipelineService(store, clock=clock)
    env = HuleEduEnvelopes()
    ids = env.item_ids("early", 1)
    provisioned = env.provisioned("early", ids)
    first = await service.handle_message(*provisioned)
    assert first.waiting == "batch_registration"
    retention = Retention(published=60, inbox=60, transitions=60)
    clock.advance(600)  # waits past the inbox retention (within the 15 min window)
    kept = await purge_expired(purger, retention, clock.now())
    assert kept.inbox == 0
    assert (await service.handle_message(*provisioned)).duplicate
    registered = await service.handle_message(*env.register("early", items=1))
    assert len(registered.resumed) == 1
    # A purge whose cutoff is exactly the resolution instant keeps the resolved entry.
    at_cutoff = await purger.purge(PurgeCutoffs(processed_before=clock.now(), logged_before=clock.now()))
    assert at_cutoff.inbox == 0
    assert (await service.handle_message(*provisioned)).duplicate
    entry = await store.inbox_entry(provisioned[1]["event_id"])
    assert entry is not None
    assert entry.result == "applied"


# -----------------------------------------------------------------------------------------
# Held: migration 0006 down and up with data
# -----------------------------------------------------------------------------------------


def _diff(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(
        conn, opts={"version_table": VERSION_TABLE, "compare_type": True, "compare_server_default": True}
    )
    return list(compare_metadata(context, METADATA))


def _downgrade(conn: Connection, revision: str) -> None:
    command.downgrade(alembic_config(connection=conn), revision)


def _indexes(conn: Connection) -> set[str]:
    return {ix["name"] for ix in inspect(conn).get_indexes("inbox")}


@pytest.mark.timeout(120)
async def test_migration_0006_down_and_up_with_data(database: Any) -> None:
    store = await open_store(database.url, schema=database.schema)
    clock = ManualClock()
    service = PipelineService(store, clock=clock)
    env = HuleEduEnvelopes()
    for n in range(5):
        await service.handle_message(*env.register(f"m{n}", items=1))
    before = await _counts(store)
    await store.close()

    engine = create_engine(database.url, schema=database.schema)
    try:
        async with engine.begin() as conn:
            if conn.dialect.name == "sqlite":
                await conn.exec_driver_sql("BEGIN IMMEDIATE")
            await conn.run_sync(_downgrade, "0005")
        assert await current_revision(engine) == "0005"
        async with engine.connect() as conn:
            assert "ix_inbox_processed_at" not in await conn.run_sync(_indexes)
        await create_or_upgrade(engine)
        assert await current_revision(engine) == head_revision()
        async with engine.connect() as conn:
            assert "ix_inbox_processed_at" in await conn.run_sync(_indexes)
            assert await conn.run_sync(_diff) == []
    finally:
        await engine.dispose()

    store = await open_store(database.url, schema=database.schema, upgrade=False)
    try:
        assert await _counts(store) == before
        clock.advance(31 * DAY)
        purged = await purge_expired(store, Retention(), clock.now())
        assert purged.inbox == before["inbox"] == 5
    finally:
        await store.close()


# -----------------------------------------------------------------------------------------
# Held: a clock behind the rows
# -----------------------------------------------------------------------------------------


@pytest.mark.timeout(120)
async def test_purge_with_a_clock_behind_the_rows_deletes_nothing(make_store: StoreMaker) -> None:
    early = ManualClock().now() - timedelta(days=400)
    for store in (await make_store(), InMemoryStore()):
        clock = ManualClock()
        service = PipelineService(store, clock=clock)
        env = HuleEduEnvelopes()
        registration = env.register("c1", items=1)
        await service.handle_message(*registration)
        tiny = Retention(published=1e-6, inbox=1e-6, transitions=1e-6)
        assert await purge_expired(store, tiny, early) == Purged()
        assert await store.is_processed(registration[1]["event_id"])
        assert await store.load("c1") is not None


# -----------------------------------------------------------------------------------------
# Was a defect: a naive ``now`` is not refused by purge_expired itself
# -----------------------------------------------------------------------------------------


@pytest.mark.timeout(120)
async def test_purge_expired_refuses_a_naive_now_clearly(make_store: StoreMaker) -> None:
    """Was a defect, fixed.

    Expected: ``purge_expired(store, retention, now)`` with a naive ``now`` (a
    ``datetime.now()`` without tz, an easy mistake in a service of one's own) raises one
    clear ``ValueError`` naming the naive time, the same on every store (its documented
    errors are ``ValueError`` and ``StoreUnavailableError``).

    Before the fix: the memory store raises a bare ``TypeError: can't compare offset-naive and
    offset-aware datetimes`` from inside ``_purge_inbox``; the SQL store raises
    ``StoreError: the database rejected an operation: (builtins.ValueError) naive
    datetime ...`` (blaming the database for a caller's mistake)."""
    raised: dict[str, str] = {}
    for name, store in (("memory", InMemoryStore()), ("sql", await make_store())):
        clock = ManualClock()
        await PipelineService(store, clock=clock).handle_message(*HuleEduEnvelopes().register("n1", items=1))
        naive = (clock.now() + timedelta(days=40)).replace(tzinfo=None)
        try:
            await purge_expired(store, Retention(), naive)
        except Exception as exc:
            raised[name] = f"{type(exc).__name__}: {exc}"
        else:
            raised[name] = "nothing raised"
    assert all(r.startswith("ValueError") and "naive" in r for r in raised.values()), raised
