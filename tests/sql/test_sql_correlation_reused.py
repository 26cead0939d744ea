"""The stories of ``tests/core/test_core_correlation_reused.py`` on SQLite and PostgreSQL,
whose stored summary does not list the archived runs' correlation ids: the service reads
them from the ``runs`` table for a request (``asks_archived_ids``)."""

from __future__ import annotations

from tests.core.test_core_correlation_reused import (
    a_request_under_an_earlier_runs_id_is_denied,
    a_request_under_an_id_an_outcome_came_under_is_denied,
    a_retry_under_an_earlier_runs_id_is_denied,
)
from tests.sql.conftest import StoreMaker


async def test_a_request_under_an_earlier_runs_id_is_denied(make_store: StoreMaker) -> None:
    await a_request_under_an_earlier_runs_id_is_denied(await make_store())


async def test_a_retry_under_an_earlier_runs_id_is_denied(make_store: StoreMaker) -> None:
    await a_retry_under_an_earlier_runs_id_is_denied(await make_store())


async def test_a_request_under_an_id_an_outcome_came_under_is_denied(make_store: StoreMaker) -> None:
    await a_request_under_an_id_an_outcome_came_under_is_denied(await make_store())
