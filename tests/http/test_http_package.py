"""The package's public surface and its mounting on an existing app."""

from __future__ import annotations

import pipeline_state_http
from fastapi import FastAPI
from pipeline_state_http import DENIAL_STATUS, HttpSettings, denial_status, install

from pipeline_state import InMemoryStore, PipelineService

from .conftest import TOKENS, MakeReady, authed_client

EXPECTED = {
    "HttpApiError",
    "HttpServer",
    "HttpSettings",
    "HttpSettingsError",
    "PipelineDeniedError",
    "PipelineStateClient",
    "Settings",
    "UnauthorizedError",
    "create_app",
    "install",
    "open",
}


def test_public_api_is_exactly_all() -> None:
    assert set(pipeline_state_http.__all__) == EXPECTED
    for name in EXPECTED:
        assert getattr(pipeline_state_http, name) is not None


def test_denial_reasons_map_in_one_table() -> None:
    assert dict(DENIAL_STATUS) == {
        "batch_not_found": 404,
        "batch_not_ready": 409,
        "pipeline_already_active": 409,
        "correlation_reused": 409,
        "unknown_pipeline": 400,
        "prompt_not_attached": 400,
        "insufficient_credits": 402,
        "rate_limit_exceeded": 429,
    }
    assert denial_status("dependencies_not_completed") == 409


async def test_install_mounts_the_api_under_a_prefix_beside_the_host_routes(
    service: PipelineService, make_ready: MakeReady
) -> None:
    await make_ready("b1")
    host = FastAPI()

    @host.post("/echo")
    async def echo(body: dict[str, str]) -> dict[str, str]:
        return body

    install(host, service, settings=HttpSettings(max_body_bytes=100, **TOKENS), prefix="/state")
    async with authed_client(host) as http:
        assert (await http.get("/state/v1/batches/b1")).json()["batch_id"] == "b1"
        assert (await http.get("/state/healthz")).status_code == 200
        big = {"x": "y" * 500}
        assert (await http.post("/echo", json=big)).status_code == 200  # the host's routes keep their limits
        refused = await http.post("/state/v1/batches/b1/cancel", json={"reason": "y" * 500})
        assert refused.status_code == 413


def test_the_package_works_with_a_fresh_service() -> None:
    app = pipeline_state_http.create_app(PipelineService(InMemoryStore()))
    assert app.title == "pipeline-state"
