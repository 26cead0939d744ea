"""A run-starting request delivered again after the retention purge, on SQLite and
PostgreSQL: the stories of ``tests/core/test_core_request_redelivered_after_purge.py``, with
the batch's summary (its archived runs' ids, layout 3) read back from the store."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from pipeline_state_sql import SqlStore
from sqlalchemy import text

from pipeline_state import PipelineService
from pipeline_state._decide import ALREADY_HANDLED
from tests.core.test_core_request_redelivered_after_purge import (
    check_a_completed_run_is_not_started_again,
    check_a_failed_run_is_not_started_again,
    check_a_recorded_completion_is_not_recorded_again,
    check_a_retry_is_not_started_again,
    first_run,
)
from tests.sql.layouts import as_layout


async def test_a_completed_run_is_not_started_again(sql_store: SqlStore) -> None:
    await check_a_completed_run_is_not_started_again(sql_store)


async def test_a_failed_run_is_not_started_again_and_a_new_request_still_is(sql_store: SqlStore) -> None:
    await check_a_failed_run_is_not_started_again(sql_store)


async def test_a_retry_is_not_started_again(sql_store: SqlStore) -> None:
    await check_a_retry_is_not_started_again(sql_store)


async def test_a_recorded_completion_is_not_recorded_again(sql_store: SqlStore) -> None:
    await check_a_recorded_completion_is_not_recorded_again(sql_store)


async def test_a_row_stored_in_layout_2_still_knows_its_archived_runs(
    make_store: Callable[[], Awaitable[SqlStore]], backend: str
) -> None:
    """A batch whose row was written in layout 2 (no run keys) by the release before: its
    runs archived then are read from the store's history when a run-starting command comes,
    so the redelivered request is a duplicate there too."""
    store = await make_store()
    story = await first_run(store, fail_spellcheck=False)
    archived = await store.history("b1")
    async with store.engine.begin() as conn:
        (text_,) = (await conn.execute(text("SELECT state FROM batches WHERE batch_id = 'b1'"))).one()
        document = json.loads(text_) if isinstance(text_, str) else dict(text_)
        document = as_layout(document, 2, archived)
        cast = "CAST(:d AS jsonb)" if backend == "postgres" else ":d"
        await conn.execute(
            text(f"UPDATE batches SET state = {cast} WHERE batch_id = 'b1'"), {"d": json.dumps(document)}
        )
    fresh = await make_store()  # no state cache in front of the row
    service = PipelineService(fresh, clock=story.clock)
    assert (await fresh.load("b1")).past.runs == ()  # type: ignore[union-attr]
    again = await service.handle_message(*story.request)
    assert again.duplicate
    assert again.decision is not None
    assert again.decision.ignored == ALREADY_HANDLED
    assert len((await service.get_batch("b1")).history) == 1
