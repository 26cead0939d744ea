"""The typed client: results as models, error answers as the library's errors."""

from __future__ import annotations

import uuid

import httpx
import pytest
from pipeline_state_http import (
    BatchSnapshot,
    HttpSettings,
    PipelineAccepted,
    PipelineDeniedError,
    PipelineStateClient,
    UnauthorizedError,
    create_app,
)

from pipeline_state import (
    IllegalTransitionError,
    InMemoryStore,
    InvalidMessageError,
    PipelineService,
    StoreUnavailableError,
)
from pipeline_state.errors import (
    BadCommandError,
    BatchConflictError,
    BatchNotFoundError,
    UnknownPipelineError,
)
from pipeline_state.profiles.huleedu.events import BatchRegistrationRequestV1

from .conftest import BASE, MakeReady, Outcome


async def test_a_whole_flow_through_the_client(
    client: PipelineStateClient, service: PipelineService, outcome: Outcome
) -> None:
    reg = BatchRegistrationRequestV1(
        batch_id="b1", expected_essay_count=3, user_id="teacher-1", course_code="ENG5", student_prompt_ref="p"
    )
    registered = await client.register(reg, idempotency_key="reg-1")
    assert registered.status == "awaiting_content_validation"
    from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

    env = HuleEduEnvelopes()
    state = await service.get_batch("b1")
    await service.handle_message(*env.provisioned("b1", list(state.item_ids)))
    assert (await client.preflight("b1", "nlp")).resolved_pipeline == ["spellcheck", "nlp"]
    corr = str(uuid.uuid4())
    accepted = await client.request_pipeline("b1", "nlp", user_id="teacher-1", correlation_id=corr)
    assert isinstance(accepted, PipelineAccepted)
    assert accepted.correlation_id == corr
    snap = await client.get_batch("b1")
    assert isinstance(snap, BatchSnapshot)
    assert snap.active_run is not None
    assert snap.active_run.run_id == accepted.run_id
    await outcome("b1", "spellcheck", corr, processed=list(state.item_ids))
    await outcome("b1", "nlp", corr, processed=list(state.item_ids))
    page = await client.history("b1", limit=5)
    assert [r.final_status for r in page.items] == ["completed_successfully"]
    assert "flowchart LR" in await client.diagram("b1", view="phases")
    assert "<svg" in await client.status_page("b1")
    define = await client.define_pipeline("b1", "ai_feedback", correlation_id=str(uuid.uuid4()))
    assert define.final_pipeline == ["ai_feedback"]
    recorded = await client.record_phase_completion("b1", "cj_assessment", success=True)
    assert recorded.outcome == "applied"
    retry = await client.retry_phase("b1", "nlp", user_id="teacher-1", retry_reason="again")
    assert retry.resolved_pipeline == ["nlp"]
    cancelled = await client.cancel("b1", user_id="operator-7", reason="enough")
    assert cancelled.run_id == retry.run_id
    # Who asked is on the transition log rows of the retry and the cancel (issue 15.3).
    store = service.store
    assert isinstance(store, InMemoryStore)
    asked = {(r.trigger, r.requested_by) for r in store.transitions("b1") if r.requested_by}
    assert ("start_run", "teacher-1") in asked
    assert ("cancel_run", "operator-7") in asked
    assert await client.healthy()


async def test_denials_raise_pipeline_denied_with_reason_and_status(
    client: PipelineStateClient, make_ready: MakeReady
) -> None:
    await make_ready("b1", prompt=None)
    with pytest.raises(PipelineDeniedError) as denied:
        await client.request_pipeline("b1", "nlp", user_id="t")
    assert denied.value.reason == "prompt_not_attached"
    assert denied.value.status_code == 400
    assert denied.value.batch_id == "b1"
    with pytest.raises(PipelineDeniedError, match="unknown_pipeline"):
        await client.preflight("b1", "nope")
    await client.request_pipeline("b1", "cj_assessment", user_id="t", prompt_payload={"prompt_ref": "p"})
    with pytest.raises(PipelineDeniedError) as busy:
        await client.request_pipeline("b1", "cj_assessment", user_id="t")
    assert (busy.value.reason, busy.value.status_code) == ("pipeline_already_active", 409)


