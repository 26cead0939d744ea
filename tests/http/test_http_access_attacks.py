"""Found by an attack on the HTTP adapter's access rules: tokens and caching on every
operational route.

Were defects (fixed; the tests failed before): the diagram view of a batch (same data and
tokens as the status page) went out without ``Cache-Control: no-store``; ``HttpSettings``
took a token a header cannot carry (non-ASCII, an inner line break or tab), so the scope it
guarded could never be opened (now refused: RFC 6750 token characters only).

Held: unauthenticated requests never reach a store or reveal whether a batch exists (byte
-identical 401s); Authorization header variants on every operational route; raw path tricks
and methods on a real uvicorn; the public switches open only their own route.
"""

from __future__ import annotations

import inspect
import socket
from typing import Any

import httpx
import pytest
from pipeline_state_http import HttpSettings, PipelineStateClient, create_app
from pipeline_state_http.security import route_table

from pipeline_state import InMemoryStore, ManualClock, PipelineService
from pipeline_state.profiles.huleedu.results import InMemoryResultsStore
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

from .conftest import BASE
from .serving import served

pytestmark = pytest.mark.timeout(120)

API, INTERNAL, OPS = "w2a-api-token", "w2a-internal-token", "w2a-ops-token"
SECRET_OWNER = "owner-secret-4711"
METRICS_TEXT = b"# HELP w2_secret_metric x\n# TYPE w2_secret_metric gauge\nw2_secret_metric 42\n"
ENV = HuleEduEnvelopes()


class _Spy:
    """Records the public coroutine methods called on it while ``watching``."""

    watching = False
    calls: list[str]

    def __getattribute__(self, name: str) -> Any:
        attr = super().__getattribute__(name)
        if name.startswith("_") or not inspect.iscoroutinefunction(attr):
            return attr

        async def spied(*args: Any, **kwargs: Any) -> Any:
            if object.__getattribute__(self, "watching"):
                object.__getattribute__(self, "calls").append(name)
            return await attr(*args, **kwargs)

        return spied


class SpyStore(_Spy, InMemoryStore):
    def __init__(self) -> None:
        InMemoryStore.__init__(self)
        self.calls = []


class SpyResults(_Spy, InMemoryResultsStore):
    def __init__(self) -> None:
        InMemoryResultsStore.__init__(self)
        self.calls = []


class SpyMetrics(_Spy):
    content_type = "text/plain; version=0.0.4; charset=utf-8"

    def __init__(self) -> None:
        self.calls = []

    async def exposition(self) -> bytes:
        return METRICS_TEXT


async def _seed(service: PipelineService, batch_id: str = "b1") -> None:
    await service.handle_message(*ENV.register(batch_id, items=2, owner=SECRET_OWNER))
    await service.handle_message(*ENV.provisioned(batch_id, ENV.item_ids(batch_id, 2)))


def _url(path: str, batch_id: str) -> str:
    return (
        path.replace("{batch_id}", batch_id)
        .replace("{pipeline}", "nlp")
        .replace("{class_id}", "c1")
        .replace("{user_id}", SECRET_OWNER)
    )


def _settings(**kw: Any) -> HttpSettings:
    return HttpSettings(api_token=API, internal_token=INTERNAL, ops_token=OPS, **kw)


BAD_AUTH: list[list[tuple[str, str]]] = [
    [],
    [("Authorization", "")],
    [("Authorization", "Bearer")],
    [("Authorization", "Bearer ")],
    [("Authorization", "Bearer  ")],
    [("Authorization", "Bearer null")],
    [("Authorization", "Bearer undefined")],
    [("Authorization", f"Bearer\t{OPS}")],
    [("Authorization", f"Bearer:{OPS}")],
    [("Authorization", f"Bearer={OPS}")],
    [("Authorization", f"Basic {OPS}")],
    [("Authorization", f"Token {OPS}")],
    [("Authorization", f"Digest {OPS}")],
    [("Authorization", OPS)],
    [("Authorization", f"Bearer {OPS.upper()}")],
    [("Authorization", f"Bearer {OPS[:-1]}")],
    [("Authorization", f"Bearer {OPS}x")],
    [("Authorization", f"Bearer x{OPS}")],
    [("Authorization", f"Bearer {OPS}\x00")],
    [("Authorization", f"Bearer {OPS} {OPS}")],
    [("Authorization", f"Bearer {OPS}, Bearer {API}")],
    [("Authorization", f"Bearer {OPS},Bearer {API}")],
    [("Authorization", f'Bearer "{OPS}"')],
    [("Authorization", "Bearer x"), ("Authorization", f"Bearer {OPS}")],  # the first one counts
    [("X-Authorization", f"Bearer {OPS}")],
    [("Proxy-Authorization", f"Bearer {OPS}")],
    [("X-Api-Key", OPS)],
    [("Cookie", f"token={OPS}; access_token={OPS}; Authorization=Bearer {OPS}")],
]


