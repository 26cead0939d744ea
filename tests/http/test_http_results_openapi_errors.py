"""The results routes document the statuses the app's middleware answers on them."""

from __future__ import annotations

from typing import Any

import pytest
from pipeline_state_http import create_app

from pipeline_state import InMemoryStore, PipelineService
from pipeline_state.profiles.huleedu.results import InMemoryResultsStore

from .conftest import TOKENS, authed_client
from .test_http_openapi_conformance import _conformance


@pytest.mark.parametrize(
    ("template", "path"),
    [
        ("/v1/results/batches/{batch_id}", "/v1/results/batches/b1"),
        ("/v1/results/classes/{class_id}", "/v1/results/classes/c1"),
        ("/v1/results/teachers/{user_id}", "/v1/results/teachers/t1"),
    ],
    ids=["batch", "class", "teacher"],
)
async def test_results_routes_document_the_413_the_body_limit_answers(template: str, path: str) -> None:
    """Was a defect (found by an attack on the wire contract).

    The results routes are under ``/v1/``, so ``BodyLimitMiddleware`` (app.py: prefixes
    ``/v1/`` and ``/internal/``) answers them 413 ``payload_too_large`` for a request body over
    ``max_body_bytes`` (and 408 for a slow one), as it does every other ``/v1`` route. Every
    other ``/v1`` operation documents 408 and 413; the results operations document only 200,
    401, 404, 422 and 503, so a client generated from ``/openapi.json`` meets an undocumented
    status. Expected: the answer's status and body are documented. Actual: "status 413 is not
    documented"."""
    from pipeline_state_http import HttpSettings

    app = create_app(
        PipelineService(InMemoryStore()), results=InMemoryResultsStore(), settings=HttpSettings(**TOKENS)
    )
    async with authed_client(app) as http:
        answer = await http.request("GET", path, content=b"x" * (256 * 1024 + 1))
    assert answer.status_code == 413
    assert answer.json()["error"] == "payload_too_large"
    document: dict[str, Any] = app.openapi()
    assert _conformance(document, "GET", template, answer) == []
