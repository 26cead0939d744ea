"""A class's summed essay counts on PostgreSQL: the per-batch bound on reported counts
(``MAX_REPORTED_COUNT`` = 1,000,000) keeps every sum of a class inside the columns of
``results_classes``, which are 64-bit (migration 0007)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from results_events import at, completion, registered

from pipeline_state import ManualClock
from pipeline_state.errors import PipelineStateError
from pipeline_state.profiles.huleedu.events import MAX_REPORTED_COUNT
from pipeline_state.profiles.huleedu.results import ResultsService

INT32_MAX = 2**31 - 1


@pytest.fixture
async def pg_results() -> AsyncIterator[Any]:
    from pipeline_state_sql.results_store import open_results_store

    from tests.http.serving import pg_schema, postgres_url

    url = await asyncio.to_thread(postgres_url)
    async with pg_schema(url, "ps_class_sums") as schema:
        store = await open_results_store(url, schema=schema)
        try:
            yield store
        finally:
            await store.close()


@pytest.mark.postgres
@pytest.mark.timeout(120)
async def test_a_class_whose_summed_counts_pass_int32_keeps_taking_results_on_postgres(
    pg_results: Any,
) -> None:
    """Was a defect (found by an attack on sizes): the columns were ``INTEGER``.

    Expected (events.py: ``MAX_REPORTED_COUNT`` is "small enough that no store's integer
    column overflows summing a class's batches"): each completion within the documented
    bound is applied, and the class summary keeps counting. Actual: once the batches of one
    class report more than 2**31 - 1 successful essays together (2,148 x 1,000,000), the
    next completion of the class fails on PostgreSQL (``integer out of range`` on
    ``results_classes.essays_succeeded``, ``RejectedDataError``): serve dead-letters it,
    and every later result of the class is lost."""
    service = ResultsService(pg_results, clock=ManualClock())
    needed = INT32_MAX // MAX_REPORTED_COUNT + 1  # 2148
    for n in range(needed + 1):
        batch = f"b{n}"
        await service.handle_message(*registered(batch, class_id="class-big", essays=3))
        topic, envelope = completion(batch, f"r{n}", f"c{n}", when=at(10 + n), successful=MAX_REPORTED_COUNT)
        try:
            await service.handle_message(topic, json.dumps(envelope))
        except PipelineStateError as exc:
            pytest.fail(
                f"completion {n + 1} of class-big (each within the documented bound of "
                f"{MAX_REPORTED_COUNT}) failed: {type(exc).__name__}: {exc}"
            )
    summary = await pg_results.class_results("class-big")
    assert summary is not None
    assert summary.batch_count == needed + 1
    assert summary.essays_succeeded == (needed + 1) * MAX_REPORTED_COUNT > INT32_MAX
