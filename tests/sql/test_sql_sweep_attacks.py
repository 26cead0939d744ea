"""Found by an attack on the sweeps that unstick runs, on SQLite and PostgreSQL: deadlines next
to an unreadable batch, the sweep's limit, the waiting sweep, the stalled-run listing, parked
phase commands, clocks ahead, and a deadline sweep racing a worker's outcome on one
PostgreSQL store. The tests whose docstring says "Was a defect" failed before their fix; the
other held.

Time moves with ManualClock only (no sleeps)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pipeline_state_sql import SqlStore
from sqlalchemy import text

from pipeline_state import Catalog, InMemoryBus, ManualClock, OutboxRelay, PipelineService
from pipeline_state._service import ExpiredFact
from pipeline_state.errors import CorruptStateError
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.profile import huleedu_profile
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

from .conftest import StoreMaker

COMPLETED = Topic.PIPELINE_COMPLETED.value

CATALOG = Catalog.from_dict(
    {
        "pipelines": {
            "nlp": {
                "steps": [
                    {"name": "spellcheck", "deadline_seconds": 60},
                    {"name": "nlp", "depends_on": ["spellcheck"], "deadline_seconds": 60},
                ]
            }
        }
    }
)


def _service(store: SqlStore, clock: ManualClock, *, max_resends: int = 0, **kw: Any) -> PipelineService:
    return PipelineService(
        store, profile=huleedu_profile(catalog=CATALOG, max_resends=max_resends), clock=clock, **kw
    )


async def _start(service: PipelineService, clock: ManualClock, batch_id: str, *, items: int = 2) -> str:
    """Register, provision and request ``nlp``: a run with spellcheck active. Returns the
    run's correlation id."""
    env = HuleEduEnvelopes()
    ids = env.item_ids(batch_id, items)
    for delivery in (env.register(batch_id, items=items), env.provisioned(batch_id, ids)):
        await service.handle_message(*delivery)
    result = await service.handle_message(*env.request(batch_id, "nlp"))
    assert result.state is not None
    assert result.state.active_run is not None
    return result.state.active_run.correlation_id


async def _corrupt(store: SqlStore, batch_id: str) -> None:
    """Make ``batch_id``'s stored state unreadable (a schema number no release wrote)."""
    document = f'{{"schema": 99, "batch_id": "{batch_id}"}}'
    cast = "CAST(:doc AS JSONB)" if store.engine.dialect.name == "postgresql" else ":doc"
    async with store.engine.begin() as conn:
        await conn.execute(
            text(f"UPDATE batches SET state = {cast} WHERE batch_id = :id"), {"doc": document, "id": batch_id}
        )


async def _completions(store: SqlStore, batch_id: str) -> int:
    async with store.engine.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT COUNT(*) FROM outbox WHERE topic = :t AND key = :k"),
                {"t": COMPLETED, "k": batch_id},
            )
        ).scalar_one()
    return int(rows)


# -- deadlines next to unreadable batches: the sweep's limit ---------------------------------


async def test_unreadable_batches_take_no_slot_of_later_deadline_sweeps(
    make_store: StoreMaker,
) -> None:
    """Was a defect (fixed): two batches whose stored state is unreadable and one healthy
    batch, all overdue; the
    unreadable ones are the most overdue. ``expire_overdue(limit=2)`` logs and skips the
    unreadable ones - but they stay first in ``overdue_batches`` (earliest deadline first)
    and fill the page on every pass, so the healthy batch behind them is never swept: its
    run never times out, however many sweeps run. (The served sweeper calls it with the
    default limit, 1000: 1000 unreadable rows starve every other batch the same way.)

    Expected: a batch that cannot be swept does not hold a slot of every later sweep (skip
    past it: page on, or move it out of the overdue order); the healthy run completes."""
    store = await make_store()
    clock = ManualClock()
    service = _service(store, clock)
    await _start(service, clock, "a1")
    await _start(service, clock, "a2")
    clock.advance(1)
    await _start(service, clock, "h1")
    await _corrupt(store, "a1")
    await _corrupt(store, "a2")
    fresh = await make_store()
    sweeper = _service(fresh, clock)
    for _ in range(5):
        clock.advance(61)
        await sweeper.expire_overdue(limit=2)
    healthy = await fresh.load("h1")
    assert healthy is not None
    assert healthy.active_run is None, "the healthy run was never swept: its spellcheck is still active"
    assert await _completions(fresh, "h1") == 1


