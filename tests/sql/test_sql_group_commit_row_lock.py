"""Group commit on PostgreSQL while another session holds one batch's row lock (an operator's
open transaction): calls for other batches must not wait for it while a slot is free."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from pipeline_state_sql import SqlStore
from sqlalchemy.engine import make_url

from pipeline_state import ManualClock, PipelineService
from pipeline_state.ports import Change
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes


@pytest.mark.postgres
async def test_a_row_lock_on_one_batch_does_not_stall_calls_for_other_batches(pg_store: SqlStore, pg) -> None:  # type: ignore[no-untyped-def]
    """Was a defect (fixed): every call for other batches waited for the locked one."""
    env = HuleEduEnvelopes()
    svc = PipelineService(pg_store, clock=ManualClock())
    await svc.handle_message(*env.register("locked", items=1))
    dsn = make_url(pg.url).set(drivername="postgresql").render_as_string(hide_password=False)
    other = await asyncpg.connect(dsn, timeout=10)
    try:
        await other.execute(f'SET search_path TO "{pg.schema}"')
        tx = other.transaction()
        await tx.start()
        await other.execute("SELECT 1 FROM batches WHERE batch_id = 'locked' FOR UPDATE")
        # 1. A unit of work on "locked" waits for the row lock (one slot in flight).
        stuck = asyncio.ensure_future(
            svc.handle_message(*env.provisioned("locked", env.item_ids("locked", 1)))
        )
        await asyncio.sleep(0.3)
        assert not stuck.done()
        # 2. A call for batch "b" takes the other slot; a call for "c" arrives meanwhile.
        gate = asyncio.Event()
        entered = asyncio.Event()
        commit = pg_store.commit

        async def gated(change: Change) -> None:
            if change.batch_id == "b":
                entered.set()
                await gate.wait()
            await commit(change)

        pg_store.commit = gated  # type: ignore[method-assign]
        b = asyncio.ensure_future(svc.handle_message(*env.register("b", items=1)))
        await asyncio.wait_for(entered.wait(), 5)
        c = asyncio.ensure_future(svc.handle_message(*env.register("c", items=1)))
        await asyncio.sleep(0.01)
        gate.set()
        await asyncio.wait_for(b, 5)
        pg_store.commit = commit  # type: ignore[method-assign]
        # 3. One unit in flight (waiting for the lock), one slot free: calls for other batches.
        later = [asyncio.ensure_future(svc.handle_message(*env.register(f"d{n}", items=1))) for n in range(3)]
        _, pending = await asyncio.wait([c, *later], timeout=10.0)  # a stall lasts until the rollback
        stalled = len(pending)
        await tx.rollback()
        await asyncio.wait_for(asyncio.gather(stuck, c, *later), 10)
    finally:
        await other.close()
    # Observed: all four wait until the operator's transaction on "locked" ends.
    assert stalled == 0, f"{stalled} of 4 calls for other batches waited for the lock on batch 'locked'"
