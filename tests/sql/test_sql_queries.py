"""Read queries on the SQL store: history, runs by completion time, listing, outbox depth."""

from __future__ import annotations

from datetime import timedelta

import attrs
from pipeline_state_sql import SqlStore
from pipeline_state_sql.schema import BATCHES, OUTBOX
from sqlalchemy import select

from pipeline_state import BatchStatus
from pipeline_state._model import Past
from pipeline_state.ports import Change, RunStatus
from pipeline_state.testing import T0, make_state, message
from pipeline_state.testing.contract import archived_run


async def _archive(store: SqlStore, batch_id: str, completed: list[int]) -> None:
    """A batch whose history holds one run completed at T0+s for each s in ``completed``."""
    template = archived_run(batch_id)
    runs = tuple(
        attrs.evolve(template, run_id=f"{batch_id}-r{i}", completed_at=T0 + timedelta(seconds=s))
        for i, s in enumerate(completed)
    )
    state = attrs.evolve(make_state(batch_id), past=Past.of(runs[:1]))
    await store.commit(Change(batch_id, None, state, T0, archived=runs[:1]))
    for version, run in enumerate(runs[1:], start=2):
        state = attrs.evolve(state, version=version, past=state.past.after(run))
        await store.commit(Change(batch_id, version - 1, state, T0, archived=(run,)))


async def test_history_and_runs_by_completion_time(sql_store: SqlStore) -> None:
    await _archive(sql_store, "b1", [10, 30, 50])
    await _archive(sql_store, "b2", [20, 30])
    assert [r.run_id for r in await sql_store.history("b1")] == ["b1-r0", "b1-r1", "b1-r2"]
    assert await sql_store.history("unknown") == []
    window = await sql_store.runs_completed_between(T0 + timedelta(seconds=20), T0 + timedelta(seconds=50))
    # [start, end): 20 and both 30s are in, 50 is out; ties ordered by batch then position.
    assert [(r.batch_id, r.seq, r.run.run_id) for r in window] == [
        ("b2", 0, "b2-r0"),
        ("b1", 1, "b1-r1"),
        ("b2", 1, "b2-r1"),
    ]
    assert all(r.run.status is RunStatus.FAILED_CRITICALLY for r in window)
    limited = await sql_store.runs_completed_between(T0, T0 + timedelta(hours=1), limit=2)
    assert [r.run.run_id for r in limited] == ["b1-r0", "b2-r0"]


async def test_listing_and_outbox_depth(sql_store: SqlStore) -> None:
    for i in range(5):
        status = BatchStatus.CANCELLED if i % 2 else BatchStatus.READY_FOR_PIPELINE_EXECUTION
        await sql_store.commit(
            Change(f"b{i}", None, make_state(f"b{i}", status=status), T0, outbox=(message(f"m{i}", f"b{i}"),))
        )
    ready = await sql_store.list_batches(BatchStatus.READY_FOR_PIPELINE_EXECUTION, limit=2, offset=1)
    assert [s.batch_id for s in ready] == ["b2", "b4"]
    assert await sql_store.pending_count() == 5
    rows = await sql_store.claim(T0, limit=2)
    await sql_store.mark_published([rows[0].id], T0)
    await sql_store.mark_failed(rows[1].id, "bad", T0, retry_at=T0, park=True)
    assert await sql_store.pending_count() == 3
    assert [r.message.event_id for r in await sql_store.parked()] == ["m1"]


async def test_listing_by_a_renamed_status_finds_rows_of_its_stored_value(sql_store: SqlStore) -> None:
    # The status column holds the value rows have always held ("awaiting_student_validation"
    # for the engine's awaiting_group_validation); listing by the engine's status finds them.
    waiting = BatchStatus.AWAITING_GROUP_VALIDATION
    await sql_store.commit(Change("b1", None, make_state("b1", status=waiting), T0))
    await sql_store.commit(Change("b2", None, make_state("b2"), T0))
    assert [s.batch_id for s in await sql_store.list_batches(waiting)] == ["b1"]
    assert (await sql_store.load("b1")).status is waiting  # type: ignore[union-attr]
    async with sql_store.engine.connect() as conn:
        stored = (await conn.execute(select(BATCHES.c.status).where(BATCHES.c.batch_id == "b1"))).scalar_one()
    assert stored == "awaiting_student_validation"


async def test_purge_published_keeps_pending_and_recent_rows(sql_store: SqlStore) -> None:
    messages = tuple(message(f"m{i}", f"k{i}") for i in range(4))
    await sql_store.commit(Change("b1", None, None, T0, outbox=messages))
    rows = await sql_store.claim(T0)
    await sql_store.mark_published([rows[0].id], T0)
    await sql_store.mark_published([rows[1].id], T0 + timedelta(hours=2))
    assert await sql_store.purge_published(T0 + timedelta(hours=1)) == 1
    assert await sql_store.purge_published(T0 + timedelta(hours=1)) == 0
    async with sql_store.engine.connect() as conn:
        left = (await conn.execute(OUTBOX.select().order_by(OUTBOX.c.id))).all()
    assert [r.event_id for r in left] == ["m1", "m2", "m3"]