async def test_one_unreadable_batch_does_not_stop_the_deadline_sweep(make_store: StoreMaker) -> None:
    """Held: one unreadable batch among overdue healthy ones (default limit): every healthy
    run still times out and completes exactly once."""
    store = await make_store()
    clock = ManualClock()
    service = _service(store, clock)
    for batch_id in ("a0", "b1", "b2"):
        await _start(service, clock, batch_id)
    await _corrupt(store, "a0")
    fresh = await make_store()
    sweeper = _service(fresh, clock)
    for _ in range(3):
        clock.advance(61)
        await sweeper.expire_overdue()
    for batch_id in ("b1", "b2"):
        state = await fresh.load(batch_id)
        assert state is not None
        assert state.active_run is None
        assert await _completions(fresh, batch_id) == 1


# -- the waiting sweep next to an unreadable batch ---------------------------------------------


async def test_one_unreadable_batch_does_not_stop_the_waiting_sweep(make_store: StoreMaker) -> None:
    """Was a defect (fixed): batch ``a1`` runs ``nlp``; an ``nlp`` outcome arrives early
    (spellcheck still active)
    and waits for ``phase_dispatch:nlp``. Then ``a1``'s stored state becomes unreadable.
    An unrelated provisioning fact for ``ghost`` (a batch never registered) waits too and
    outlives the waiting window.

    ``sweep_waiting`` re-attempts the batches of the oldest facts first
    (``resume_waiting(a1)``), whose read raises CorruptStateError out of the whole sweep:
    nothing is dead-lettered, on this pass or any later one (the served sweeper logs
    "waiting sweep failed (retried next period)" for ever). One unreadable batch with a
    waiting fact thus stops expiry of every early fact of every batch, and the waiting set
    only grows. ``expire_overdue`` isolates a failing batch (``_ONE_BATCH``); the waiting
    sweep does not.

    Expected: the ``ghost`` fact is dead-lettered once; ``a1`` is logged and skipped."""
    store = await make_store()
    clock = ManualClock()
    service = _service(store, clock, waiting_window_seconds=60)
    env = HuleEduEnvelopes()
    corr = await _start(service, clock, "a1")
    early = await service.handle_message(*env.outcome("a1", "nlp", corr, processed=env.item_ids("a1", 2)))
    assert early.waiting == "phase_dispatch:nlp"
    ghost = env.provisioned("ghost", env.item_ids("ghost", 2))
    assert (await service.handle_message(*ghost)).waiting == "batch_registration"
    await _corrupt(store, "a1")
    fresh = await make_store()
    sweeper = _service(fresh, clock, waiting_window_seconds=60)
    dead: list[ExpiredFact] = []

    async def dead_letter(fact: ExpiredFact) -> None:
        dead.append(fact)

    errors: list[str] = []
    for _ in range(3):
        clock.advance(61)
        try:
            await sweeper.sweep_waiting(dead_letter)
        except CorruptStateError as exc:
            errors.append(str(exc))
    assert [d.fact.batch_id for d in dead if d.fact.batch_id == "ghost"] == ["ghost"], (
        f"the ghost fact was never dead-lettered; every sweep raised: {errors}"
    )


# -- the stalled-run listing next to an unreadable batch ---------------------------------------


async def test_one_unreadable_processing_batch_hides_no_stalled_run(
    make_store: StoreMaker,
) -> None:
    """Was a defect (fixed): three runs stalled (no progress for an hour, deadlines opted
    out: a silent worker
    blocks its batch until an operator acts, and ``runs stalled`` is how the operator finds
    them). One of the batches has an unreadable stored state. ``SqlStore.stalled_runs``
    decodes every row of the page and the first undecodable one raises CorruptStateError:
    the operator sees no stalled run at all - neither the two healthy ones nor the corrupt
    one that most needs attention.

    Expected: the healthy stalled runs are listed (and the unreadable batch is reported, not
    allowed to hide the others)."""
    store = await make_store()
    clock = ManualClock()
    profile = huleedu_profile(catalog=CATALOG, default_deadline_seconds=None, deadlines={"spellcheck": None})
    service = PipelineService(store, profile=profile, clock=clock)
    for batch_id in ("s1", "s2", "s3"):
        await _start(service, clock, batch_id)
    await _corrupt(store, "s2")
    clock.advance(2 * 3600)
    fresh = await make_store()
    try:
        stalled = await fresh.stalled_runs(clock.now(), 3600)
    except CorruptStateError as exc:
        pytest.fail(f"stalled_runs raised for the whole listing: {exc}")
    assert {"s1", "s3"} <= {s.batch_id for s in stalled}