async def test_unauthenticated_requests_never_reach_a_store_or_reveal_a_batch() -> None:
    """For every guarded route of an app with results and metrics, and every bad credential
    (plus the token in the query string): 401, the same body and headers whether the batch
    exists or not, and neither the state store, the results store nor the metrics source is
    asked anything; no answer carries the owner id or the metrics."""
    store, results, metrics = SpyStore(), SpyResults(), SpyMetrics()
    service = PipelineService(store, clock=ManualClock())
    await _seed(service)
    app = create_app(service, settings=_settings(), results=results, metrics=metrics)
    routes = [(m, p, s) for m, p, s in route_table(app) if s]
    assert {p for _, p, _ in routes} >= {
        "/metrics", "/asyncapi.json", "/v1/ops/waiting", "/v1/ops/stalled-runs",
        "/v1/batches/{batch_id}/status",
        "/v1/batches/{batch_id}/diagram", "/v1/results/batches/{batch_id}", "/docs", "/openapi.json",
    }  # fmt: skip
    for spy in (store, results, metrics):
        spy.watching = True
    query = {"access_token": OPS, "token": API, "api_key": OPS, "authorization": f"Bearer {OPS}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
        for method, path, _ in routes:
            for headers in [*BAD_AUTH, []]:
                params = query if not headers else None
                answers = []
                for batch_id in ("b1", "nope-9"):
                    answer = await http.request(
                        method, _url(path, batch_id), headers=headers, params=params, json={}
                    )
                    assert answer.status_code == 401, (method, path, headers, answer.status_code)
                    assert SECRET_OWNER not in answer.text
                    assert "w2_secret_metric" not in answer.text
                    answers.append(
                        (
                            answer.content,
                            sorted((k, v) for k, v in answer.headers.items() if k != "content-length"),
                        )
                    )
                assert answers[0] == answers[1], (method, path, "existence oracle")
    assert store.calls == []
    assert results.calls == []
    assert metrics.calls == []


async def test_authorization_header_variants_on_every_operational_route() -> None:
    """The scheme is case-insensitive and runs of spaces are tolerated (RFC 7235); nothing
    else opens a route: a bad variant answers 401 with ``WWW-Authenticate: Bearer``, the
    right token answers 200 on each operational route and page."""
    service = PipelineService(InMemoryStore(), clock=ManualClock())
    await _seed(service)
    app = create_app(service, settings=_settings(), results=InMemoryResultsStore(), metrics=SpyMetrics())
    ops_paths = ["/metrics", "/v1/ops/waiting", "/v1/ops/stalled-runs", "/v1/batches/b1/status",
                 "/v1/batches/b1/diagram"]  # fmt: skip
    api_paths = [
        "/asyncapi.json",
        "/openapi.json",
        "/docs",
        "/redoc",
        "/v1/batches/b1/status",
        "/v1/batches/b1",
    ]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
        for token, paths in ((OPS, ops_paths), (API, api_paths)):
            for good in (f"Bearer {token}", f"bearer {token}", f"BEARER {token}", f"Bearer   {token}",
                         f"Bearer {token}  "):  # fmt: skip
                for path in paths:
                    answer = await http.get(path, headers={"Authorization": good})
                    assert answer.status_code == 200, (path, good, answer.text)
            for path in paths:
                for headers in BAD_AUTH:
                    swapped = [(k, v.replace(OPS, token)) for k, v in headers]
                    answer = await http.get(path, headers=swapped)
                    assert answer.status_code == 401, (path, swapped)
                    assert answer.headers["www-authenticate"].startswith("Bearer realm=")
                    assert answer.json()["error"] == "unauthorized"
        # Ops cannot open API-only routes and the reverse.
        for path in ("/asyncapi.json", "/docs", "/v1/batches/b1", "/v1/results/batches/b1"):
            assert (await http.get(path, headers={"Authorization": f"Bearer {OPS}"})).status_code == 401, path
        for path in ("/metrics", "/v1/ops/waiting"):
            assert (await http.get(path, headers={"Authorization": f"Bearer {API}"})).status_code == 401, path
            assert (await http.get(path, headers={"Authorization": f"Bearer {INTERNAL}"})).status_code == 401


def _raw(base: str, request: bytes, within: float = 5.0) -> tuple[int, bytes]:
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=within) as conn:
        conn.sendall(request)
        received = b""
        try:
            while chunk := conn.recv(65536):
                received += chunk
                if b"\r\n\r\n" in received:
                    head, _, body = received.partition(b"\r\n\r\n")
                    length = next(
                        (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                         if line.lower().startswith(b"content-length:")), None,
                    )  # fmt: skip
                    if length is not None and len(body) >= length:
                        break
        except TimeoutError:
            pass
    status = int(received.split(b" ", 2)[1]) if received.startswith(b"HTTP/") else 0
    return status, received


