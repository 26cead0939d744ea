"""A run's correlation id is what tells its outcomes from an earlier run's (``stale_run``,
contract §2), so no two runs of a batch share one: a pipeline request (or a phase retry)
under the correlation id of an archived run of the batch, or of one an outcome was applied
under instead of its run's, is denied ``correlation_reused`` (the denial event and the
teacher's notice, no state change), and the same request under a new id starts its run.

Was a defect (fixed; found by an attack on the HTTP API, where ``X-Correlation-ID`` or
``client_correlation_id`` name the run's id): two requests under one id started two runs
sharing it, and a late redelivery of the first run's failed outcome (a fresh event id) was
applied to the second run, ending it ``failed_critically`` without its worker answering.
The stories take any store: ``tests/sql/test_sql_correlation_reused.py`` plays them on
SQLite and PostgreSQL.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from pipeline_state import InMemoryStore, ManualClock, PipelineService
from pipeline_state._commands import Command, RetryPhase
from pipeline_state.ports import Store
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

LOST = "00000000-0000-4000-8000-00000000dead"


async def _first_run_failed(store: Store) -> tuple[PipelineService, HuleEduEnvelopes, str, list[str]]:
    """Run 1 (``nlp``) under correlation id ``c``: spellcheck succeeds, nlp fails; ready again."""
    service = PipelineService(store, clock=ManualClock(datetime(2025, 3, 1, tzinfo=UTC)))
    env = HuleEduEnvelopes()
    ids = env.item_ids("b1", 2)
    await service.handle_message(*env.register("b1", items=2))
    await service.handle_message(*env.provisioned("b1", ids))
    c = str(uuid.uuid4())
    assert (await service.handle_message(*env.request("b1", "nlp", correlation_id=c))).label == "applied"
    await service.handle_message(*env.outcome("b1", "spellcheck", c, processed=ids))
    failed = env.outcome("b1", "nlp", c, failed=ids, status="failed_critically")
    await service.handle_message(*failed)
    assert (await service.get_batch("b1")).status.value == "ready_for_pipeline_execution"
    return service, env, c, ids


async def a_request_under_an_earlier_runs_id_is_denied(store: Store) -> None:
    service, env, c, ids = await _first_run_failed(store)
    again = await service.handle_message(*env.request("b1", "nlp", correlation_id=c))
    assert again.label == "denied:correlation_reused"
    assert [m.topic for m in again.messages] == [
        Topic.PIPELINE_DENIED.value,
        Topic.TEACHER_NOTIFICATION.value,
    ]
    assert again.messages[0].value["data"]["denial_reason"] == "correlation_reused"
    state = await service.get_batch("b1")
    assert state.active_run is None
    assert state.status.value == "ready_for_pipeline_execution"
    # Run 1's failed nlp outcome redelivered (a fresh event id) stays stale, and a request
    # under a new id runs, its phases waiting for its own workers.
    late = env.outcome("b1", "nlp", c, failed=ids, status="failed_critically")
    assert (await service.handle_message(*late)).label == "ignored:no_active_run"
    fresh = str(uuid.uuid4())
    assert (await service.handle_message(*env.request("b1", "nlp", correlation_id=fresh))).label == "applied"
    late_again = env.outcome("b1", "nlp", c, failed=ids, status="failed_critically")
    assert (await service.handle_message(*late_again)).label == "ignored:stale_run"
    run = (await service.get_batch("b1")).active_run
    assert run is not None
    assert run.correlation_id == fresh


async def a_retry_under_an_earlier_runs_id_is_denied(store: Store) -> None:
    service, _env, c, _ids = await _first_run_failed(store)
    retry = Command(RetryPhase("b1", "nlp", "teacher-1"), str(uuid.uuid4()), c)
    result = await service.handle(retry, topic="operator")
    assert result.label == "denied:correlation_reused"
    assert (await service.get_batch("b1")).active_run is None
    fresh = Command(RetryPhase("b1", "nlp", "teacher-1"), str(uuid.uuid4()), str(uuid.uuid4()))
    assert (await service.handle(fresh, topic="operator")).label == "applied"


async def a_request_under_an_id_an_outcome_came_under_is_denied(store: Store) -> None:
    """An id an outcome was applied under instead of its run's (``correlation_mismatch``)
    counts as that run's: a later request under it is denied too."""
    service = PipelineService(store, clock=ManualClock(datetime(2025, 3, 1, tzinfo=UTC)))
    env = HuleEduEnvelopes()
    ids = env.item_ids("b1", 2)
    await service.handle_message(*env.register("b1", items=2))
    await service.handle_message(*env.provisioned("b1", ids))
    await service.handle_message(*env.request("b1", "nlp", correlation_id=str(uuid.uuid4())))
    lost = await service.handle_message(
        *env.outcome("b1", "spellcheck", LOST, failed=ids, status="failed_critically")
    )
    assert lost.decision is not None
    assert lost.decision.flags == ("correlation_mismatch",)
    again = await service.handle_message(*env.request("b1", "nlp", correlation_id=LOST))
    assert again.label == "denied:correlation_reused"


async def test_a_request_under_an_earlier_runs_id_is_denied() -> None:
    await a_request_under_an_earlier_runs_id_is_denied(InMemoryStore())


async def test_a_retry_under_an_earlier_runs_id_is_denied() -> None:
    await a_retry_under_an_earlier_runs_id_is_denied(InMemoryStore())


async def test_a_request_under_an_id_an_outcome_came_under_is_denied() -> None:
    await a_request_under_an_id_an_outcome_came_under_is_denied(InMemoryStore())
