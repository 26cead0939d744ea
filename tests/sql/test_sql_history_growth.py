"""Issue 16, point 5: the cost of an event must not grow with the batch's history.

Measured with ``bench/sql.py --only history``: an outcome on a batch with 200 archived runs
cost several times one on a batch with one, because the stored state document carried every
archived run, so each event decoded and rewrote the whole history (~350 kB for 200 runs of
the bench's workload) although the ``runs`` table already kept them one row each.

The document then kept a summary (:class:`~pipeline_state._model.Past`, layouts 2 and 3):
every archived run's correlation id (and, in layout 3, its key), the acceptance times the
profile's rate limits count (none for the default profile) and the latest outputs per phase,
so it still grew by about 60 bytes per archived run: 1.20-1.36x on PostgreSQL for 200 runs.
Layout 4 counts the runs instead; the ids are looked up in the ``runs`` table by the inputs
that ask about them (``tests/sql/test_sql_archived_ids.py``).
"""

from __future__ import annotations

import attrs
from pipeline_state_sql import SqlStore
from sqlalchemy import text

from pipeline_state import ManualClock, PipelineService
from pipeline_state._lifecycle import RunStatus
from pipeline_state._model import BatchState, Past, Run
from pipeline_state.ports import Change
from pipeline_state.testing import Envelopes

ITEMS = 3
CORRELATION = "5e1f0000-0000-4000-8000-000000000001"


async def _finished_and_active(store: SqlStore) -> tuple[Run, BatchState]:
    """A real finished ``nlp`` run, then the same batch running ``comprehensive``."""
    service = PipelineService(store, clock=ManualClock())
    env = Envelopes()
    items = env.item_ids("tpl", ITEMS)
    old = "5e1f0000-0000-4000-8000-0000000000ff"
    await service.handle_message(*env.register("tpl", items=ITEMS))
    await service.handle_message(*env.provisioned("tpl", items))
    await service.handle_message(*env.request("tpl", "nlp", correlation_id=old))
    for phase in ("spellcheck", "nlp"):
        await service.handle_message(*env.outcome("tpl", phase, old, processed=items))
    await service.handle_message(*env.request("tpl", "cj_assessment", correlation_id=CORRELATION))
    state = await store.load("tpl")
    assert state is not None
    assert state.active_run is not None
    [finished] = await store.history("tpl")
    assert finished.status is RunStatus.COMPLETED_SUCCESSFULLY
    return finished, state


async def _document_written(store: SqlStore, template: BatchState, finished: Run, archived: int) -> int:
    """Bytes of the state document stored after one outcome on a batch with ``archived`` runs."""
    batch_id = f"b{archived}"
    history = tuple(
        attrs.evolve(finished, run_id=f"old-{n}", correlation_id=f"5e1f0000-0000-4000-8000-{n:012d}")
        for n in range(archived)
    )
    state = attrs.evolve(template, batch_id=batch_id, past=Past.of(history))
    await store.commit(Change(batch_id, None, state, state.updated_at, archived=history))
    service = PipelineService(store, clock=ManualClock())
    env = Envelopes()
    result = await service.handle_message(
        *env.outcome(batch_id, "cj_assessment", CORRELATION, processed=env.item_ids("tpl", ITEMS))
    )
    assert result.messages, "the outcome should have completed the run"
    async with store.engine.connect() as conn:
        size = (
            await conn.execute(text("SELECT length(state) FROM batches WHERE batch_id = :b"), {"b": batch_id})
        ).scalar_one()
    return int(size)


# An archived run in the document: its correlation id (~40 bytes of JSON), where the run
# itself took ~1,400 bytes in the bench's workload.
SUMMARY_BYTES = 48


async def test_the_stored_document_grows_by_a_summary_per_archived_run(sqlite_store: SqlStore) -> None:
    finished, template = await _finished_and_active(sqlite_store)
    one = await _document_written(sqlite_store, template, finished, 1)
    many = await _document_written(sqlite_store, template, finished, 50)
    assert many - one <= 49 * SUMMARY_BYTES, f"{many} bytes with 50 archived runs vs {one} with one"
    # The runs themselves are in the history, every one of them once, the one just finished last.
    history = await sqlite_store.history("b50")
    assert [r.run_id for r in history[:50]] == [f"old-{n}" for n in range(50)]
    assert [(r.run_id, r.pipeline_name) for r in history[50:]] == [
        (template.active_run.run_id, "cj_assessment")
    ]


async def test_the_stored_document_does_not_grow_with_the_history(sqlite_store: SqlStore) -> None:
    """Issue 16, point 5 (history must not be rewritten per event): the document written for
    an event keeps a count of the archived runs, not their ids (the ``runs`` table keeps
    those, and a decision that needs them has the store look them up), so 49 more archived
    runs add at most the digits of the count."""
    finished, template = await _finished_and_active(sqlite_store)
    one = await _document_written(sqlite_store, template, finished, 1)
    many = await _document_written(sqlite_store, template, finished, 50)
    assert many - one <= 2, f"{many} bytes with 50 archived runs vs {one} with one"
