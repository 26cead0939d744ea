"""The generated OpenAPI schema, and a property-based run of the whole API against it.

Schemathesis generates requests from the schema (valid and invalid ones) for every
operation and sends them, with the token of the operation's scope, to the app served by
uvicorn over each store backend (in memory, SQLite, PostgreSQL); no answer may be a 5xx.
Half of the generated batch ids, pipeline names and phase names are swapped for ones that
exist (the batches in various states), so the runs reach past the 404s and 400s.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from pipeline_state_http import HttpSettings, create_app
from pipeline_state_http.security import route_table
from pipeline_state_http.settings import Scope
from schemathesis.checks import not_a_server_error

from pipeline_state import InMemoryStore, ManualClock, PipelineService
from pipeline_state.profiles.huleedu.events import ClientBatchPipelineRequestV1
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

from .conftest import API_TOKEN, INTERNAL_TOKEN, OPS_TOKEN, TOKENS, bearer
from .serving import served

KNOWN = ("ready", "busy", "done", "fresh")


async def _seed(service: PipelineService) -> None:
    env = HuleEduEnvelopes()
    for batch_id in KNOWN:
        await service.handle_message(*env.register(batch_id, items=2))
        if batch_id != "fresh":
            await service.handle_message(*env.provisioned(batch_id, env.item_ids(batch_id, 2)))
    for batch_id in ("busy", "done"):
        request = ClientBatchPipelineRequestV1(batch_id=batch_id, requested_pipeline="nlp", user_id="t")
        result = await service.execute(request)
        assert result.decision is not None
        assert result.decision.state is not None
    state = await service.get_batch("done")
    assert state.active_run is not None
    for phase in ("spellcheck", "nlp"):
        out = env.outcome("done", phase, state.active_run.correlation_id, processed=env.item_ids("done", 2))
        await service.handle_message(*out)


def _app() -> Any:
    service = PipelineService(InMemoryStore(), clock=ManualClock())
    asyncio.run(_seed(service))
    return create_app(service, settings=HttpSettings(**TOKENS))


APP = _app()
schema = schemathesis.openapi.from_asgi("/openapi.json", APP, headers=bearer(API_TOKEN))

_SCOPES = {path: scopes for _, path, scopes in route_table(APP)}
_TOKEN_OF = {Scope.API: API_TOKEN, Scope.INTERNAL: INTERNAL_TOKEN, Scope.OPS: OPS_TOKEN}


def _auth(case: Any) -> dict[str, str]:
    """The token of the operation's scope (the API token where several open it)."""
    scopes = _SCOPES[case.path]
    if not scopes:
        return {}  # /healthz
    scope = Scope.API if Scope.API in scopes else next(iter(scopes))
    return bearer(_TOKEN_OF[scope])


@pytest.fixture(
    scope="module",
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def base_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The API served over a seeded store of each SQL backend."""
    with served(request.param, HttpSettings(**TOKENS), _seed) as url:
        yield url


@schema.hook("map_path_parameters")
def _known_batches(context: Any, path_parameters: dict[str, Any] | None) -> dict[str, Any] | None:
    if not isinstance(path_parameters, dict):
        return path_parameters
    batch_id = path_parameters.get("batch_id")
    if isinstance(batch_id, str):
        digest = zlib.crc32(batch_id.encode("utf-8", "surrogatepass"))
        if digest % 2 == 0:
            path_parameters["batch_id"] = KNOWN[(digest // 2) % len(KNOWN)]
    return path_parameters


PIPELINES = ("nlp", "cj_assessment", "ai_feedback", "comprehensive")
PHASES = ("spellcheck", "nlp", "cj_assessment", "ai_feedback")


@schema.hook("map_body")
def _known_names(context: Any, body: Any) -> Any:
    if not isinstance(body, dict):
        return body
    for field, names in (("requested_pipeline", PIPELINES), ("phase_name", PHASES)):
        value = body.get(field)
        if isinstance(value, str):
            digest = zlib.crc32(value.encode("utf-8", "surrogatepass"))
            if digest % 2 == 0:
                body[field] = names[(digest // 2) % len(names)]
    return body


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_http_api_never_answers_5xx_in_memory(case: Any) -> None:
    case.call_and_validate(headers=_auth(case), checks=[not_a_server_error])


@schema.parametrize()
@settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_http_api_never_answers_5xx_on_sql_stores(case: Any, base_url: str) -> None:
    case.call_and_validate(base_url=base_url, headers=_auth(case), checks=[not_a_server_error])


def test_every_operation_documents_its_success_answer() -> None:
    document = APP.openapi()
    expected = {
        ("post", "/v1/batches/register"): "202",
        ("post", "/v1/batches/{batch_id}/pipelines"): "202",
        ("post", "/v1/batches/{batch_id}/pipelines/{pipeline}/preflight"): "200",
        ("post", "/v1/batches/{batch_id}/cancel"): "202",
        ("post", "/v1/batches/{batch_id}/retry-phase"): "202",
        ("get", "/v1/batches/{batch_id}"): "200",
        ("get", "/v1/batches/{batch_id}/history"): "200",
        ("get", "/v1/batches/{batch_id}/diagram"): "200",
        ("get", "/v1/batches/{batch_id}/status"): "200",
        ("post", "/internal/v1/pipelines/define"): "200",
        ("post", "/internal/v1/phases/complete"): "200",
        ("get", "/healthz"): "200",
        ("get", "/v1/ops/waiting"): "200",
        ("get", "/v1/ops/stalled-runs"): "200",
    }
    found = {(method, path) for path, item in document["paths"].items() for method in item}
    assert found == set(expected)
    for (method, path), status in expected.items():
        answers = document["paths"][path][method]["responses"]
        content = answers[status]["content"]
        assert content, (method, path)
        if "application/json" in content:
            assert "$ref" in content["application/json"]["schema"], (method, path)
        if path.startswith("/v1/") or path.startswith("/internal/"):
            assert "422" in answers, (method, path)
    denial = document["paths"]["/v1/batches/{batch_id}/pipelines"]["post"]["responses"]
    for status in ("400", "402", "404", "409", "429"):
        ref = denial[status]["content"]["application/json"]["schema"]["$ref"]
        assert ref.endswith("/DenialBody")
