"""Found by an attack on PostgreSQL concurrency in the SQL store (after CI met a deadlock
between two purgers): two sessions doing legitimate work at once must never be killed by
PostgreSQL ("deadlock detected", serialization failure) with an error nobody retries (a
plain ``StoreError``), nor hang on a lock. The first two tests were defects (fixed; each
failed before), the others held.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pipeline_state_sql import SqlStore, open_store
from pipeline_state_sql.results_store import SqlResultsStore, open_results_store
from sqlalchemy import event, text

from pipeline_state import ManualClock, PipelineService
from pipeline_state.errors import ConcurrencyConflictError, StoreError
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

# Plans two sessions may choose for the same DELETE (statistics, the cutoff's selectivity,
# per-role settings): an index scan in index order, or a sequential scan in heap order.
INDEX_ORDER = {"enable_seqscan": "off", "enable_bitmapscan": "off"}
HEAP_ORDER = {"enable_indexscan": "off", "enable_bitmapscan": "off", "enable_indexonlyscan": "off"}


def _planned(settings: dict[str, str]) -> dict[str, Any]:
    return {"connect_args": {"server_settings": dict(settings)}}


def _not_retryable(errors: list[BaseException]) -> list[str]:
    return [
        f"{type(e).__name__}: {e}"
        for e in errors
        if isinstance(e, StoreError) and not isinstance(e, ConcurrencyConflictError)
    ]


# -----------------------------------------------------------------------------------------
# The results store's inbox purge: a plain DELETE (no SKIP LOCKED)
# -----------------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.timeout(120)
async def test_results_inbox_purgers_planning_differently_never_deadlock(pg: Any) -> None:
    """Was a defect: two processes purging the results inbox at once, planning the DELETE
    differently (one walks ix_results_inbox_event_type_processed_at, one the heap), locked
    the same rows in opposite orders and PostgreSQL killed one with "deadlock detected" (a
    plain StoreError, not retried). ``purge_inbox`` now goes in rounds whose rows are locked
    as they are picked, skipping those the other holds (as the pipeline purge does)."""
    setup = await open_results_store(pg.url, schema=pg.schema, upgrade=True)
    by_index = await open_results_store(pg.url, schema=pg.schema, upgrade=False, **_planned(INDEX_ORDER))
    by_heap = await open_results_store(pg.url, schema=pg.schema, upgrade=False, **_planned(HEAP_ORDER))
    errors: list[BaseException] = []
    try:
        for _ in range(4):
            async with setup.engine.begin() as conn:
                # processed_at falls as the heap grows: index order is the heap's reverse.
                await conn.execute(
                    text(
                        "INSERT INTO results_inbox (event_id, event_type, batch_id, result, processed_at) "
                        "SELECT 'ev' || g, 't', 'b' || (g % 50), 'applied', "
                        "timestamptz '2020-01-01' - g * interval '1 second' FROM generate_series(1, 20000) g"
                    )
                )
            cutoffs = {"t": datetime(2021, 1, 1, tzinfo=UTC)}

            async def purge(store: SqlResultsStore, cutoffs: dict[str, datetime] = cutoffs) -> int:
                try:
                    return await store.purge_inbox(cutoffs)
                except StoreError as exc:
                    errors.append(exc)
                    return 0

            counts = await asyncio.gather(purge(by_index), purge(by_heap))
            if not errors:
                assert sum(counts) == 20000, counts
            # Whatever happened, clear the table for the next round.
            async with setup.engine.begin() as conn:
                await conn.execute(text("DELETE FROM results_inbox"))
            if errors:
                break
        assert _not_retryable(errors) == [], "purge_inbox was killed by PostgreSQL"
        assert errors == []
    finally:
        for store in (setup, by_index, by_heap):
            await store.close()


# -----------------------------------------------------------------------------------------
# The pipeline store's purge_published: a plain DELETE (no SKIP LOCKED)
# -----------------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.timeout(120)
async def test_purge_published_purgers_with_different_settings(pg: Any) -> None:
    """``SqlStore.purge_published`` is still a plain ``DELETE ... WHERE published_at <
    :before`` (no SKIP LOCKED). Held here only because no index serves that condition: both
    sessions walk the heap in the same order even with index scans preferred (ids and
    event ids laid out against the heap). (A table past a quarter of shared_buffers would
    be scanned with synchronize_seqscans, from different start points: not tried here.)"""
    setup = await open_store(pg.url, schema=pg.schema, upgrade=True)
    by_index = await open_store(pg.url, schema=pg.schema, upgrade=False, **_planned(INDEX_ORDER))
    by_heap = await open_store(pg.url, schema=pg.schema, upgrade=False, **_planned(HEAP_ORDER))
    errors: list[BaseException] = []
    try:
        for _ in range(4):
            async with setup.engine.begin() as conn:
                # Ids and event ids fall as the heap grows: any index's order is the heap's reverse.
                await conn.execute(
                    text(
                        "INSERT INTO outbox (id, event_id, topic, key, envelope, created_at, published_at, "
                        "attempts, parked, available_at) "
                        "SELECT 1000000 - g, 'ev' || lpad((1000000 - g)::text, 8, '0'), 't', NULL, '{}', "
                        "timestamptz '2020-01-01', timestamptz '2020-01-02', 1, false, "
                        "timestamptz '2020-01-01' FROM generate_series(1, 20000) g"
                    )
                )
            before = datetime(2021, 1, 1, tzinfo=UTC)

            async def purge(store: SqlStore, before: datetime = before) -> int:
                try:
                    return await store.purge_published(before)
                except StoreError as exc:
                    errors.append(exc)
                    return 0

            await asyncio.gather(purge(by_index), purge(by_heap))
            async with setup.engine.begin() as conn:
                await conn.execute(text("DELETE FROM outbox"))
            if errors:
                break
        assert _not_retryable(errors) == [], "purge_published was killed by PostgreSQL"
        assert errors == []
    finally:
        for store in (setup, by_index, by_heap):
            await store.close()


# -----------------------------------------------------------------------------------------
# forget_waiting (the waiting sweep's dead-lettering) against the fact being resumed
# -----------------------------------------------------------------------------------------


def _pause_before(store: Any, starts: str, hook: Any) -> None:
    """Run ``hook()`` (blocking, in the thread that sends it) before the first statement of
    ``store`` that starts with ``starts``. Only timing: every statement is sent unchanged."""
    fired = threading.Event()

    @event.listens_for(store.engine.sync_engine, "before_cursor_execute")
    def _before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not fired.is_set() and statement.lstrip().upper().startswith(starts):
            fired.set()
            hook()


@pytest.mark.postgres
@pytest.mark.timeout(120)
async def test_forget_waiting_racing_a_resume_of_the_same_fact_never_deadlocks(pg: Any) -> None:
    """Was a defect (fixed: ``forget_waiting`` now locks the facts' inbox rows first, in the
    unit of work's order). The waiting sweep dead-letters an expired fact (``forget_waiting``: ``DELETE FROM
    waiting`` then ``UPDATE inbox``) while another process's registration resumes the same
    fact (its unit of work: ``UPDATE inbox`` of the fact's row, then ``DELETE FROM
    waiting``). The two lock the same two rows in opposite orders. In the interleaving
    sweep-delete / resume-update / sweep-update / resume-delete, PostgreSQL kills the
    session that waited first, the sweeper's, and ``forget_waiting`` raises a plain
    ``StoreError: ... deadlock detected`` (no batch id is passed to ``translated()``, so it is
    not even a ConcurrencyConflictError, and nothing retries it). The statements are sent
    unchanged; the test only holds each session at one point for a moment."""
    setup = await open_store(pg.url, schema=pg.schema, upgrade=True)
    sweeper_store = await open_store(pg.url, schema=pg.schema, upgrade=False)
    clock = ManualClock()
    env = HuleEduEnvelopes()
    try:
        service = PipelineService(setup, clock=clock)
        items = env.item_ids("w1", 1)
        early = env.provisioned("w1", items)
        assert (await service.handle_message(*early)).waiting == "batch_registration"
        fact_id = early[1]["event_id"]
        registration = env.register("w1", items=1)

        sweeper_between = threading.Event()  # the sweeper deleted the waiting row
        resume_at_delete = threading.Event()  # the resume updated the inbox row
        _pause_before(
            sweeper_store,
            "UPDATE INBOX",
            lambda: (sweeper_between.set(), resume_at_delete.wait(3)),
        )
        resumed: dict[str, Any] = {}

        def registrar() -> None:
            async def run() -> None:
                store = await open_store(pg.url, schema=pg.schema, upgrade=False)
                try:
                    _pause_before(
                        store, "DELETE FROM WAITING", lambda: (resume_at_delete.set(), time.sleep(0.5))
                    )
                    deadline = time.monotonic() + 10
                    while not sweeper_between.is_set() and time.monotonic() < deadline:  # noqa: ASYNC110 (a thread's Event)
                        await asyncio.sleep(0.01)
                    result = await PipelineService(store, clock=clock).handle_message(*registration)
                    resumed["result"] = result
                except BaseException as exc:
                    resumed["error"] = exc
                finally:
                    await store.close()

            asyncio.run(run())

        thread = threading.Thread(target=registrar)
        thread.start()
        sweeper = PipelineService(sweeper_store, clock=clock)
        forget_error: BaseException | None = None
        try:
            await sweeper.forget_waiting([fact_id])
        except StoreError as exc:
            forget_error = exc
        await asyncio.to_thread(thread.join, 30)
        assert not thread.is_alive()
        assert "error" not in resumed, resumed
        assert resume_at_delete.is_set(), "the interleaving did not happen"
        # Either outcome is fine (dead-lettered, or resumed and then nothing to forget), but
        # the sweeper must not be killed by PostgreSQL: a plain StoreError nobody retries
        # (and neither the service's forget_waiting nor sweep_waiting retries anything).
        assert forget_error is None, f"{type(forget_error).__name__}: {forget_error}"
        assert await setup.count_waiting() == 0
    finally:
        await setup.close()
        await sweeper_store.close()


# -----------------------------------------------------------------------------------------
# Group commits of the same batches in different orders, from several stores
# -----------------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.timeout(120)
async def test_group_commits_in_opposite_orders_never_fail(pg: Any) -> None:
    """Four processes each handle_many the same batches' messages in their own order (the
    commit_many of one locks the batch rows in an order the other reverses). A deadlock
    there is a ConcurrencyConflictError (retried one by one), never a failure."""

    setup = await open_store(pg.url, schema=pg.schema, upgrade=True)
    plans = [INDEX_ORDER, HEAP_ORDER, {"enable_hashjoin": "off", "enable_mergejoin": "off"}, {}]
    stores = [await open_store(pg.url, schema=pg.schema, upgrade=False, **_planned(p)) for p in plans]
    clock = ManualClock()
    env = HuleEduEnvelopes()
    try:
        service = PipelineService(setup, clock=clock)
        batches = [f"g{n}" for n in range(40)]
        for b in batches:
            await service.handle_message(*env.register(b, items=1))
            await service.handle_message(*env.provisioned(b, env.item_ids(b, 1)))
        rng = random.Random(7)
        errors: list[BaseException] = []

        async def worker(store: SqlStore, round_: int) -> list[Any]:
            order = batches[:]
            rng.shuffle(order)
            messages = [env.request(b, "nlp") for b in order]
            try:
                return await PipelineService(store, clock=clock).handle_many(messages)
            except BaseException as exc:
                errors.append(exc)
                return []

        for round_ in range(3):
            outcomes = await asyncio.gather(*(worker(s, round_) for s in stores))
            failed = [r for out in outcomes for r in out if isinstance(r, BaseException)]
            assert failed == [], failed
            assert errors == [], errors

        # New batches registered by all four at once, each in its own order: the inserts of
        # the batch rows (ON CONFLICT DO NOTHING) wait on each other's uncommitted keys.
        fresh = [f"n{n}" for n in range(40)]

        async def registrar(store: SqlStore) -> list[Any]:
            order = fresh[:]
            rng.shuffle(order)
            try:
                return await PipelineService(store, clock=clock).handle_many(
                    [env.register(b, items=1) for b in order]
                )
            except BaseException as exc:
                errors.append(exc)
                return []

        for _ in range(2):
            outcomes = await asyncio.gather(*(registrar(s) for s in stores))
            failed = [r for out in outcomes for r in out if isinstance(r, BaseException)]
            assert failed == [], failed
            assert errors == [], errors
            fresh = [f"{b}x" for b in fresh]
        for b in batches:
            state = await setup.load(b)
            assert state is not None, b
            assert state.active_run is not None, b
    finally:
        await setup.close()
        for store in stores:
            await store.close()


# -----------------------------------------------------------------------------------------
# Three processes with hand-off relays, a purger and claims all at once
# -----------------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.timeout(120)
async def test_three_relaying_stores_and_a_purger_at_once(pg: Any) -> None:
    """Three stores (processes), each with its relay attached (units of work insert leased
    rows, release held-back ones, relays claim, mark and release), their flows interleaved on
    the same batches' keys, and a fourth store purging everything purgeable in a loop: no
    operation fails, each run completes once, nothing is published twice."""
    from collections import Counter

    from pipeline_state import InMemoryBus, OutboxRelay
    from pipeline_state.ports import PurgeCutoffs, Purged
    from pipeline_state.profiles.huleedu.events import Topic

    setup = await open_store(pg.url, schema=pg.schema, upgrade=True)
    stores = [await open_store(pg.url, schema=pg.schema, upgrade=False) for _ in range(3)]
    purger = await open_store(pg.url, schema=pg.schema, upgrade=False, **_planned(INDEX_ORDER))
    clock = ManualClock()
    bus = InMemoryBus()
    env = HuleEduEnvelopes()
    relays = [OutboxRelay(s, bus, clock) for s in stores]
    for store, relay in zip(stores, relays, strict=True):
        store.attach_relay(relay.hand_off, clock)
    services = [PipelineService(s, clock=clock) for s in stores]
    stop_relays, stop_purge = asyncio.Event(), asyncio.Event()
    relay_tasks = [asyncio.create_task(r.run(stop_relays, idle_seconds=0.01)) for r in relays]
    far = clock.now() + timedelta(days=3650)
    # The inbox is kept: a redelivery after its entry is purged is another matter (retention).
    everything = PurgeCutoffs(published_before=far, logged_before=far)
    purge_errors: list[BaseException] = []
    purged = Purged()

    async def purge_loop() -> None:
        nonlocal purged
        while not stop_purge.is_set():
            try:
                purged += await purger.purge(everything, limit=11)
            except Exception as exc:
                purge_errors.append(exc)
            await asyncio.sleep(0)

    purge_task = asyncio.create_task(purge_loop())
    errors: list[BaseException] = []
    try:

        async def flow(n: int) -> None:
            import uuid

            b, corr = f"r{n}", str(uuid.uuid4())
            items = env.item_ids(b, 2)
            steps = [
                env.register(b, items=2),
                env.provisioned(b, items),
                env.request(b, "nlp", correlation_id=corr),
                env.outcome(b, "spellcheck", corr, processed=items),
                env.outcome(b, "nlp", corr, processed=items),
            ]
            for i, step in enumerate(steps):
                try:  # each step by another process, and delivered twice
                    await services[(n + i) % 3].handle_message(*step)
                    await services[(n + i + 1) % 3].handle_message(*step)
                except Exception as exc:
                    errors.append(exc)
                await asyncio.sleep(0)

        await asyncio.gather(*(flow(n) for n in range(18)))
        await asyncio.sleep(0.2)
    finally:
        stop_purge.set()
        await purge_task
        stop_relays.set()
        await asyncio.gather(*relay_tasks, return_exceptions=True)
    try:
        for relay in relays:
            await relay.drain()
        assert errors == [], errors
        assert purge_errors == [], purge_errors
        per_batch = Counter(m.key for m in bus.messages(Topic.PIPELINE_COMPLETED.value))
        assert per_batch == Counter({f"r{n}": 1 for n in range(18)}), per_batch
        published = Counter(m.event_id for m in bus.messages())
        assert [e for e, c in published.items() if c > 1] == []
        assert purged.outbox > 0
    finally:
        for store in (setup, purger, *stores):
            await store.close()


# -----------------------------------------------------------------------------------------
# The same delivery handled by two processes at once (a redelivery after a rebalance)
# -----------------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.timeout(120)
async def test_same_delivery_in_two_processes_at_once(pg: Any) -> None:
    """Two stores handle the very same delivery at the same moment, for deliveries whose
    change writes no new state (an unknown batch's request, a request denied while a run
    is active, an early fact that waits) and for ordinary ones: one applies, the other is a
    duplicate; never a StoreError (the outbox's unique event id must not surface)."""
    setup = await open_store(pg.url, schema=pg.schema, upgrade=True)
    a = await open_store(pg.url, schema=pg.schema, upgrade=False)
    b = await open_store(pg.url, schema=pg.schema, upgrade=False)
    clock = ManualClock()
    env = HuleEduEnvelopes()
    try:
        first, second = PipelineService(a, clock=clock), PipelineService(b, clock=clock)
        running = "busy"
        await first.handle_message(*env.register(running, items=1))
        await first.handle_message(*env.provisioned(running, env.item_ids(running, 1)))
        await first.handle_message(*env.request(running, "nlp"))
        failures: list[str] = []
        for n in range(20):
            deliveries = [
                env.request(f"ghost{n}", "nlp"),  # no such batch: denied, no state
                env.request(running, "nlp"),  # a run is active: denied
                env.provisioned(f"early{n}", env.item_ids(f"early{n}", 1)),  # waits
                env.register(f"new{n}", items=1),  # a new batch row
            ]
            for delivery in deliveries:
                out = await asyncio.gather(
                    first.handle_message(*delivery), second.handle_message(*delivery), return_exceptions=True
                )
                for result in out:
                    if isinstance(result, BaseException):
                        failures.append(f"{delivery[0]}: {type(result).__name__}: {result}")
                done = [r for r in out if not isinstance(r, BaseException)]
                if len(done) == 2 and all(r.duplicate for r in done):
                    failures.append(f"{delivery[0]}: both duplicates")
        assert failures == [], failures[:5]
    finally:
        for store in (setup, a, b):
            await store.close()
