"""Bearer tokens on every route, the body size limit, error answers without internals, ids
checked before the store, and user text escaped wherever it is rendered."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from urllib.parse import quote

import httpx
import pytest
from pipeline_state_http import HttpSettings, create_app
from pipeline_state_http.routes import OPERATOR_VIEWS
from pipeline_state_http.security import route_table, tokens_match
from pipeline_state_http.settings import Scope
from starlette.applications import Starlette
from starlette.routing import Mount

from pipeline_state import InMemoryStore, ManualClock, PipelineService
from pipeline_state.errors import BadCommandError, CorruptStateError, RejectedDataError
from pipeline_state.ports import BatchState
from pipeline_state.profiles.huleedu.results import InMemoryResultsStore

from .conftest import BASE, MakeReady, bearer

API, INTERNAL, OPS = "api-secret", "internal-secret", "ops-secret"
TOKEN_OF = {Scope.API: API, Scope.INTERNAL: INTERNAL, Scope.OPS: OPS}


@pytest.fixture
def settings() -> HttpSettings:
    return HttpSettings(api_token=API, internal_token=INTERNAL, ops_token=OPS, max_body_bytes=2048)


@pytest.fixture
async def http(app) -> AsyncIterator[httpx.AsyncClient]:  # type: ignore[no-untyped-def]
    """A client that sends no token unless a test gives one."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
        yield client


# --- every route, from the app's own route table -------------------------------------------


def _full_app(settings: HttpSettings | None = None) -> object:
    """The app with every optional part mounted (the results routes)."""
    service = PipelineService(InMemoryStore(), clock=ManualClock())
    default = HttpSettings(api_token=API, internal_token=INTERNAL, ops_token=OPS)
    return create_app(service, settings=settings or default, results=InMemoryResultsStore())


FULL_APP = _full_app()
ROUTES = route_table(FULL_APP)
ROUTE_IDS = [f"{method} {path}" for method, path, _ in ROUTES]
GUARDED = [route for route in ROUTES if route[2]]
"""Every route that needs a token (all but ``/healthz``, see the scope-rule test)."""
GUARDED_IDS = [f"{method} {path}" for method, path, _ in GUARDED]


def _url(path: str) -> str:
    return path.replace("{", "x-").replace("}", "")


def test_every_route_is_in_the_scope_its_path_says() -> None:
    """``/healthz`` is the only open route; ``/v1/*`` and the schema and docs need the API
    token (the operator views: the API or the operations token); ``/internal/*`` the
    internal token; a route of the operations scope alone may live anywhere."""
    assert len(ROUTES) >= 17
    for method, path, scopes in ROUTES:
        where = f"{method} {path}"
        if path == "/healthz":
            assert scopes == set(), where
        elif scopes == {Scope.OPS}:
            continue
        elif path.startswith("/internal/"):
            assert scopes == {Scope.INTERNAL}, where
        elif path in OPERATOR_VIEWS:
            assert scopes == {Scope.API, Scope.OPS}, where
        elif path.startswith("/v1/") or path in ("/openapi.json", "/asyncapi.json", "/docs", "/redoc"):
            assert scopes == {Scope.API}, where
        else:
            raise AssertionError(f"{where}: no scope rule covers this route")


@pytest.mark.parametrize(("method", "path", "scopes"), GUARDED, ids=GUARDED_IDS)
async def test_every_route_refuses_no_token_a_wrong_one_and_other_scopes(
    method: str, path: str, scopes: frozenset[Scope]
) -> None:
    others = [TOKEN_OF[scope] for scope in Scope if scope not in scopes]
    attempts: list[dict[str, str]] = [
        {},
        bearer("wrong-token"),
        {"Authorization": API},  # not a bearer credential
        {"Authorization": f"Basic {API}"},
        *[bearer(token) for token in others],
    ]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=FULL_APP), base_url=BASE) as http:  # type: ignore[arg-type]
        for headers in attempts:
            answer = await http.request(method, _url(path), headers=headers, json={})
            assert answer.status_code == 401, (method, path, headers)
            assert answer.json()["error"] == "unauthorized"
            assert answer.headers["WWW-Authenticate"].startswith("Bearer")
            assert answer.headers["X-Content-Type-Options"] == "nosniff"
        for scope in scopes:
            answer = await http.request(method, _url(path), headers=bearer(TOKEN_OF[scope]), json={})
            assert answer.status_code != 401, (method, path, scope)


