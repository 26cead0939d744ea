"""Idempotency-Key: the same key and body give the same answer without a second effect."""

from __future__ import annotations

import httpx

from pipeline_state import PipelineService
from pipeline_state.profiles.huleedu.events import Topic

from .conftest import MakeReady, Outbox, Outcome


def key(value: str) -> dict[str, str]:
    return {"Idempotency-Key": value}


async def test_a_repeated_pipeline_request_answers_the_same_without_a_second_run(
    http: httpx.AsyncClient, make_ready: MakeReady, outbox: Outbox, service: PipelineService
) -> None:
    await make_ready("b1")
    body = {"requested_pipeline": "nlp", "user_id": "t"}
    first = await http.post("/v1/batches/b1/pipelines", json=body, headers=key("k-1"))
    messages = await outbox()
    version = (await service.get_batch("b1")).version
    second = await http.post("/v1/batches/b1/pipelines", json=body, headers=key("k-1"))
    assert first.status_code == second.status_code == 202
    assert second.json() == first.json()
    assert second.headers["X-Correlation-ID"] == first.headers["X-Correlation-ID"]
    assert await outbox() == messages  # nothing new published
    assert (await service.get_batch("b1")).version == version
    # A new key is a new request: the run is active, so it is denied.
    other = await http.post("/v1/batches/b1/pipelines", json=body, headers=key("k-2"))
    assert other.status_code == 409


async def test_the_replay_survives_the_run_finishing(
    http: httpx.AsyncClient, make_ready: MakeReady, outcome: Outcome
) -> None:
    await make_ready("b1")
    body = {"requested_pipeline": "nlp", "user_id": "t"}
    first = (await http.post("/v1/batches/b1/pipelines", json=body, headers=key("k"))).json()
    await outcome("b1", "spellcheck", first["correlation_id"])
    await outcome("b1", "nlp", first["correlation_id"])
    again = await http.post("/v1/batches/b1/pipelines", json=body, headers=key("k"))
    assert again.status_code == 202
    assert again.json() == first
    assert len((await http.get("/v1/batches/b1/history")).json()["items"]) == 1


async def test_same_key_with_another_body_or_batch_is_another_request(
    http: httpx.AsyncClient, make_ready: MakeReady
) -> None:
    await make_ready("b1")
    await make_ready("b2")
    a = await http.post(
        "/v1/batches/b1/pipelines", json={"requested_pipeline": "nlp", "user_id": "t"}, headers=key("k")
    )
    b = await http.post(
        "/v1/batches/b2/pipelines", json={"requested_pipeline": "nlp", "user_id": "t"}, headers=key("k")
    )
    assert a.status_code == b.status_code == 202
    assert a.json()["run_id"] != b.json()["run_id"]
    c = await http.post(
        "/v1/batches/b1/pipelines",
        json={"requested_pipeline": "ai_feedback", "user_id": "t"},
        headers=key("k"),
    )
    assert (c.status_code, c.json()["denial_reason"]) == (409, "pipeline_already_active")


async def test_a_repeated_denied_request_is_denied_again_without_a_second_notice(
    http: httpx.AsyncClient, make_ready: MakeReady, outbox: Outbox
) -> None:
    await make_ready("b1", prompt=None)
    body = {"requested_pipeline": "nlp", "user_id": "t"}
    first = await http.post("/v1/batches/b1/pipelines", json=body, headers=key("d"))
    second = await http.post("/v1/batches/b1/pipelines", json=body, headers=key("d"))
    assert first.status_code == second.status_code == 400
    assert first.json()["denial_reason"] == second.json()["denial_reason"] == "prompt_not_attached"
    denied = [m for m in await outbox() if m["topic"] == Topic.PIPELINE_DENIED.value]
    assert len(denied) == 1


async def test_a_repeated_registration_answers_the_same(http: httpx.AsyncClient) -> None:
    body = {"batch_id": "b1", "expected_essay_count": 1, "user_id": "t", "course_code": "ENG5"}
    first = await http.post("/v1/batches/register", json=body, headers=key("r"))
    second = await http.post("/v1/batches/register", json=body, headers=key("r"))
    assert first.status_code == second.status_code == 202
    assert first.json() == second.json()  # same correlation id too: derived from the key


async def test_a_repeated_cancel_answers_the_same_instead_of_409(
    http: httpx.AsyncClient, make_ready: MakeReady, outbox: Outbox
) -> None:
    await make_ready("b1")
    for i in range(2):  # an older cancelled run must not be confused with this one
        await http.post("/v1/batches/b1/pipelines", json={"requested_pipeline": "nlp", "user_id": "t"})
        if i == 0:
            await http.post("/v1/batches/b1/cancel")
    first = await http.post("/v1/batches/b1/cancel", json={"reason": "x"}, headers=key("c"))
    completions = len([m for m in await outbox() if m["topic"] == Topic.PIPELINE_COMPLETED.value])
    second = await http.post("/v1/batches/b1/cancel", json={"reason": "x"}, headers=key("c"))
    assert first.status_code == second.status_code == 202
    assert second.json() == first.json()
    assert len([m for m in await outbox() if m["topic"] == Topic.PIPELINE_COMPLETED.value]) == completions
    unkeyed = await http.post("/v1/batches/b1/cancel", json={"reason": "x"})
    assert unkeyed.status_code == 409


async def test_a_repeated_retry_and_recorded_completion_answer_the_same(
    http: httpx.AsyncClient, make_ready: MakeReady
) -> None:
    await make_ready("b1")
    done = {"batch_id": "b1", "phase_name": "spellcheck", "success": True}
    first = await http.post("/internal/v1/phases/complete", json=done, headers=key("p"))
    second = await http.post("/internal/v1/phases/complete", json=done, headers=key("p"))
    assert first.json() == second.json()
    assert first.json()["outcome"] == "applied"
    assert len((await http.get("/v1/batches/b1/history")).json()["items"]) == 1
    retry = {"phase_name": "spellcheck", "user_id": "t"}
    r1 = await http.post("/v1/batches/b1/retry-phase", json=retry, headers=key("rt"))
    r2 = await http.post("/v1/batches/b1/retry-phase", json=retry, headers=key("rt"))
    assert r1.status_code == r2.status_code == 202
    assert r1.json() == r2.json()
    assert r1.json()["resolved_pipeline"] == ["spellcheck"]


async def test_an_empty_or_overlong_key_is_rejected(http: httpx.AsyncClient, make_ready: MakeReady) -> None:
    await make_ready("b1")
    body = {"requested_pipeline": "nlp", "user_id": "t"}
    for bad in ("", "k" * 256):
        response = await http.post("/v1/batches/b1/pipelines", json=body, headers=key(bad))
        assert (response.status_code, response.json()["field"]) == (422, "header.Idempotency-Key")
