"""Found by an attack on the OpenAPI document the app serves (``/openapi.json``): answers the
routes give that the document does not describe.

``test_http_openapi.py`` runs schemathesis over the whole schema, but only with the
``not_a_server_error`` check: what a route answers is never compared with what the schema
says it answers. Here each answer is checked against the operation's documented responses:
its status must be documented, its content type must be the documented one, and its JSON
body must validate against the documented schema (``jsonschema_rs``, the document's
``components`` as the ``$ref`` root). Were defects (fixed): a client generated from the
schema would have mis-read every one of these answers. The last test states the rule over
every operation of an app with all its routers mounted.
"""

from __future__ import annotations

from typing import Any

import httpx
import jsonschema_rs
import pytest
from pipeline_state_http import create_app

from pipeline_state import InMemoryStore, PipelineService
from pipeline_state.profiles.huleedu.results import InMemoryResultsStore
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

from .conftest import OPS_TOKEN, MakeReady, bearer


def _conformance(document: dict[str, Any], method: str, template: str, answer: httpx.Response) -> list[str]:
    """What is wrong with ``answer`` for the operation ``method template`` of ``document``."""
    responses = document["paths"][template][method.lower()]["responses"]
    status = str(answer.status_code)
    if status not in responses:
        return [f"status {status} is not documented (documented: {sorted(responses)})"]
    content = responses[status].get("content", {})
    received = answer.headers.get("content-type", "").split(";")[0]
    if received not in content:
        return [f"{status}: content type {received} is not documented (documented: {sorted(content)})"]
    if received != "application/json":
        return []
    schema = {**content[received]["schema"], "components": document["components"]}
    validator = jsonschema_rs.validator_for(schema)
    return [f"{status}: {error.message}" for error in validator.iter_errors(answer.json())]


async def _seed(service: PipelineService, make_ready: MakeReady) -> None:
    await make_ready("ready")
    await make_ready("busy")
    env = HuleEduEnvelopes()
    await service.handle_message(*env.request("busy", "nlp"))
    assert (await service.get_batch("busy")).active_run is not None


async def test_cancel_naming_another_run_answers_a_documented_status(
    http: httpx.AsyncClient, app: Any, service: PipelineService, make_ready: MakeReady
) -> None:
    """README: cancel answers "400 ``bad_command`` if another run is active than ``run_id``";
    the operation documents 202, 401, 404, 408, 409, 413, 422 and 503, not 400."""
    await _seed(service, make_ready)
    answer = await http.post("/v1/batches/busy/cancel", json={"run_id": "not-the-active-run"})
    assert answer.status_code == 400
    assert answer.json()["error"] == "bad_command"
    assert _conformance(app.openapi(), "POST", "/v1/batches/{batch_id}/cancel", answer) == []


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/v1/batches/nope/retry-phase", {"phase_name": "nlp", "user_id": "t"}, 404),
        ("/v1/batches/ready/retry-phase", {"phase_name": "spellcheck", "user_id": "t", "after_runs": 5}, 400),
    ],
    ids=["unknown-batch-404", "after-runs-400"],
)
async def test_retry_phase_errors_match_their_documented_body(
    http: httpx.AsyncClient,
    app: Any,
    service: PipelineService,
    make_ready: MakeReady,
    path: str,
    body: dict[str, object],
    status: int,
) -> None:
    """The retry route documents its 400 and 404 as ``DenialBody`` (``denial_reason``
    required); an unknown batch and a stale ``after_runs`` answer an ``ErrorBody``
    (``error``) under those statuses."""
    await _seed(service, make_ready)
    answer = await http.post(path, json=body)
    assert answer.status_code == status
    assert _conformance(app.openapi(), "POST", "/v1/batches/{batch_id}/retry-phase", answer) == []


@pytest.mark.parametrize(
    ("template", "query", "token"),
    [
        ("/v1/ops/waiting", {}, None),
        ("/v1/ops/stalled-runs", {}, None),
        ("/v1/ops/waiting", {"limit": "0"}, OPS_TOKEN),
        ("/v1/ops/stalled-runs", {"older_than": "-1"}, OPS_TOKEN),
    ],
    ids=["waiting-401", "stalled-401", "waiting-422", "stalled-422"],
)
async def test_operational_listings_document_their_error_answers(
    http: httpx.AsyncClient, app: Any, template: str, query: dict[str, str], token: str | None
) -> None:
    """The operational listings answer 401 (no operations token) and 422 as ``ErrorBody``
    like every route, but their operations document no 401 and FastAPI's default 422
    (``HTTPValidationError``, ``detail`` an array)."""
    headers = bearer(token) if token else {"Authorization": "Bearer wrong"}
    answer = await http.get(template, params=query, headers=headers)
    assert answer.status_code in (401, 422)
    assert _conformance(app.openapi(), "GET", template, answer) == []


@pytest.mark.parametrize(
    "template", ["/v1/batches/{batch_id}/diagram", "/v1/batches/{batch_id}/status"], ids=["diagram", "status"]
)
async def test_text_views_document_their_json_errors_as_json(
    http: httpx.AsyncClient, app: Any, template: str
) -> None:
    """The diagram and status views answer errors (404, 422) as JSON ``ErrorBody``; their
    operations document those errors under the view's own media type (``text/plain``,
    ``text/html``)."""
    answer = await http.get(template.replace("{batch_id}", "missing"))
    assert answer.status_code == 404
    assert answer.headers["content-type"] == "application/json"
    assert _conformance(app.openapi(), "GET", template, answer) == []


class _Metrics:
    content_type = "text/plain; version=0.0.4"

    async def exposition(self) -> bytes:
        return b""


def _whole_document() -> dict[str, Any]:
    """The document of an app with every optional router (results, metrics) mounted."""
    service = PipelineService(InMemoryStore())
    return create_app(service, results=InMemoryResultsStore(), metrics=_Metrics()).openapi()  # type: ignore[no-any-return]


def _error_schema(operation: dict[str, Any], status: str) -> str | None:
    """The schema name documented for ``status`` as JSON, ``None`` when it is not documented
    as JSON (or not at all)."""
    content = operation["responses"].get(status, {}).get("content", {})
    if set(content) != {"application/json"}:
        return None
    ref: str = content["application/json"].get("schema", {}).get("$ref", "")
    return ref.rsplit("/", 1)[-1] or None


def test_every_guarded_or_parameterised_operation_documents_its_json_error_answers() -> None:
    """The rule behind the cases above, over every operation: a route behind a token answers
    401 as a JSON ``ErrorBody``; one with parameters or a body answers 422 as a JSON
    ``ErrorBody`` (never FastAPI's default ``HTTPValidationError``); every documented error
    answer is JSON, whatever the route's own media type."""
    document = _whole_document()
    wrong: list[str] = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            name = f"{method.upper()} {path}"
            if operation.get("security") and _error_schema(operation, "401") != "ErrorBody":
                wrong.append(f"{name}: 401 not documented as a JSON ErrorBody")
            takes_input = operation.get("parameters") or operation.get("requestBody")
            if takes_input and _error_schema(operation, "422") != "ErrorBody":
                wrong.append(f"{name}: 422 not documented as a JSON ErrorBody")
            for status, response in operation["responses"].items():
                if status[0] in "45" and set(response.get("content", {})) - {"application/json"}:
                    wrong.append(f"{name}: {status} documented as {sorted(response['content'])}")
    assert wrong == []