@pytest.mark.parametrize(("method", "path", "scopes"), ROUTES, ids=ROUTE_IDS)
async def test_without_tokens_every_route_but_healthz_is_closed(
    method: str, path: str, scopes: frozenset[Scope]
) -> None:
    """``create_app(service)`` with default settings: no token configured means refused."""
    app = create_app(PipelineService(InMemoryStore()), results=InMemoryResultsStore())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
        for headers in ({}, bearer("anything"), bearer(API)):
            answer = await http.request(method, _url(path), headers=headers, json={})
            if path == "/healthz":
                assert answer.status_code == 200
            else:
                assert answer.status_code == 401, (method, path)
                assert answer.json()["detail"] == "no token is configured for this route"


async def test_without_tokens_registration_and_completions_are_refused() -> None:
    """The measured hole: an app built with default settings accepted anyone's writes."""
    service = PipelineService(InMemoryStore(), clock=ManualClock())
    app = create_app(service)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
        body = {"batch_id": "x", "expected_essay_count": 1, "user_id": "t", "course_code": "ENG5"}
        assert (await http.post("/v1/batches/register", json=body)).status_code == 401
        request = {"requested_pipeline": "nlp", "user_id": "t"}
        assert (await http.post("/v1/batches/x/pipelines", json=request)).status_code == 401
        done = {"batch_id": "x", "phase_name": "spellcheck", "success": True}
        assert (await http.post("/internal/v1/phases/complete", json=done)).status_code == 401
        assert (await http.get("/openapi.json")).status_code == 401
        assert (await http.get("/docs")).status_code == 401
    assert await service.store.load("x") is None


async def test_insecure_mode_opens_only_the_scopes_without_a_token(caplog: pytest.LogCaptureFixture) -> None:
    service = PipelineService(InMemoryStore(), clock=ManualClock())
    with caplog.at_level(logging.WARNING, logger="pipeline_state_http"):
        app = create_app(service, settings=HttpSettings(api_token=API, insecure_no_auth=True))
    assert "insecure mode: the internal routes are open to anyone" in caplog.text
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
        body = {"batch_id": "x", "expected_essay_count": 1, "user_id": "t", "course_code": "ENG5"}
        assert (await http.post("/v1/batches/register", json=body)).status_code == 401
        assert (await http.post("/v1/batches/register", json=body, headers=bearer(API))).status_code == 202
        done = {"batch_id": "x", "phase_name": "spellcheck", "success": True}
        assert (await http.post("/internal/v1/phases/complete", json=done)).status_code == 200
        assert (await http.get("/v1/batches/x/diagram")).status_code == 200  # API or ops: ops is open


async def test_the_schema_and_docs_need_the_api_token(http: httpx.AsyncClient) -> None:
    for path in ("/openapi.json", "/docs", "/redoc"):
        assert (await http.get(path)).status_code == 401, path
        assert (await http.get(path, headers=bearer(INTERNAL))).status_code == 401, path
        assert (await http.get(path, headers=bearer(OPS))).status_code == 401, path
        assert (await http.get(path, headers=bearer(API))).status_code == 200, path
    assert (await http.get("/openapi.json", headers=bearer(API))).json()["info"]["title"] == "pipeline-state"


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
    assert (await http.get("/v1/batches/b1/status", headers=bearer(OPS))).status_code == 200
    assert (await http.get("/v1/batches/b1/diagram", headers=bearer(OPS))).status_code == 200
    assert (await http.get("/v1/batches/b1", headers=bearer(OPS))).status_code == 401


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


async def test_the_schema_declares_the_token_schemes_unless_insecure(service: PipelineService) -> None:
    guarded = create_app(service, settings=HttpSettings(api_token=API, internal_token=INTERNAL)).openapi()
    assert set(guarded["components"]["securitySchemes"]) == {"apiToken", "internalToken", "opsToken"}
    assert guarded["paths"]["/internal/v1/phases/complete"]["post"]["security"] == [{"internalToken": []}]
    assert guarded["paths"]["/v1/batches/{batch_id}"]["get"]["security"] == [{"apiToken": []}]
    diagram = guarded["paths"]["/v1/batches/{batch_id}/diagram"]["get"]["security"]
    assert diagram == [{"apiToken": []}, {"opsToken": []}]
    closed = create_app(service).openapi()  # default settings: the schemes are still required
    assert set(closed["components"]["securitySchemes"]) == {"apiToken", "internalToken", "opsToken"}
    open_app = create_app(service, settings=HttpSettings(insecure_no_auth=True)).openapi()
    assert "securitySchemes" not in open_app.get("components", {})


