"""keyed (Idempotency-Key) replays whose correlation header changes between
attempts, as a client that makes a fresh X-Correlation-ID per attempt does."""

from __future__ import annotations

import uuid

import httpx

from .conftest import MakeReady, Outbox


def _headers(key: str, correlation: str | None) -> dict[str, str]:
    headers = {"Idempotency-Key": key}
    if correlation is not None:
        headers["X-Correlation-ID"] = correlation
    return headers


async def test_a_replayed_registration_answers_the_first_correlation_id(
    http: httpx.AsyncClient, outbox: Outbox
) -> None:
    """Was a defect (fixed): The first keyed registration is handled with correlation A (its
    transition row and the ``BatchEssaysRegistered`` it publishes carry A, and A is answered).
    The same key and body sent again with another ``X-Correlation-ID`` (B), or with none,
    changes nothing but answers B, or an id derived from the key: a correlation id no event of
    this batch carries. ``Operations.register`` (operations.py) answers ``ctx.correlation_id``
    even for a duplicate, where the pipeline, retry and cancel routes answer the one the first
    request was handled with (README: "a replay answers the same status and body")."""
    first_id, other_id = str(uuid.uuid4()), str(uuid.uuid4())
    body = {"batch_id": "r1", "expected_essay_count": 1, "user_id": "t", "course_code": "ENG5"}
    first = await http.post("/v1/batches/register", json=body, headers=_headers("reg-1", first_id))
    assert first.status_code == 202, first.text
    assert first.json()["correlation_id"] == first_id
    published = await outbox()
    assert published
    assert all(m["value"]["correlation_id"] == first_id for m in published)  # type: ignore[index]

    again = await http.post("/v1/batches/register", json=body, headers=_headers("reg-1", other_id))
    bare = await http.post("/v1/batches/register", json=body, headers=_headers("reg-1", None))
    assert again.status_code == bare.status_code == 202
    assert len(await outbox()) == len(published)  # the replays changed nothing
    assert again.json() == first.json(), (first.json(), again.json())
    assert bare.json() == first.json(), (first.json(), bare.json())


async def test_replayed_pipeline_and_cancel_answer_the_first_correlation_id(
    http: httpx.AsyncClient, make_ready: MakeReady
) -> None:
    await make_ready("p1")
    first_id = str(uuid.uuid4())
    body = {"requested_pipeline": "nlp", "user_id": "t"}
    first = await http.post("/v1/batches/p1/pipelines", json=body, headers=_headers("pipe-1", first_id))
    assert first.status_code == 202, first.text
    for correlation in (str(uuid.uuid4()), None):
        again = await http.post(
            "/v1/batches/p1/pipelines", json=body, headers=_headers("pipe-1", correlation)
        )
        assert again.status_code == 202, again.text
        assert again.json() == first.json()
        assert again.headers["X-Correlation-ID"] == first_id
    cancel_id = str(uuid.uuid4())
    cancelled = await http.post("/v1/batches/p1/cancel", json={}, headers=_headers("cancel-1", cancel_id))
    assert cancelled.status_code == 202, cancelled.text
    for correlation in (str(uuid.uuid4()), None):
        again = await http.post("/v1/batches/p1/cancel", json={}, headers=_headers("cancel-1", correlation))
        assert again.status_code == 202, again.text
        assert again.json() == cancelled.json()
