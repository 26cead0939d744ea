"""The routes' paths, status codes and bodies, against a real service on the in-memory store."""

from __future__ import annotations

import uuid

import httpx
import pytest

from pipeline_state import InMemoryCreditLedger, PipelineService, RateLimitGuard
from pipeline_state._snapshot import snapshot
from pipeline_state.profiles.huleedu.events import MAX_ESSAYS_PER_BATCH, Topic
from pipeline_state.profiles.huleedu.profile import huleedu_profile

from .conftest import TOKENS, MakeReady, Outbox, Outcome, authed_client


def registration(batch_id: str, **changes: object) -> dict[str, object]:
    body: dict[str, object] = {
        "batch_id": batch_id,
        "expected_essay_count": 2,
        "essay_ids": [f"{batch_id}-e0", f"{batch_id}-e1"],
        "user_id": "teacher-1",
        "course_code": "ENG5",
    }
    body.update(changes)
    return body


def topics_of(messages: list[dict[str, object]]) -> list[object]:
    return [m["topic"] for m in messages]


# --- register ------------------------------------------------------------------------------


async def test_register_answers_202_and_creates_the_batch(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/batches/register", json=registration("b1"))
    assert response.status_code == 202
    body = response.json()
    assert body["batch_id"] == "b1"
    assert body["status"] == "awaiting_content_validation"
    assert body["correlation_id"] == response.headers["X-Correlation-ID"]
    uuid.UUID(body["correlation_id"])
    snap = (await http.get("/v1/batches/b1")).json()
    assert snap["status"] == "awaiting_content_validation"


async def test_register_again_with_the_same_data_is_accepted_and_with_other_data_conflicts(
    http: httpx.AsyncClient,
) -> None:
    assert (await http.post("/v1/batches/register", json=registration("b1"))).status_code == 202
    again = await http.post("/v1/batches/register", json=registration("b1"))
    assert again.status_code == 202
    other = await http.post("/v1/batches/register", json=registration("b1", user_id="someone-else"))
    assert other.status_code == 409
    assert other.json()["error"] == "batch_conflict"
    assert (await http.get("/v1/batches/b1")).json()["user_id"] == "teacher-1"


async def test_invalid_registration_is_422_naming_the_field(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/batches/register", json=registration("b1", expected_essay_count=0))
    assert response.status_code == 422
    assert response.json()["error"] == "validation_error"
    assert response.json()["field"] == "body.expected_essay_count"
    assert (await http.get("/v1/batches/b1")).status_code == 404


async def test_registration_sizes_are_bounded(http: httpx.AsyncClient) -> None:
    # The core derives one essay id per expected essay: an open endpoint must bound the count.
    huge = await http.post(
        "/v1/batches/register", json=registration("b1", expected_essay_count=10**9, essay_ids=None)
    )
    assert (huge.status_code, huge.json()["field"]) == (422, "body.expected_essay_count")
    over = registration("b1", expected_essay_count=MAX_ESSAYS_PER_BATCH + 1, essay_ids=None)
    assert (await http.post("/v1/batches/register", json=over)).status_code == 422
    ok = await http.post(
        "/v1/batches/register",
        json=registration("b1", expected_essay_count=MAX_ESSAYS_PER_BATCH, essay_ids=None),
    )
    assert ok.status_code == 202


# --- pipelines -----------------------------------------------------------------------------


async def test_pipeline_request_is_accepted_with_run_and_resolution(
    http: httpx.AsyncClient, make_ready: MakeReady, service: PipelineService, outbox: Outbox
) -> None:
    await make_ready("b1")
    corr = str(uuid.uuid4())
    response = await http.post(
        "/v1/batches/b1/pipelines",
        json={"requested_pipeline": "ai_feedback", "user_id": "teacher-1"},
        headers={"X-Correlation-ID": corr},
    )
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "accepted"
    assert body["resolved_pipeline"] == ["spellcheck", "nlp", "ai_feedback"]
    assert body["skipped_phases"] == []
    assert body["correlation_id"] == corr == response.headers["X-Correlation-ID"]
    state = await service.get_batch("b1")
    assert state.active_run is not None
    assert state.active_run.run_id == body["run_id"]
    assert state.active_run.correlation_id == corr
    spellcheck = [m for m in await outbox() if m["topic"] == Topic.SPELLCHECK.value]
    assert len(spellcheck) == 1
    assert spellcheck[0]["value"]["correlation_id"] == corr  # type: ignore[index]


async def test_client_correlation_id_in_the_body_is_used_when_no_header(
    http: httpx.AsyncClient, make_ready: MakeReady
) -> None:
    await make_ready("b1")
    corr = str(uuid.uuid4())
    response = await http.post(
        "/v1/batches/b1/pipelines",
        json={"requested_pipeline": "nlp", "user_id": "teacher-1", "client_correlation_id": corr},
    )
    assert response.status_code == 202
    assert response.json()["correlation_id"] == corr == response.headers["X-Correlation-ID"]


async def test_body_batch_id_must_match_the_path(http: httpx.AsyncClient, make_ready: MakeReady) -> None:
    await make_ready("b1")
    response = await http.post(
        "/v1/batches/b1/pipelines", json={"batch_id": "b2", "requested_pipeline": "nlp", "user_id": "t"}
    )
    assert response.status_code == 422
    assert response.json()["field"] == "body.batch_id"


async def test_a_completed_phase_is_pruned_from_the_next_request(
    http: httpx.AsyncClient, make_ready: MakeReady, outcome: Outcome
) -> None:
    await make_ready("b1")
    first = (
        await http.post("/v1/batches/b1/pipelines", json={"requested_pipeline": "nlp", "user_id": "t"})
    ).json()
    await outcome("b1", "spellcheck", first["correlation_id"])
    await outcome("b1", "nlp", first["correlation_id"])
    assert (await http.get("/v1/batches/b1")).json()["status"] == "ready_for_pipeline_execution"
    second = await http.post(
        "/v1/batches/b1/pipelines", json={"requested_pipeline": "ai_feedback", "user_id": "t"}
    )
    assert second.status_code == 202
    assert second.json()["resolved_pipeline"] == ["ai_feedback"]
    assert second.json()["skipped_phases"] == ["spellcheck", "nlp"]


async def test_a_fully_pruned_request_is_accepted_and_completes_at_once(
    http: httpx.AsyncClient, make_ready: MakeReady, outcome: Outcome
) -> None:
    await make_ready("b1")
    first = (
        await http.post("/v1/batches/b1/pipelines", json={"requested_pipeline": "nlp", "user_id": "t"})
    ).json()
    await outcome("b1", "spellcheck", first["correlation_id"])
    await outcome("b1", "nlp", first["correlation_id"])
    again = await http.post("/v1/batches/b1/pipelines", json={"requested_pipeline": "nlp", "user_id": "t"})
    assert again.status_code == 202
    assert again.json()["resolved_pipeline"] == []
    assert again.json()["skipped_phases"] == ["spellcheck", "nlp"]
    snap = (await http.get("/v1/batches/b1")).json()
    assert snap["active_run"] is None
    assert snap["history"][-1]["run_id"] == again.json()["run_id"]


@pytest.mark.parametrize(
    ("setup", "pipeline", "status", "reason"),
    [
        ("none", "nlp", 404, "batch_not_found"),
        ("registered", "nlp", 409, "batch_not_ready"),
        ("running", "nlp", 409, "pipeline_already_active"),
        ("ready", "no_such_pipeline", 400, "unknown_pipeline"),
        ("no_prompt", "nlp", 400, "prompt_not_attached"),
    ],
)
async def test_denials_map_to_their_status_codes(
    http: httpx.AsyncClient,
    make_ready: MakeReady,
    outbox: Outbox,
    setup: str,
    pipeline: str,
    status: int,
    reason: str,
) -> None:
    if setup == "registered":
        await http.post("/v1/batches/register", json=registration("b1"))
    elif setup in ("ready", "running"):
        await make_ready("b1")
    elif setup == "no_prompt":
        await make_ready("b1", prompt=None)
    if setup == "running":
        await http.post("/v1/batches/b1/pipelines", json={"requested_pipeline": "nlp", "user_id": "t"})
    before = await http.get("/v1/batches/b1")
    response = await http.post(
        "/v1/batches/b1/pipelines", json={"requested_pipeline": pipeline, "user_id": "t"}
    )
    assert response.status_code == status
    body = response.json()
    assert body["denial_reason"] == reason
    assert isinstance(body["detail"], str)
    assert body["detail"]
    after = await http.get("/v1/batches/b1")
    assert after.status_code == before.status_code
    if before.status_code == 200:
        assert after.json()["version"] == before.json()["version"]  # no state change
    denied = [m for m in await outbox() if m["topic"] == Topic.PIPELINE_DENIED.value]
    assert [m["value"]["data"]["denial_reason"] for m in denied] == [reason]  # type: ignore[index]


async def test_credit_and_rate_limit_denials_are_402_and_429(make_ready: MakeReady) -> None:
    from pipeline_state_http import HttpSettings, create_app

    from pipeline_state import InMemoryStore, ManualClock
    from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

    ledger = InMemoryCreditLedger({"teacher-1": 3})
    profile = huleedu_profile(credits=ledger, extra_guards=[RateLimitGuard(max_runs=1, window_seconds=3600)])
    service = PipelineService(InMemoryStore(), profile=profile, clock=ManualClock())
    env = HuleEduEnvelopes()
    for batch_id in ("poor", "busy"):
        await service.handle_message(*env.register(batch_id, items=3))
        await service.handle_message(*env.provisioned(batch_id, env.item_ids(batch_id, 3)))
    app = create_app(service, settings=HttpSettings(**TOKENS))
    async with authed_client(app, "http://t") as http:
        # 3 essays x 2 phases = 6 credits > 3
        poor = await http.post(
            "/v1/batches/poor/pipelines", json={"requested_pipeline": "nlp", "user_id": "teacher-1"}
        )
        assert (poor.status_code, poor.json()["denial_reason"]) == (402, "insufficient_credits")
        ledger.balances["teacher-1"] = 100
        ok = await http.post(
            "/v1/batches/busy/pipelines", json={"requested_pipeline": "nlp", "user_id": "teacher-1"}
        )
        assert ok.status_code == 202
        await http.post("/v1/batches/busy/cancel")
        limited = await http.post(
            "/v1/batches/busy/pipelines", json={"requested_pipeline": "nlp", "user_id": "teacher-1"}
        )
        assert (limited.status_code, limited.json()["denial_reason"]) == (429, "rate_limit_exceeded")


# --- preflight -----------------------------------------------------------------------------


async def test_preflight_resolves_like_a_request_without_changing_anything(
    http: httpx.AsyncClient, make_ready: MakeReady, service: PipelineService, outbox: Outbox, outcome: Outcome
) -> None:
    await make_ready("b1")
    first = (
        await http.post("/v1/batches/b1/pipelines", json={"requested_pipeline": "nlp", "user_id": "t"})
    ).json()
    await outcome("b1", "spellcheck", first["correlation_id"])
    await outcome("b1", "nlp", first["correlation_id"])
    before = await service.get_batch("b1")
    messages = len(await outbox())
    response = await http.post("/v1/batches/b1/pipelines/comprehensive/preflight", json={})
    assert response.status_code == 200
    assert response.json() == {
        "allowed": True,
        "resolved_pipeline": ["cj_assessment", "ai_feedback"],
        "skipped_phases": ["spellcheck", "nlp"],
    }
    assert await service.get_batch("b1") == before
    assert len(await outbox()) == messages
    real = await http.post(
        "/v1/batches/b1/pipelines", json={"requested_pipeline": "comprehensive", "user_id": "t"}
    )
    assert real.json()["resolved_pipeline"] == response.json()["resolved_pipeline"]


async def test_preflight_without_a_body_and_its_denials(
    http: httpx.AsyncClient, make_ready: MakeReady, outbox: Outbox
) -> None:
    missing = await http.post("/v1/batches/nope/pipelines/nlp/preflight")
    assert (missing.status_code, missing.json()["denial_reason"]) == (404, "batch_not_found")
    await make_ready("b1", prompt=None)
    no_prompt = await http.post("/v1/batches/b1/pipelines/nlp/preflight")
    assert (no_prompt.status_code, no_prompt.json()["denial_reason"]) == (400, "prompt_not_attached")
    with_prompt = await http.post(
        "/v1/batches/b1/pipelines/nlp/preflight", json={"prompt_payload": {"prompt_ref": "p"}}
    )
    assert with_prompt.status_code == 200
    unknown = await http.post("/v1/batches/b1/pipelines/nope/preflight")
    assert (unknown.status_code, unknown.json()["denial_reason"]) == (400, "unknown_pipeline")
    assert not [m for m in await outbox() if m["topic"] == Topic.PIPELINE_DENIED.value]  # preflight is silent


# --- cancel and retry ----------------------------------------------------------------------


async def test_cancel_the_active_run_then_409_when_none(
    http: httpx.AsyncClient, make_ready: MakeReady
) -> None:
    await make_ready("b1")
    run = (
        await http.post("/v1/batches/b1/pipelines", json={"requested_pipeline": "nlp", "user_id": "t"})
    ).json()
    response = await http.post("/v1/batches/b1/cancel", json={"user_id": "t", "reason": "wrong batch"})
    assert response.status_code == 202
    assert response.json()["run_id"] == run["run_id"]
    assert response.json()["status"] == "cancelled"
    snap = (await http.get("/v1/batches/b1")).json()
    assert snap["status"] == "ready_for_pipeline_execution"
    assert snap["history"][-1]["final_status"] == "cancelled"
    again = await http.post("/v1/batches/b1/cancel")
    assert again.status_code == 409
    assert again.json()["error"] == "illegal_transition"
    assert (await http.post("/v1/batches/nope/cancel")).status_code == 404


async def test_retry_phase_runs_one_phase_and_is_409_while_a_run_is_active(
    http: httpx.AsyncClient, make_ready: MakeReady, outcome: Outcome
) -> None:
    await make_ready("b1")
    run = (
        await http.post("/v1/batches/b1/pipelines", json={"requested_pipeline": "nlp", "user_id": "t"})
    ).json()
    busy = await http.post("/v1/batches/b1/retry-phase", json={"phase_name": "spellcheck", "user_id": "t"})
    assert (busy.status_code, busy.json()["denial_reason"]) == (409, "pipeline_already_active")
    await outcome("b1", "spellcheck", run["correlation_id"])
    await outcome(
        "b1", "nlp", run["correlation_id"], status="failed_critically", processed=[], failed=["b1-e0"]
    )
    retry = await http.post(
        "/v1/batches/b1/retry-phase", json={"phase_name": "nlp", "user_id": "t", "retry_reason": "flaky"}
    )
    assert retry.status_code == 202
    assert retry.json()["resolved_pipeline"] == ["nlp"]
    snap = (await http.get("/v1/batches/b1")).json()
    assert snap["active_run"]["run_id"] == retry.json()["run_id"]
    unknown = await http.post("/v1/batches/b1/retry-phase", json={"phase_name": "nope", "user_id": "t"})
    assert unknown.status_code == 409  # a run is active again: admission says so first


async def test_retry_of_an_unknown_phase_is_400_and_missing_dependencies_409(
    http: httpx.AsyncClient, make_ready: MakeReady
) -> None:
    await make_ready("b1")
    unknown = await http.post("/v1/batches/b1/retry-phase", json={"phase_name": "nope", "user_id": "t"})
    assert (unknown.status_code, unknown.json()["denial_reason"]) == (400, "unknown_pipeline")
    deps = await http.post("/v1/batches/b1/retry-phase", json={"phase_name": "nlp", "user_id": "t"})
    assert (deps.status_code, deps.json()["denial_reason"]) == (409, "dependencies_not_completed")
    assert (
        await http.post("/v1/batches/nope/retry-phase", json={"phase_name": "nlp", "user_id": "t"})
    ).status_code == 404


# --- reads ---------------------------------------------------------------------------------


async def test_get_batch_is_the_runtime_snapshot(
    http: httpx.AsyncClient, make_ready: MakeReady, service: PipelineService, outcome: Outcome
) -> None:
    await make_ready("b1")
    run = (
        await http.post("/v1/batches/b1/pipelines", json={"requested_pipeline": "nlp", "user_id": "t"})
    ).json()
    await outcome("b1", "spellcheck", run["correlation_id"])
    response = await http.get("/v1/batches/b1")
    assert response.status_code == 200
    assert response.json() == snapshot(await service.get_batch("b1"))
    assert response.json()["active_run"]["phases"] == {
        "spellcheck": "completed_successfully",
        "nlp": "dispatch_initiated",
    }
    missing = await http.get("/v1/batches/nope")
    assert missing.status_code == 404
    assert missing.json()["error"] == "batch_not_found"


async def test_history_is_newest_first_and_paginated(http: httpx.AsyncClient, make_ready: MakeReady) -> None:
    await make_ready("b1")
    runs = []
    for _ in range(5):
        r = await http.post("/v1/batches/b1/pipelines", json={"requested_pipeline": "nlp", "user_id": "t"})
        runs.append(r.json()["run_id"])
        await http.post("/v1/batches/b1/cancel")
    page = (await http.get("/v1/batches/b1/history", params={"limit": 2})).json()
    assert page["total"] == 5
    assert [item["run_id"] for item in page["items"]] == runs[::-1][:2]
    page2 = (await http.get("/v1/batches/b1/history", params={"limit": 2, "offset": 4})).json()
    assert [item["run_id"] for item in page2["items"]] == [runs[0]]
    assert (await http.get("/v1/batches/b1/history", params={"offset": 10})).json()["items"] == []
    for bad in ({"limit": 0}, {"limit": 101}, {"offset": -1}, {"limit": "x"}):
        response = await http.get("/v1/batches/b1/history", params=bad)
        assert response.status_code == 422, bad
        assert response.json()["field"].startswith("query.")
    assert (await http.get("/v1/batches/nope/history")).status_code == 404


async def test_diagram_is_mermaid_with_the_current_states_highlighted(
    http: httpx.AsyncClient, make_ready: MakeReady, outcome: Outcome
) -> None:
    await make_ready("b1")
    fresh = await http.get("/v1/batches/b1/diagram")
    assert fresh.status_code == 200
    assert fresh.headers["content-type"].startswith("text/plain")
    assert "stateDiagram-v2" in fresh.text
    assert "class ready_for_pipeline_execution current" in fresh.text
    run = (
        await http.post("/v1/batches/b1/pipelines", json={"requested_pipeline": "nlp", "user_id": "t"})
    ).json()
    await outcome("b1", "spellcheck", run["correlation_id"])
    text = (await http.get("/v1/batches/b1/diagram")).text
    assert "class processing_pipelines current" in text
    assert "class active current" in text
    phases = (await http.get("/v1/batches/b1/diagram", params={"view": "phases"})).text
    assert phases.startswith("---")
    assert "flowchart LR" in phases
    assert "spellcheck<br/>completed_successfully" in phases
    assert "nlp<br/>dispatch_initiated" in phases
    assert "stateDiagram" not in phases
    assert (await http.get("/v1/batches/b1/diagram", params={"view": "bogus"})).status_code == 422
    assert (await http.get("/v1/batches/nope/diagram")).status_code == 404


# --- internal ------------------------------------------------------------------------------


async def test_define_resolves_with_pruning_like_the_conductor(
    http: httpx.AsyncClient, make_ready: MakeReady, outcome: Outcome, service: PipelineService
) -> None:
    await make_ready("b1")
    run = (
        await http.post("/v1/batches/b1/pipelines", json={"requested_pipeline": "nlp", "user_id": "t"})
    ).json()
    await outcome("b1", "spellcheck", run["correlation_id"])
    await outcome("b1", "nlp", run["correlation_id"])
    before = await service.get_batch("b1")
    corr = str(uuid.uuid4())
    response = await http.post(
        "/internal/v1/pipelines/define",
        json={"batch_id": "b1", "requested_pipeline": "comprehensive", "correlation_id": corr},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["batch_id"] == "b1"
    assert body["final_pipeline"] == ["cj_assessment", "ai_feedback"]
    summary = body["analysis_summary"]
    assert summary["pipeline_steps"] == ["spellcheck", "cj_assessment", "nlp", "ai_feedback"]
    assert summary["pruned_phases"] == ["spellcheck", "nlp"]
    assert summary["completed_phases"] == ["spellcheck", "nlp"]
    assert summary["admission"] == {"allowed": True, "denial_reason": None, "detail": None}
    assert summary["correlation_id"] == corr == response.headers["X-Correlation-ID"]
    assert await service.get_batch("b1") == before
    unknown = await http.post(
        "/internal/v1/pipelines/define",
        json={"batch_id": "b1", "requested_pipeline": "x", "correlation_id": corr},
    )
    assert (unknown.status_code, unknown.json()["denial_reason"]) == (400, "unknown_pipeline")
    missing = await http.post(
        "/internal/v1/pipelines/define",
        json={"batch_id": "zz", "requested_pipeline": "nlp", "correlation_id": corr},
    )
    assert missing.status_code == 404
    bad = await http.post(
        "/internal/v1/pipelines/define",
        json={"batch_id": "b1", "requested_pipeline": "nlp", "correlation_id": "x"},
    )
    assert (bad.status_code, bad.json()["field"]) == (422, "body.correlation_id")


async def test_define_reports_what_admission_would_say(
    http: httpx.AsyncClient, make_ready: MakeReady
) -> None:
    await make_ready("b1", prompt=None)
    body = {"batch_id": "b1", "requested_pipeline": "nlp", "correlation_id": str(uuid.uuid4())}
    summary = (await http.post("/internal/v1/pipelines/define", json=body)).json()["analysis_summary"]
    assert summary["admission"]["allowed"] is False
    assert summary["admission"]["denial_reason"] == "prompt_not_attached"
    body["batch_metadata"] = {"prompt_payload": {"prompt_ref": "p"}}
    summary = (await http.post("/internal/v1/pipelines/define", json=body)).json()["analysis_summary"]
    assert summary["admission"] == {"allowed": True, "denial_reason": None, "detail": None}


async def test_recorded_phase_completion_is_pruned_by_the_next_request(
    http: httpx.AsyncClient, make_ready: MakeReady
) -> None:
    await make_ready("b1")
    response = await http.post(
        "/internal/v1/phases/complete", json={"batch_id": "b1", "phase_name": "spellcheck", "success": True}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "recorded"
    assert body["outcome"] == "applied"
    assert body["run_id"]
    failure = await http.post(
        "/internal/v1/phases/complete", json={"batch_id": "b1", "phase_name": "nlp", "success": False}
    )
    assert failure.json() == {"status": "recorded", "outcome": "ignored:failure_outside_run", "run_id": None}
    nlp = await http.post("/v1/batches/b1/pipelines", json={"requested_pipeline": "nlp", "user_id": "t"})
    assert nlp.json()["skipped_phases"] == ["spellcheck"]
    unknown = await http.post(
        "/internal/v1/phases/complete", json={"batch_id": "b1", "phase_name": "nope", "success": True}
    )
    assert (unknown.status_code, unknown.json()["error"]) == (400, "unknown_pipeline")
    missing = await http.post(
        "/internal/v1/phases/complete", json={"batch_id": "zz", "phase_name": "nlp", "success": True}
    )
    assert missing.status_code == 404


async def test_recorded_completion_of_an_active_phase_advances_the_run(
    http: httpx.AsyncClient, make_ready: MakeReady
) -> None:
    await make_ready("b1")
    run = (
        await http.post("/v1/batches/b1/pipelines", json={"requested_pipeline": "nlp", "user_id": "t"})
    ).json()
    done = await http.post(
        "/internal/v1/phases/complete", json={"batch_id": "b1", "phase_name": "spellcheck", "success": True}
    )
    assert done.json() == {"status": "recorded", "outcome": "applied", "run_id": run["run_id"]}
    snap = (await http.get("/v1/batches/b1")).json()
    assert snap["active_run"]["phases"]["nlp"] == "dispatch_initiated"


# --- health and correlation ----------------------------------------------------------------


async def test_healthz_follows_the_store(http: httpx.AsyncClient, service: PipelineService) -> None:
    ok = await http.get("/healthz")
    assert (ok.status_code, ok.json()) == (200, {"status": "ok"})
    service.store.available = False  # type: ignore[attr-defined]
    down = await http.get("/healthz")
    assert (down.status_code, down.json()["status"]) == (503, "unavailable")
    read = await http.get("/v1/batches/b1")
    assert (read.status_code, read.json()["error"]) == (503, "store_unavailable")
    assert "in-memory" not in read.text  # the driver's message stays inside


async def test_correlation_header_must_be_a_uuid_and_is_made_when_absent(
    http: httpx.AsyncClient, make_ready: MakeReady
) -> None:
    bad = await http.get("/v1/batches/b1", headers={"X-Correlation-ID": "not-a-uuid"})
    assert (bad.status_code, bad.json()["field"]) == (422, "header.X-Correlation-ID")
    made = await http.get("/v1/batches/b1")
    assert uuid.UUID(made.headers["X-Correlation-ID"]).version == 4
    corr = str(uuid.uuid4())
    echoed = await http.get("/v1/batches/b1", headers={"X-Correlation-ID": corr})
    assert echoed.headers["X-Correlation-ID"] == corr