def test_tokens_match_in_constant_time_helper() -> None:
    assert tokens_match("abc", "abc")
    assert not tokens_match("abc", "abd")
    assert not tokens_match("", "abc")
    assert not tokens_match("abc\u00e9", "abc")


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="api_token"):
        HttpSettings(api_token="")
    with pytest.raises(ValueError, match="ops_token"):
        HttpSettings(ops_token=" padded ")
    with pytest.raises(ValueError, match="header_timeout_seconds"):
        HttpSettings(header_timeout_seconds=0)
    with pytest.raises(ValueError, match="max_body_bytes"):
        HttpSettings(max_body_bytes=0)
    with pytest.raises(ValueError, match="default_page_size"):
        HttpSettings(default_page_size=50, max_page_size=10)
    assert API not in repr(HttpSettings(api_token=API))
    assert OPS not in repr(HttpSettings(ops_token=OPS))


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


def _nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


@pytest.mark.parametrize("depth", [9, 300])  # 300: within the 2,048-byte body limit
async def test_a_deep_prompt_payload_is_422_on_the_pipeline_route(
    http: httpx.AsyncClient, make_ready: MakeReady, depth: int
) -> None:
    # Before: from about 256 levels the route dumped the body with pydantic's serializer,
    # whose own depth limit raised first: a 500 and a traceback in the log per request.
    await make_ready("b1")
    raw = f'{{"requested_pipeline": "nlp", "user_id": "t", "prompt_payload": {_nested(depth)}}}'
    headers = {**bearer(API), "Content-Type": "application/json"}
    dry = await http.post("/v1/batches/b1/pipelines/nlp/preflight", content=raw, headers=headers)
    assert dry.status_code == 422
    answer = await http.post("/v1/batches/b1/pipelines", content=raw, headers=headers)
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == "data.prompt_payload"
    assert (await http.get("/v1/batches/b1", headers=bearer(API))).json()["active_run"] is None


def _register_padded() -> dict[str, object]:
    """A valid registration padded far past the 2,048-byte limit (unknown fields are ignored)."""
    return {
        "batch_id": "big",
        "expected_essay_count": 1,
        "user_id": "t",
        "course_code": "ENG5",
        "pad": "x" * 50_000,
    }


async def test_the_body_limit_holds_under_a_root_path_and_a_mount(app) -> None:  # type: ignore[no-untyped-def]
    # Before: the limit matched ``scope["path"]``, which holds the root path an ASGI server
    # (``uvicorn --root-path``) or a parent app's mount puts before the routes: a padded
    # registration got 202 there, and the 408 of a slow body did not apply either.
    behind_proxy = httpx.ASGITransport(app=app, root_path="/api")
    mounted = httpx.ASGITransport(app=Starlette(routes=[Mount("/state", app=app)]))
    for transport, prefix in ((behind_proxy, "/api"), (mounted, "/state")):
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
            assert (await http.get(f"{prefix}/v1/batches/nope", headers=bearer(API))).status_code == 404
            answer = await http.post(
                f"{prefix}/v1/batches/register", json=_register_padded(), headers=bearer(API)
            )
            assert answer.status_code == 413, answer.text[:200]
            assert (await http.get(f"{prefix}/v1/batches/big", headers=bearer(API))).status_code == 404


