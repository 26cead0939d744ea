"""The stories of ``tests/core/test_core_waiting_never_applies.py`` on SQLite and
PostgreSQL: the ``never_applies:`` mark is a rewait of the stored fact, and its
``dead_lettered:`` result fits the inbox's result column."""

from __future__ import annotations

from tests.core.test_core_waiting_never_applies import (
    a_letter_that_fails_keeps_the_fact_for_the_next_sweep,
    an_early_fact_that_never_applies_is_dead_lettered_at_the_next_sweep,
)
from tests.sql.conftest import StoreMaker


async def test_an_early_fact_that_never_applies_is_dead_lettered_at_the_next_sweep(
    make_store: StoreMaker,
) -> None:
    await an_early_fact_that_never_applies_is_dead_lettered_at_the_next_sweep(await make_store())


async def test_a_letter_that_fails_keeps_the_fact_for_the_next_sweep(make_store: StoreMaker) -> None:
    await a_letter_that_fails_keeps_the_fact_for_the_next_sweep(await make_store())