async def test_library_errors_come_back_as_library_errors(
    client: PipelineStateClient, make_ready: MakeReady, service: PipelineService
) -> None:
    with pytest.raises(BatchNotFoundError) as missing:
        await client.request_pipeline("nope", "nlp", user_id="t")
    assert missing.value.batch_id == "nope"
    with pytest.raises(BatchNotFoundError):
        await client.get_batch("nope")
    await make_ready("b1")
    with pytest.raises(BatchConflictError):
        await client.register(
            {"batch_id": "b1", "expected_essay_count": 9, "user_id": "x", "course_code": "ENG5"}
        )
    with pytest.raises(IllegalTransitionError) as illegal:
        await client.cancel("b1")
    assert (illegal.value.lifecycle, illegal.value.trigger, illegal.value.batch_id) == ("run", "cancel", "b1")
    with pytest.raises(UnknownPipelineError) as unknown:
        await client.record_phase_completion("b1", "nope", success=True)
    assert (unknown.value.name, unknown.value.kind) == ("nope", "phase")
    with pytest.raises(InvalidMessageError) as invalid:
        await client.register(
            {"batch_id": "b2", "expected_essay_count": 0, "user_id": "x", "course_code": "E"}
        )
    assert invalid.value.field == "body.expected_essay_count"
    service.store.available = False  # type: ignore[attr-defined]
    with pytest.raises(StoreUnavailableError):
        await client.get_batch("b1")
    assert not await client.healthy()


async def test_tokens_are_sent_to_their_routes(service: PipelineService, make_ready: MakeReady) -> None:
    await make_ready("b1")
    app = create_app(service, settings=HttpSettings(api_token="a", internal_token="i"))
    transport = httpx.ASGITransport(app=app)
    async with PipelineStateClient(BASE, token="a", internal_token="i", transport=transport) as good:
        assert (await good.get_batch("b1")).batch_id == "b1"
        assert (await good.record_phase_completion("b1", "spellcheck", success=True)).status == "recorded"
    async with PipelineStateClient(BASE, token="i", internal_token="a", transport=transport) as swapped:
        with pytest.raises(UnauthorizedError) as unauthorized:
            await swapped.get_batch("b1")
        assert unauthorized.value.status_code == 401
        with pytest.raises(UnauthorizedError):
            await swapped.define_pipeline("b1", "nlp", correlation_id=str(uuid.uuid4()))


async def test_ids_are_sent_as_one_path_segment(client: PipelineStateClient, make_ready: MakeReady) -> None:
    odd = "a b?c#d%e"
    await make_ready(odd)
    assert (await client.get_batch(odd)).batch_id == odd
    assert (await client.history(odd)).batch_id == odd


async def test_cancel_and_retry_name_what_the_caller_saw(
    client: PipelineStateClient, make_ready: MakeReady
) -> None:
    """``cancel(run_id=...)`` and ``retry_phase(after_runs=...)`` carry the run and the
    archived-run count the caller saw (what ``run cancel --api`` and ``phase retry --api``
    send): a cancel naming another run than the active one, and a retry after another run
    was archived, are refused and change nothing; a repeat of the refused cancel's key
    is refused again, with the same error."""
    await make_ready("b1")
    first = await client.request_pipeline("b1", "nlp", user_id="t")
    await client.cancel("b1", run_id=first.run_id)
    second = await client.request_pipeline("b1", "nlp", user_id="t")
    with pytest.raises(BadCommandError):
        await client.cancel("b1", run_id=first.run_id, idempotency_key="k-1")
    with pytest.raises(BadCommandError):
        await client.cancel("b1", run_id=first.run_id, idempotency_key="k-1")
    assert (await client.get_batch("b1")).active_run.run_id == second.run_id  # type: ignore[union-attr]
    await client.cancel("b1", run_id=second.run_id)
    with pytest.raises(BadCommandError):
        await client.retry_phase("b1", "spellcheck", user_id="t", after_runs=1)
    assert (await client.get_batch("b1")).active_run is None
    accepted = await client.retry_phase("b1", "spellcheck", user_id="t", after_runs=2)
    assert accepted.resolved_pipeline == ["spellcheck"]