TARGETS = [
    "/v1/batches/b1/status/", "//v1/batches/b1/status", "/v1//batches/b1/status", "/V1/batches/b1/status",
    "/v1/batches/b1/STATUS", "/v1/batches/b1/status%2F", "/v1%2Fbatches%2Fb1%2Fstatus",
    "/v1/batches/b1/./status", "/v1/batches/x/../b1/status", "/v1/batches/%2e%2e/batches/b1/status",
    "/v1/batches/b1/status;jsessionid=1", "/v1/batches/b1%3B/status", "/v1/batches/b1/status%00",
    "/v1/batches/b1/status?access_token=" + OPS, "/v1/batches/b1%2Fstatus", "/./metrics", "/metrics/",
    "/metrics;x", "/METRICS", "/metrics%2F", "/%6Detrics", "/asyncapi.json/", "/asyncapi.json%00",
    "/v1/ops/waiting/", "/v1/ops/./waiting", "/v1/ops/x/../waiting", "/v1/ops%2Fwaiting", "/docs/",
    "/openapi.json/", "/redoc/", "/v1/results/batches/b1/", "/healthz/../v1/batches/b1/status",
    "/healthz/..%2Fv1/batches/b1/status", "/healthz%2F..%2Fmetrics",
    "http://127.0.0.1/v1/batches/b1/status", "*",
]  # fmt: skip


def test_raw_path_tricks_and_methods_on_real_uvicorn_grant_nothing() -> None:
    """Sent raw over a socket to the production uvicorn configuration without a token: no
    path spelling or method returns 200 or any batch or metrics data (401, 404, 405, a 307
    to the canonical path, or 400 from the server); HEAD and OPTIONS on the pages answer 405,
    TRACE never echoes the request; following a redirect still needs the token."""
    settings = _settings()

    async def seed(service: PipelineService) -> None:
        await _seed(service)

    with served("memory", settings=settings, seed=seed) as base:
        host = base.removeprefix("http://")
        # Sanity: the canonical paths answer with the right token.
        ok, page = _raw(base, f"GET /v1/batches/b1/status HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer "
                        f"{OPS}\r\nConnection: close\r\n\r\n".encode())  # fmt: skip
        assert ok == 200
        assert SECRET_OWNER.encode() in page
        for target in TARGETS:
            for method in ("GET", "HEAD", "OPTIONS", "TRACE", "PROPFIND"):
                request = (f"{method} {target} HTTP/1.1\r\nHost: {host}\r\nX-Probe: <script>\r\n"
                           "Connection: close\r\n\r\n").encode()  # fmt: skip
                status, raw = _raw(base, request)
                where = (method, target, status, raw[:200])
                assert status in (307, 400, 401, 404, 405), where
                assert SECRET_OWNER.encode() not in raw, where
                assert b"w2_secret_metric" not in raw, where
                assert b"X-Probe" not in raw, where
                assert b"<script>" not in raw, where
                if status == 307:
                    location = next(
                        line.split(b":", 1)[1].strip().decode()
                        for line in raw.split(b"\r\n\r\n")[0].split(b"\r\n")
                        if line.lower().startswith(b"location:")
                    )
                    assert location.startswith(base + "/"), where
                    follow = httpx.get(location, timeout=5)
                    assert follow.status_code in (401, 404), (where, follow.status_code)
        for method in ("HEAD", "OPTIONS"):
            status, _ = _raw(base, f"{method} /v1/batches/b1/status HTTP/1.1\r\nHost: {host}\r\n"
                             "Connection: close\r\n\r\n".encode())  # fmt: skip
            assert status == 405


