"""Bearer tokens, the body size limit, error answers without internals, and HTML escaping."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from pipeline_state_http import HttpSettings, create_app
from pipeline_state_http.security import tokens_match

from pipeline_state import InMemoryStore, ManualClock, PipelineService
from pipeline_state.errors import CorruptStateError
from pipeline_state.model import BatchState

from .conftest import BASE, MakeReady

API, INTERNAL = "api-secret", "internal-secret"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def settings() -> HttpSettings:
    return HttpSettings(api_token=API, internal_token=INTERNAL, max_body_bytes=2048)


async def test_api_routes_need_the_api_token(http: httpx.AsyncClient, make_ready: MakeReady) -> None:
    await make_ready("b1")
    missing = await http.get("/v1/batches/b1")
    assert missing.status_code == 401
    assert missing.json()["error"] == "unauthorized"
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await http.get("/v1/batches/b1", headers=bearer("wrong"))).status_code == 401
    assert (await http.get("/v1/batches/b1", headers=bearer(INTERNAL))).status_code == 401
    assert (await http.get("/v1/batches/b1", headers={"Authorization": API})).status_code == 401
    assert (await http.get("/v1/batches/b1", headers=bearer(API))).status_code == 200
    denied = await http.post("/v1/batches/b1/pipelines", json={"requested_pipeline": "nlp", "user_id": "t"})
    assert denied.status_code == 401
    assert (await http.get("/v1/batches/b1/status")).status_code == 401  # not public by default


async def test_internal_routes_need_the_internal_token(
    http: httpx.AsyncClient, make_ready: MakeReady
) -> None:
    await make_ready("b1")
    body = {"batch_id": "b1", "phase_name": "spellcheck", "success": True}
    assert (await http.post("/internal/v1/phases/complete", json=body)).status_code == 401
    assert (
        await http.post("/internal/v1/phases/complete", json=body, headers=bearer(API))
    ).status_code == 401
    ok = await http.post("/internal/v1/phases/complete", json=body, headers=bearer(INTERNAL))
    assert ok.status_code == 200


async def test_healthz_is_open(http: httpx.AsyncClient) -> None:
    assert (await http.get("/healthz")).status_code == 200


async def test_the_status_page_can_be_made_public(service: PipelineService, make_ready: MakeReady) -> None:
    await make_ready("b1")
    app = create_app(service, settings=HttpSettings(api_token=API, public_status_page=True))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
        assert (await http.get("/v1/batches/b1/status")).status_code == 200
        assert (await http.get("/v1/batches/b1")).status_code == 401


async def test_the_schema_declares_the_token_schemes_only_when_set(service: PipelineService) -> None:
    guarded = create_app(service, settings=HttpSettings(api_token=API, internal_token=INTERNAL)).openapi()
    assert set(guarded["components"]["securitySchemes"]) == {"apiToken", "internalToken"}
    assert guarded["paths"]["/internal/v1/phases/complete"]["post"]["security"] == [{"internalToken": []}]
    open_app = create_app(service).openapi()
    assert "securitySchemes" not in open_app.get("components", {})


def test_tokens_match_in_constant_time_helper() -> None:
    assert tokens_match("abc", "abc")
    assert not tokens_match("abc", "abd")
    assert not tokens_match("", "abc")
    assert not tokens_match("abc\u00e9", "abc")


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="api_token"):
        HttpSettings(api_token="")
    with pytest.raises(ValueError, match="max_body_bytes"):
        HttpSettings(max_body_bytes=0)
    with pytest.raises(ValueError, match="default_page_size"):
        HttpSettings(default_page_size=50, max_page_size=10)
    assert API not in repr(HttpSettings(api_token=API))


async def test_bodies_over_the_limit_are_413(http: httpx.AsyncClient, make_ready: MakeReady) -> None:
    await make_ready("b1")
    big = {
        "requested_pipeline": "nlp",
        "user_id": "t",
        "retry_reason": "x" * 1900,
        "prompt_payload": {"p": "y" * 500},
    }
    response = await http.post("/v1/batches/b1/pipelines", json=big, headers=bearer(API))
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: streamed in chunks
        yield b'{"requested_pipeline": "nlp", "user_id": "t", "retry_reason": "'
        for _ in range(5):
            yield b"x" * 1000
        yield b'"}'

    streamed = await http.post(
        "/v1/batches/b1/pipelines",
        content=chunks(),
        headers={**bearer(API), "Content-Type": "application/json"},
    )
    assert streamed.status_code == 413
    assert (await http.get("/v1/batches/b1", headers=bearer(API))).json()["active_run"] is None
    small = await http.post(
        "/v1/batches/b1/pipelines", json={"requested_pipeline": "nlp", "user_id": "t"}, headers=bearer(API)
    )
    assert small.status_code == 202


async def test_an_unreadable_content_length_is_400(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/v1/batches/register", content=b"{}", headers={**bearer(API), "Content-Length": "abc"}
    )
    assert response.status_code == 400


class BrokenStore(InMemoryStore):
    """A store that fails the way a broken driver or a corrupt row would."""

    def __init__(self, failure: Exception) -> None:
        super().__init__()
        self.failure = failure

    async def load(self, batch_id: str) -> BatchState | None:
        if batch_id.startswith("boom"):
            raise self.failure
        return await super().load(batch_id)


@pytest.mark.parametrize(
    ("failure", "status", "code"),
    [
        (RuntimeError("password=hunter2 at db.internal:5432"), 500, "internal_error"),
        (CorruptStateError("boom", "bad json at offset 7: secret"), 500, "corrupt_state"),
    ],
)
async def test_server_errors_answer_without_internals(failure: Exception, status: int, code: str) -> None:
    service = PipelineService(BrokenStore(failure), clock=ManualClock())
    app = create_app(service)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
        response = await http.get("/v1/batches/boom")
        assert response.status_code == status
        assert response.json() == {"error": code, "detail": "internal server error"}
        for leak in ("hunter2", "secret", "Traceback", 'File "'):
            assert leak not in response.text
        posted = await http.post(
            "/v1/batches/boom/pipelines", json={"requested_pipeline": "nlp", "user_id": "t"}
        )
        assert posted.status_code == status
        assert (await http.get("/healthz")).status_code == 200


async def test_user_data_is_escaped_in_the_status_page(service: PipelineService) -> None:
    app = create_app(service)
    evil = '<script>alert("x")</script>'
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
        body = {"batch_id": "b<i>1", "expected_essay_count": 1, "user_id": evil, "course_code": "ENG5"}
        assert (await http.post("/v1/batches/register", json=body)).status_code == 202
        page = await http.get("/v1/batches/b%3Ci%3E1/status")
        assert page.status_code == 200
        assert evil not in page.text
        assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page.text
        assert "b<i>1" not in page.text
        assert "b&lt;i&gt;1" in page.text
        csp = page.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp
        assert "script-src 'nonce-" in csp
        nonce = csp.split("'nonce-")[1].split("'")[0]
        assert page.text.count("<script") == 1
        assert f'<script nonce="{nonce}">' in page.text
