"""Issue 16, point 5: the cost of an event must not grow with the batch's history.

Measured with ``bench/sql.py --only history``: an outcome on a batch with 200 archived runs
costs several times one on a batch with one, because the stored state document carries every
archived run, so each event decodes and rewrites the whole history (~350 kB for 200 runs of
the bench's workload) although the ``runs`` table already keeps them one row each.

This test pins the defect down: the document written for an event on a batch with many
archived runs must stay about the size of the one written on a batch with one. It fails
today (``strict`` xfail: it turns into an error once the fix lands, and then the marker goes).
"""

from __future__ import annotations

import attrs
import pytest
from pipeline_state_sql import SqlStore
from sqlalchemy import text

from pipeline_state import ManualClock, PipelineService
from pipeline_state.lifecycle import RunStatus
from pipeline_state.model import BatchState, Run
from pipeline_state.ports import Change
from pipeline_state.testing import Envelopes

ITEMS = 3
CORRELATION = "5e1f0000-0000-4000-8000-000000000001"


async def _finished_and_active(store: SqlStore) -> tuple[Run, BatchState]:
    """A real finished ``nlp`` run, then the same batch running ``comprehensive``."""
    service = PipelineService(store, clock=ManualClock())
    env = Envelopes()
    items = env.essay_ids("tpl", ITEMS)
    old = "5e1f0000-0000-4000-8000-0000000000ff"
    await service.handle_message(*env.register("tpl", essays=ITEMS))
    await service.handle_message(*env.provisioned("tpl", items))
    await service.handle_message(*env.request("tpl", "nlp", correlation_id=old))
    for phase in ("spellcheck", "nlp"):
        await service.handle_message(*env.outcome("tpl", phase, old, processed=items))
    await service.handle_message(*env.request("tpl", "cj_assessment", correlation_id=CORRELATION))
    state = await store.load("tpl")
    assert state is not None
    assert state.active_run is not None
    assert [r.status for r in state.history] == [RunStatus.COMPLETED_SUCCESSFULLY]
    return state.history[0], state


async def _document_written(store: SqlStore, template: BatchState, finished: Run, archived: int) -> int:
    """Bytes of the state document stored after one outcome on a batch with ``archived`` runs."""
    batch_id = f"b{archived}"
    history = tuple(
        attrs.evolve(finished, run_id=f"old-{n}", correlation_id=f"5e1f0000-0000-4000-8000-{n:012d}")
        for n in range(archived)
    )
    state = attrs.evolve(template, batch_id=batch_id, history=history)
    await store.commit(Change(batch_id, None, state, state.updated_at))
    service = PipelineService(store, clock=ManualClock())
    env = Envelopes()
    result = await service.handle_message(
        *env.outcome(batch_id, "cj_assessment", CORRELATION, processed=env.essay_ids("tpl", ITEMS))
    )
    assert result.messages, "the outcome should have completed the run"
    async with store.engine.connect() as conn:
        size = (
            await conn.execute(text("SELECT length(state) FROM batches WHERE batch_id = :b"), {"b": batch_id})
        ).scalar_one()
    return int(size)


@pytest.mark.xfail(
    strict=True,
    reason="issue 16 point 5: the stored document carries the whole history (fix not landed yet)",
)
async def test_the_stored_document_does_not_grow_with_the_history(sqlite_store: SqlStore) -> None:
    finished, template = await _finished_and_active(sqlite_store)
    one = await _document_written(sqlite_store, template, finished, 1)
    many = await _document_written(sqlite_store, template, finished, 50)
    assert many <= 1.2 * one, f"{many} bytes with 50 archived runs vs {one} with one"
