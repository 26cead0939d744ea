"""The stories of ``tests/core/test_core_mismatched_outcome_repeats.py`` on SQLite and
PostgreSQL: the pair (run, foreign correlation id) an outcome was applied under travels in
the batch's stored summary (layout 5, ``past.answered``), so its repeat is stale on a
durable store too, across the inbox purge; and a report applied to an active run's phase
(``past.reported``) is already handled when it comes again."""

from __future__ import annotations

from tests.core.test_core_already_handled_attacks import (
    a_report_applied_to_an_active_run_redelivered_after_purge,
)
from tests.core.test_core_mismatched_outcome_repeats import (
    a_redelivery_after_the_purge_is_stale,
    a_retry_under_a_fresh_id_is_stale,
    a_retry_while_the_next_run_is_active_is_stale,
)
from tests.sql.conftest import StoreMaker


async def test_a_retry_under_a_fresh_id_after_the_run_is_stale(make_store: StoreMaker) -> None:
    await a_retry_under_a_fresh_id_is_stale(await make_store())


async def test_a_retry_while_the_next_run_is_active_is_stale(make_store: StoreMaker) -> None:
    await a_retry_while_the_next_run_is_active_is_stale(await make_store())


async def test_a_redelivery_after_the_purge_is_stale(make_store: StoreMaker) -> None:
    await a_redelivery_after_the_purge_is_stale(await make_store())


async def test_a_report_applied_to_an_active_run_redelivered_after_purge_records_no_new_run(
    make_store: StoreMaker,
) -> None:
    """The same report redelivered after the purge is ``already_handled`` on a durable store
    too (``past.reported``, layout 5)."""
    await a_report_applied_to_an_active_run_redelivered_after_purge(await make_store())