async def test_public_switches_open_only_their_own_route() -> None:
    """``public_status_page`` opens ``GET /v1/batches/{id}/status`` and ``public_metrics``
    opens ``GET /metrics``, nothing else: the diagram (same scopes as the page), the
    snapshot, history, results, ops listings and schema pages still answer 401."""
    service = PipelineService(InMemoryStore(), clock=ManualClock())
    await _seed(service)
    app = create_app(
        service,
        settings=_settings(public_status_page=True, public_metrics=True),
        results=InMemoryResultsStore(),
        metrics=SpyMetrics(),
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
        assert (await http.get("/v1/batches/b1/status")).status_code == 200
        assert (await http.get("/metrics")).content == METRICS_TEXT
        for method, path, scopes in route_table(app):
            if not scopes or path in ("/v1/batches/{batch_id}/status", "/metrics"):
                continue
            answer = await http.request(method, _url(path, "b1"), json={})
            assert answer.status_code == 401, (method, path)
        assert (await http.get("/v1/batches/b1/status/")).status_code in (307, 404)


async def test_the_diagram_of_a_batch_is_never_cached() -> None:
    """Was a defect, fixed.

    Expected: the operator views of a batch, which need a token and show the same batch
    data, are both sent with ``Cache-Control: no-store`` (the README says the status page
    is; a shared cache or the browser's disk cache must not keep a token-protected answer
    for the next user). Before the fix: ``GET /v1/batches/{id}/diagram`` answers 200 with no
    ``Cache-Control`` at all (routes.py ``diagram`` sets only nosniff and the CSP), so a
    proxy may serve it, batch id and status included, to a client without a token."""
    service = PipelineService(InMemoryStore(), clock=ManualClock())
    await _seed(service)
    app = create_app(service, settings=_settings())
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=BASE, headers={"Authorization": f"Bearer {OPS}"}
    ) as http:
        page = await http.get("/v1/batches/b1/status")
        assert page.headers.get("cache-control") == "no-store"
        diagram = await http.get("/v1/batches/b1/diagram")
        assert diagram.status_code == 200
        assert "b1" in diagram.text
        assert "no-store" in diagram.headers.get("cache-control", ""), dict(diagram.headers)


async def test_a_token_that_cannot_travel_in_a_header_is_refused() -> None:
    """Was a defect, fixed.

    Expected: ``HttpSettings`` (and so ``serve``'s variables) refuse a token no HTTP client
    can send as ``Bearer <token>`` (RFC 6750 b64token: visible ASCII), with a clear error, as
    they refuse surrounding spaces. Before the fix: ``HttpSettings(api_token="pässwörd")`` and a token
    with an inner line break are accepted; the app then starts with a scope nobody can open:
    the token sent as UTF-8 answers 401 (Starlette decodes header bytes as latin-1) and the
    package's own ``PipelineStateClient(token=...)`` raises ``UnicodeEncodeError`` on every
    call (settings.py ``_token`` checks only emptiness and surrounding spaces)."""
    refused: list[str] = []
    for token in ("pässwörd", "line\nbreak", "tab\tinside"):
        try:
            settings = HttpSettings(api_token=token)
        except ValueError:
            refused.append(token)
            continue
        app = create_app(PipelineService(InMemoryStore(), clock=ManualClock()), settings=settings)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
            sent = await http.get("/asyncapi.json", headers=[(b"Authorization", f"Bearer {token}".encode())])
        client_error: BaseException | None = None
        try:
            async with PipelineStateClient(
                BASE, token=token, transport=httpx.ASGITransport(app=app)
            ) as client:
                await client.get_batch("b1")
        except BaseException as exc:
            client_error = exc
        assert token in refused, (
            f"token {token!r} accepted by HttpSettings; UTF-8 header answers {sent.status_code}, "
            f"the package client raises {type(client_error).__name__}: {client_error}"
        )