async def test_an_idempotency_key_names_the_same_request_under_any_root_path(
    app, make_ready: MakeReady
) -> None:  # type: ignore[no-untyped-def]
    # The event id of a keyed request comes from the path the routes match: a retry that
    # reaches the service through another root path is the same request, answered as the
    # first (not a second pipeline request, refused while the first run is active).
    await make_ready("k1")
    body = {"requested_pipeline": "nlp", "user_id": "t"}
    headers = {**bearer(API), "Idempotency-Key": "request-k1"}
    answers = []
    for transport, prefix in (
        (httpx.ASGITransport(app=app), ""),
        (httpx.ASGITransport(app=app, root_path="/api"), "/api"),
    ):
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
            answers.append(await http.post(f"{prefix}/v1/batches/k1/pipelines", json=body, headers=headers))
    assert [a.status_code for a in answers] == [202, 202], answers[1].text
    assert answers[0].json() == answers[1].json()


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

    async def load_with_waiting(self, batch_id: str) -> tuple[BatchState | None, bool]:
        """The commands' read path (the batch and whether facts of it wait) fails alike."""
        if batch_id.startswith("boom"):
            raise self.failure
        return await super().load_with_waiting(batch_id)

    async def load_for_event(self, batch_id: str, event_id: str) -> tuple[bool, BatchState | None, bool]:
        if batch_id.startswith("boom"):
            raise self.failure
        return await super().load_for_event(batch_id, event_id)

    async def load_for_events(
        self, events: Sequence[tuple[str, str]]
    ) -> tuple[frozenset[str], dict[str, tuple[BatchState | None, bool]]]:
        if any(batch_id.startswith("boom") for batch_id, _ in events):
            raise self.failure
        return await super().load_for_events(events)


@pytest.mark.parametrize(
    ("failure", "status", "code"),
    [
        (RuntimeError("password=hunter2 at db.internal:5432"), 500, "internal_error"),
        (CorruptStateError("boom", "bad json at offset 7: secret"), 500, "corrupt_state"),
    ],
)
async def test_server_errors_answer_without_internals(failure: Exception, status: int, code: str) -> None:
    service = PipelineService(BrokenStore(failure), clock=ManualClock())
    app = create_app(service, settings=HttpSettings(api_token=API))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=BASE, headers=bearer(API)
    ) as http:
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
    app = create_app(service, settings=HttpSettings(api_token=API))
    evil = '<script>alert("x")</script>'
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=BASE, headers=bearer(API)
    ) as http:
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


# --- bad input is a 4xx, never "retry later" ---------------------------------------------


class CountingStore(InMemoryStore):
    """Counts the batches it is asked to load; refuses the ids of ``refused`` as invalid."""

    def __init__(self, refused: Exception | None = None) -> None:
        super().__init__()
        self.loads: list[str] = []
        self.refused = refused

    async def load(self, batch_id: str) -> BatchState | None:
        self.loads.append(batch_id)
        if self.refused is not None and batch_id.startswith("bad"):
            raise self.refused
        return await super().load(batch_id)


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/v1/batches/a%00b", "path.batch_id"),
        ("/v1/batches/a%01b/history", "path.batch_id"),
        ("/v1/batches/" + "x" * 257, "path.batch_id"),
        ("/v1/batches/a%0Ab/diagram", "path.batch_id"),
        ("/v1/results/batches/a%00b", "path.batch_id"),
        ("/v1/results/teachers/" + "t" * 300, "path.user_id"),
    ],
)
async def test_bad_ids_in_paths_are_422_before_the_store_is_asked(path: str, field: str) -> None:
    store = CountingStore()
    app = create_app(
        PipelineService(store, clock=ManualClock()),
        settings=HttpSettings(api_token=API),
        results=InMemoryResultsStore(),
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
        answer = await http.get(path, headers=bearer(API))
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"] == "validation_error"
    assert answer.json()["field"] == field
    assert store.loads == []


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/batches/b1/pipelines", {"requested_pipeline": "nlp", "user_id": "t\x00"}, "body.user_id"),
        ("/v1/batches/b1/pipelines", {"requested_pipeline": "nlp", "user_id": "u" * 257}, "body.user_id"),
        ("/v1/batches/b1/retry-phase", {"phase_name": "nlp\x00", "user_id": "t"}, "body.phase_name"),
        ("/v1/batches/b1/cancel", {"user_id": "t\x00"}, "body.user_id"),
    ],
)
async def test_bad_ids_in_bodies_are_422(path: str, body: dict[str, str], field: str) -> None:
    store = CountingStore()
    app = create_app(PipelineService(store, clock=ManualClock()), settings=HttpSettings(api_token=API))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
        answer = await http.post(path, json=body, headers=bearer(API))
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == field
    assert store.loads == []


