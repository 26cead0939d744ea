"""A run-starting request delivered again after the retention purge, on SQLite and
PostgreSQL: the stories of ``tests/core/test_core_request_redelivered_after_purge.py``, with
the batch's summary (its archived runs' ids, layout 3) read back from the store."""

from __future__ import annotations

from pipeline_state_sql import SqlStore

from tests.core.test_core_request_redelivered_after_purge import (
    check_a_completed_run_is_not_started_again,
    check_a_failed_run_is_not_started_again,
    check_a_retry_is_not_started_again,
)


async def test_a_completed_run_is_not_started_again(sql_store: SqlStore) -> None:
    await check_a_completed_run_is_not_started_again(sql_store)


async def test_a_failed_run_is_not_started_again_and_a_new_request_still_is(sql_store: SqlStore) -> None:
    await check_a_failed_run_is_not_started_again(sql_store)


async def test_a_retry_is_not_started_again(sql_store: SqlStore) -> None:
    await check_a_retry_is_not_started_again(sql_store)