# -- a parked phase command (SQL) ---------------------------------------------------------------


async def test_parked_phase_command_is_listed_and_the_deadline_unparks_it(
    make_store: StoreMaker,
) -> None:
    """Held: the bus refuses the spellcheck command until the relay parks it. ``stalled_runs``
    lists the run with its parked command; the deadline re-sends it (unparks it, same event
    id); with the bus back it goes out once per send, and with no answer the run completes
    once."""
    store = await make_store()
    clock = ManualClock()
    service = _service(store, clock, max_resends=1)
    bus = InMemoryBus()
    relay = OutboxRelay(store, bus, clock, max_attempts=1)
    bus.available = False
    await _start(service, clock, "p1")
    for _ in range(5):
        await relay.drain()
    parked = [r for r in await store.parked() if r.message.topic == Topic.SPELLCHECK.value]
    assert len(parked) == 1
    command_id = parked[0].message.event_id
    clock.advance(59)
    stalled = await store.stalled_runs(clock.now(), 30)
    assert [s.batch_id for s in stalled] == ["p1"]
    assert command_id in [r.message.event_id for r in stalled[0].parked]
    bus.available = True
    clock.advance(1)
    await service.expire_overdue()
    await relay.drain()
    assert [m.event_id for m in bus.messages(Topic.SPELLCHECK.value)] == [command_id]
    clock.advance(60)
    await service.expire_overdue()
    await relay.drain()
    done = [m.value["data"]["final_status"] for m in bus.messages(COMPLETED)]
    assert done == ["failed_critically"]
    assert await _completions(store, "p1") == 1


# -- the deadline sweep racing the worker's outcome on one PostgreSQL store ----------------------


@pytest.mark.postgres
@pytest.mark.parametrize("round_", range(4))
async def test_pg_sweep_racing_the_final_outcome_completes_once(pg_store: SqlStore, round_: int) -> None:
    """Held: two services on one PostgreSQL store. The nlp phase is at its deadline
    (no re-sends left) when the worker's outcome arrives: service A sweeps while service B
    applies the outcome, concurrently. Exactly one of them wins the phase: one completion
    event, the phase ends either completed or failed with ``timeout``, the batch is ready."""
    clock = ManualClock()
    a = _service(pg_store, clock)
    b = _service(pg_store, clock)
    env = HuleEduEnvelopes()
    batch_id = f"r{round_}"
    corr = await _start(a, clock, batch_id)
    ids = env.item_ids(batch_id, 2)
    await b.handle_message(*env.outcome(batch_id, "spellcheck", corr, processed=ids))
    clock.advance(60)
    outcome = env.outcome(batch_id, "nlp", corr, processed=ids)
    results = await asyncio.gather(a.expire_overdue(), b.handle_message(*outcome), return_exceptions=True)
    assert not [r for r in results if isinstance(r, BaseException)], results
    assert await _completions(pg_store, batch_id) == 1
    state = await a.get_batch(batch_id)
    assert state.active_run is None
    assert state.status.value == "ready_for_pipeline_execution"
    nlp = state.history[-1].phase("nlp")
    assert nlp is not None
    assert nlp.status.value in {"completed_successfully", "failed"}
    if nlp.status.value == "failed":
        assert nlp.error == "timeout"
    # The loser's message changes nothing on a retry.
    await b.handle_message(*outcome)
    clock.advance(3600)
    assert await a.expire_overdue() == []
    assert await _completions(pg_store, batch_id) == 1


@pytest.mark.postgres
async def test_pg_two_sweepers_and_outcomes_race_each_run_completes_once(pg: Any) -> None:
    """Held: three services on one PostgreSQL schema (each its own store/engine): two
    sweep deadlines (one re-send left) while the third applies worker outcomes, all
    concurrently, over four batches and several deadline periods. Every run completes
    exactly once and no batch is left processing."""
    from pipeline_state_sql import open_store

    stores = [await open_store(pg.url, schema=pg.schema, upgrade=(i == 0)) for i in range(3)]
    try:
        clock = ManualClock()
        a, b, c = (_service(s, clock, max_resends=1) for s in stores)
        env = HuleEduEnvelopes()
        corrs = {f"q{n}": await _start(a, clock, f"q{n}") for n in range(4)}
        for step in range(4):
            clock.advance(60)
            work: list[Any] = [a.expire_overdue(), b.expire_overdue()]
            for batch_id, corr in corrs.items():
                ids = env.item_ids(batch_id, 2)
                phase = "spellcheck" if step < 2 else "nlp"
                if (int(batch_id[1:]) + step) % 2 == 0:
                    work.append(c.handle_message(*env.outcome(batch_id, phase, corr, processed=ids)))
            results = await asyncio.gather(*work, return_exceptions=True)
            assert not [r for r in results if isinstance(r, BaseException)], results
        clock.advance(3600)
        await a.expire_overdue()
        for batch_id in corrs:
            assert await _completions(stores[0], batch_id) == 1, batch_id
            state = await a.get_batch(batch_id)
            assert state.active_run is None
            assert state.status.value == "ready_for_pipeline_execution"
    finally:
        for s in stores:
            await s.close()