async def test_a_lone_surrogate_in_a_body_id_is_422() -> None:
    service = PipelineService(CountingStore(), clock=ManualClock())
    app = create_app(service, settings=HttpSettings(api_token=API))
    raw = b'{"requested_pipeline": "nlp", "user_id": "t\\ud800"}'
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
        answer = await http.post(
            "/v1/batches/b1/pipelines",
            content=raw,
            headers={**bearer(API), "Content-Type": "application/json"},
        )
    assert answer.status_code == 422, answer.text


@pytest.mark.parametrize(
    ("failure", "status", "code"),
    [
        (RejectedDataError("value too long for type varchar(200)", batch_id="bad"), 422, "rejected_data"),
        (BadCommandError("no such thing", batch_id="bad"), 400, "bad_command"),
    ],
)
async def test_data_the_store_refuses_is_a_4xx_without_an_error_log(
    failure: Exception, status: int, code: str, caplog: pytest.LogCaptureFixture
) -> None:
    service = PipelineService(CountingStore(refused=failure), clock=ManualClock())
    app = create_app(service, settings=HttpSettings(api_token=API))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
        with caplog.at_level(logging.INFO, logger="pipeline_state_http"):
            answer = await http.get("/v1/batches/bad-1", headers=bearer(API))
    assert answer.status_code == status
    assert answer.json()["error"] == code
    assert "retry" not in answer.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# --- user text is escaped wherever it is rendered ----------------------------------------

EVIL_ID = '<img src=x onerror=alert(1)>%%{init: {"securityLevel": "loose"}}%%'


async def test_the_diagram_escapes_user_text_and_is_never_sniffed(service: PipelineService) -> None:
    app = create_app(service, settings=HttpSettings(api_token=API))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=BASE, headers=bearer(API)
    ) as http:
        body = {"batch_id": EVIL_ID, "expected_essay_count": 1, "user_id": "t", "course_code": "ENG5"}
        assert (await http.post("/v1/batches/register", json=body)).status_code == 202
        for view in ("batch", "all"):
            answer = await http.get(f"/v1/batches/{quote(EVIL_ID, safe='')}/diagram", params={"view": view})
            assert answer.status_code == 200
            for raw in ("<img", "onerror=alert(1)>", "%%{init", '"securityLevel"'):
                assert raw not in answer.text, (view, raw)
            assert answer.headers["Content-Type"] == "text/plain; charset=utf-8"
            assert answer.headers["X-Content-Type-Options"] == "nosniff"
            assert answer.headers["Content-Security-Policy"] == "default-src 'none'"
        assert "#60;img src#61;x onerror#61;alert(1)#62;" in answer.text  # the "all" view names the batch


async def test_every_answer_says_nosniff(http: httpx.AsyncClient, make_ready: MakeReady) -> None:
    await make_ready("b1")
    for path in ("/v1/batches/b1", "/v1/batches/missing", "/v1/batches/b1/history", "/healthz"):
        answer = await http.get(path, headers=bearer(API))
        assert answer.headers["X-Content-Type-Options"] == "nosniff", path
    refused = await http.post("/v1/batches/b1/cancel", content=b"x" * 4096, headers=bearer(API))
    assert refused.status_code == 413
    assert refused.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (
            "/v1/batches/b1/pipelines",
            {"requested_pipeline": "nlp", "user_id": "t1", "retry_reason": "a\x00b"},
            "retry_reason",
        ),
        ("/v1/batches/b1/cancel", {"reason": "a\x00b"}, "reason"),
        (
            "/v1/batches/b1/retry-phase",
            {"phase_name": "nlp", "user_id": "t1", "retry_reason": "a\x00b"},
            "retry_reason",
        ),
    ],
)
async def test_a_nul_in_a_reason_is_422_on_every_store(path: str, body: dict[str, str], field: str) -> None:
    """Found by review: reasons took a NUL, which SQLite stored and PostgreSQL refused."""
    store = CountingStore()
    app = create_app(PipelineService(store, clock=ManualClock()), settings=HttpSettings(api_token=API))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
        answer = await http.post(path, json=body, headers=bearer(API))
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == f"body.{field}"
    assert store.loads == []
