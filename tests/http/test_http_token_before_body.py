"""what an anonymous (or wrong-token) client gets the API to do before it is
refused."""

from __future__ import annotations

import httpx
import pytest
from pipeline_state_http import HttpSettings, create_app

from pipeline_state import InMemoryStore, ManualClock, PipelineService
from pipeline_state.profiles.huleedu.results import InMemoryResultsStore

from .conftest import BASE, bearer

API, INTERNAL, OPS = "ht-api", "ht-internal", "ht-ops"

WRITE_ROUTES = [
    "/v1/batches/register",
    "/v1/batches/b1/pipelines",
    "/v1/batches/b1/pipelines/nlp/preflight",
    "/v1/batches/b1/cancel",
    "/v1/batches/b1/retry-phase",
    "/internal/v1/pipelines/define",
    "/internal/v1/phases/complete",
]

MALFORMED = {
    "truncated": b'{"batch_id": ',
    "deep": b"[" * 5000 + b"]" * 5000,
    "not-utf8": b"\xff\xfe\xfa",
}


@pytest.fixture
def app():  # type: ignore[no-untyped-def]
    service = PipelineService(InMemoryStore(), clock=ManualClock())
    settings = HttpSettings(api_token=API, internal_token=INTERNAL, ops_token=OPS)
    return create_app(service, settings=settings, results=InMemoryResultsStore())


@pytest.mark.parametrize("body", list(MALFORMED), ids=list(MALFORMED))
async def test_anonymous_malformed_bodies_are_refused_before_they_are_parsed(
    app,
    body: str,  # type: ignore[no-untyped-def]
) -> None:
    """Was a defect (fixed): A request with no token (or a wrong one, or another scope's) and a malformed JSON
    body is answered ``422 validation_error`` ("JSON decode error", with the offending
    position) or ``400`` ("error parsing the body") instead of ``401``: FastAPI reads and
    decodes the body before it solves the route's dependencies, and the token check
    (security.py ``require_token``) is a dependency. Anyone can make every write route
    parse arbitrary JSON (deep nesting included) and learn how it parses, without a token.
    Contract: every route but /healthz needs a bearer token of its scope. Expected: 401
    for all of them (the body limit's 413 may still come first)."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
        answers = {}
        for path in WRITE_ROUTES:
            other = OPS if path.startswith("/internal/") else INTERNAL
            for headers in ({}, bearer("wrong"), bearer(other)):
                answer = await http.post(
                    path, content=MALFORMED[body], headers={**headers, "Content-Type": "application/json"}
                )
                answers[(path, tuple(headers.values()))] = answer.status_code
    wrong = {where: status for where, status in answers.items() if status != 401}
    assert wrong == {}, wrong


async def test_anonymous_well_formed_writes_are_401_and_change_nothing(app) -> None:  # type: ignore[no-untyped-def]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
        for path in WRITE_ROUTES:
            for headers in ({}, bearer("wrong"), bearer(OPS), {"Authorization": f"bearer  {API}x"}):
                answer = await http.post(path, json={}, headers=headers)
                assert answer.status_code == 401, (path, headers, answer.text)
                assert API not in answer.text
                assert INTERNAL not in answer.text
        # HEAD/OPTIONS/unknown methods on guarded GET routes never answer data without a token
        for method in ("HEAD", "OPTIONS", "TRACE", "PROPFIND"):
            answer = await http.request(method, "/v1/batches/b1")
            assert answer.status_code in (401, 405), (method, answer.status_code)
            assert b"batch_id" not in answer.content