# -- a process whose clock was a year ahead stamped the fact / the deadline -----------------------

_TRUE = ManualClock().now()
_AHEAD_SECONDS = 365 * 86400


async def test_an_early_fact_stamped_by_a_clock_ahead_expires(make_store: StoreMaker) -> None:
    """Was a defect (fixed): process A, whose clock is a year ahead, receives a provisioning
    fact for ``ghost`` (a
    batch that never registers) and keeps it waiting, stamped ``arrived_at`` = a year from
    now. Process B (true clock) runs the waiting sweep every hour for two days: the fact is
    never dead-lettered (``expired_waiting`` lists only facts with ``arrived_at < now -
    window``), and it would wait a year. Every other time the library stores - leases,
    retry due times, a batch's ``updated_at`` for ``stalled_runs`` - counts as passed once
    it is more than ``CLOCK_STEP_HORIZON_SECONDS`` (an hour) ahead of the reader's clock
    (tests/sql/test_sql_clock_steps.py); the waiting set does not, so the promised bounded
    window ("only a fact still waiting after a bounded window is dead-lettered") is a year.

    Expected: a fact stamped more than the horizon ahead counts as expired (dead-lettered
    within a sweep or two), exactly once."""
    from datetime import timedelta

    ahead = ManualClock(_TRUE + timedelta(seconds=_AHEAD_SECONDS))
    clock = ManualClock(_TRUE)
    a = _service(await make_store(), ahead, waiting_window_seconds=900)
    b = _service(await make_store(), clock, waiting_window_seconds=900)
    env = HuleEduEnvelopes()
    fact = env.provisioned("ghost", env.item_ids("ghost", 2))
    assert (await a.handle_message(*fact)).waiting == "batch_registration"
    dead: list[ExpiredFact] = []

    async def dead_letter(expired: ExpiredFact) -> None:
        dead.append(expired)

    for _ in range(48):
        clock.advance(3600)
        await b.sweep_waiting(dead_letter)
    assert [d.fact.batch_id for d in dead] == ["ghost"], (
        f"after two days of sweeps the fact still waits ({await b.waiting_count()} waiting)"
    )


async def test_a_phase_deadline_stamped_by_a_clock_ahead_fires(
    make_store: StoreMaker,
) -> None:
    """Was a defect (fixed): process A, whose clock is a year ahead, accepts a run:
    spellcheck's deadline is set to
    a year and a minute from now. The worker never answers. Process B (true clock) sweeps
    every ten minutes for two days: the phase is never re-sent nor timed out, the batch
    stays ``processing_pipelines`` - for a year. The stalled-run view lists it (that was
    fixed: a change stamped past the horizon counts as stalled), but the contract's "no run
    blocks its batch for ever" rests on the sweeper, which compares ``deadline_at <= now``
    without the ``CLOCK_STEP_HORIZON_SECONDS`` rule that leases and retry due times follow.

    Expected: a deadline further ahead than the phase's own deadline span (or than the
    horizon) counts as passed, so the run is re-sent / timed out and completes once."""
    from datetime import timedelta

    ahead = ManualClock(_TRUE + timedelta(seconds=_AHEAD_SECONDS))
    clock = ManualClock(_TRUE)
    a = _service(await make_store(), ahead, max_resends=1)
    store_b = await make_store()
    b = _service(store_b, clock, max_resends=1)
    await _start(a, ahead, "b1")
    for _ in range(2 * 24 * 6):
        clock.advance(600)
        await b.expire_overdue()
    state = await store_b.load("b1")
    assert state is not None
    run = state.active_run
    assert run is None, (
        f"two days later the run is still active; spellcheck deadline_at={run.phases[0].deadline_at}"
    )
    assert await _completions(store_b, "b1") == 1
