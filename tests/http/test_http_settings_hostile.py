"""the HTTP adapter's settings and how it is served (``settings.py``,
``server.py``, ``resources.open``, ``serve --http`` binding)."""

from __future__ import annotations

import contextlib
import math
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pipeline_state_http import HttpSettings, HttpSettingsError
from pipeline_state_http import resources as http_resources
from pipeline_state_http.server import timeout_protocol

from pipeline_state import InMemoryStore, ManualClock, PipelineService
from tests.optional import require

from .conftest import API_TOKEN, TOKENS
from .serving import served


def _read_answer(conn: socket.socket, within: float) -> bytes:
    conn.settimeout(within)
    received = b""
    deadline = time.monotonic() + within
    try:
        while time.monotonic() < deadline and b"\r\n\r\n" not in received:
            chunk = conn.recv(4096)
            if not chunk:
                break
            received += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return received


def _answer_to_a_split_request(settings: HttpSettings, first: bytes, rest: bytes) -> bytes:
    """Serve ``settings``, send a request as ``first`` then, 0.3 s later, ``rest``; the answer."""
    with served("memory", settings) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(first)
            time.sleep(0.3)
            with contextlib.suppress(OSError):
                conn.sendall(rest)
            return _read_answer(conn, 5)


def _record_bound_hosts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace the adapter's server with one that binds nothing and records each host it
    was asked to bind."""
    bound: list[str] = []

    @contextlib.asynccontextmanager
    async def fake_serving(app: Any, host: str, port: int, **_: Any) -> AsyncIterator[object]:
        bound.append(host)
        yield object()

    monkeypatch.setattr(http_resources, "serving", fake_serving)
    return bound


@pytest.mark.parametrize("field", ["header_timeout_seconds", "body_timeout_seconds"])
def test_httpsettings_refuse_a_nan_timeout(field: str) -> None:
    """Was a defect (fixed): ``HttpSettings``'s ``_positive`` validator (settings.py) checks
    ``value <= 0``, which is False for NaN, so ``HttpSettings(header_timeout_seconds=nan)`` is
    accepted, and so is ``timeout_protocol(nan, nan)`` (server.py). The environment model
    refuses NaN (``allow_inf_nan=False``); the settings given in code should too."""
    with pytest.raises(ValueError, match=f"{field} must be positive and finite"):
        HttpSettings(**TOKENS, **{field: math.nan})
    with pytest.raises(ValueError, match="must be positive and finite"):
        timeout_protocol(math.nan, 30.0) if field.startswith("header") else timeout_protocol(10.0, math.nan)


def test_server_refuses_a_nan_header_timeout() -> None:
    """Was a defect (fixed): What the NaN above does once served: the protocol arms
    ``call_later(nan)``, which the event loop runs at once, so every request whose head does not
    arrive in one segment is answered ``408`` and the connection closed (observed after ~0.03
    s), instead of being served. Expected: such settings are refused when made, or the request
    is served."""
    try:
        settings = HttpSettings(**TOKENS, header_timeout_seconds=math.nan)
    except ValueError:
        return  # refused up front: fixed
    answer = _answer_to_a_split_request(settings, b"GET /healthz HTTP/1.1\r\n", b"Host: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200"), answer[:80]


def test_server_refuses_a_nan_body_timeout() -> None:
    """Was a defect (fixed): Same with ``body_timeout_seconds=nan``: the body limit's
    ``asyncio.timeout_at(now + nan)`` (security.py, ``BodyLimitMiddleware``) expires at once, so
    a registration whose body arrives in two segments is answered 408 instead of 202."""
    try:
        settings = HttpSettings(**TOKENS, body_timeout_seconds=math.nan)
    except ValueError:
        return  # refused up front: fixed
    body = b'{"batch_id":"nan1","expected_essay_count":1,"user_id":"t","course_code":"ENG5"}'
    head = (
        b"POST /v1/batches/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {API_TOKEN}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    )
    answer = _answer_to_a_split_request(settings, head + body[:10], body[10:])
    assert answer.startswith(b"HTTP/1.1 202"), answer[:80]


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
async def test_open_refuses_an_insecure_app_off_loopback(monkeypatch: pytest.MonkeyPatch, host: str) -> None:
    """Was a defect (fixed): ``serve --http`` refuses ``--insecure-no-auth`` off a loopback
    address (web.py, ``http_serve_settings``), but the adapter's own ``open()`` (resources.py)
    serves ``HttpSettings(insecure_no_auth=True)`` on any host: the whole API, writes included,
    open to the network with only a log warning. Expected: ``open`` refuses (a
    ``ValueError``/``HttpSettingsError``) before it binds. The server itself is replaced here,
    so nothing binds outside 127.0.0.1."""
    bound = _record_bound_hosts(monkeypatch)
    service = PipelineService(InMemoryStore(), clock=ManualClock())
    with contextlib.suppress(ValueError):
        async with http_resources.open(service, HttpSettings(insecure_no_auth=True), host=host):
            pass
    assert bound == [], f"open() served an app with open scopes on {host}"


async def test_open_serves_an_insecure_app_on_loopback_and_a_tokened_one_anywhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bound = _record_bound_hosts(monkeypatch)
    service = PipelineService(InMemoryStore(), clock=ManualClock())
    async with http_resources.open(service, HttpSettings(insecure_no_auth=True), host="127.0.0.1"):
        pass
    async with http_resources.open(service, HttpSettings(**TOKENS), host="0.0.0.0"):
        pass
    assert bound == ["127.0.0.1", "0.0.0.0"]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "0", "-1", "1e999"])
@pytest.mark.parametrize(
    "variable", ["PIPELINE_STATE_HTTP_HEADER_TIMEOUT_SECONDS", "PIPELINE_STATE_HTTP_BODY_TIMEOUT_SECONDS"]
)
def test_environment_refuses_unusable_timeouts(variable: str, value: str) -> None:
    with pytest.raises(HttpSettingsError) as raised:
        HttpSettings.from_environ({variable: value, "PIPELINE_STATE_HTTP_API_TOKEN": "s3cr3t"})
    assert variable in str(raised.value)
    assert "s3cr3t" not in str(raised.value)


def test_serve_http_defaults_to_loopback_and_errors_never_echo_tokens(tmp_path: Any) -> None:
    require("pipeline_state_kafka")  # serve's settings live beside the Kafka adapter
    from pipeline_state_service.settings import SettingsError, parse_host_port
    from pipeline_state_service.web import is_loopback

    assert parse_host_port(":8080") == ("127.0.0.1", 8080)
    assert parse_host_port("[]:8080") == ("127.0.0.1", 8080)
    for text in ("8080", "host:", "host:0", "host:65536", "host:８０"):
        with pytest.raises(SettingsError):
            parse_host_port(text)
    for host in ("", "0.0.0.0", "::", "127.1", "0177.0.0.1", "127.0.0.1 ", "localhost.example"):
        assert not is_loopback(host), host
    secret = "super-s3cret-token"
    for env in (
        {"PIPELINE_STATE_HTTP_API_TOKEN": secret, "PIPELINE_STATE_HTTP_OPS_TOKEN": "bad token"},
        {"PIPELINE_STATE_HTTP_API_TOKEN": secret + " "},
        {"PIPELINE_STATE_HTTP_API_TOKEN": secret, "PIPELINE_STATE_HTTP_API_TOKEN_FILE": str(tmp_path)},
        {"PIPELINE_STATE_HTTP_API_TOKEN": secret, "PIPELINE_STATE_HTTP_MAX_BODY_BYTES": "lots"},
    ):
        with pytest.raises(HttpSettingsError) as raised:
            HttpSettings.from_environ(env)
        assert secret not in str(raised.value), str(raised.value)


@pytest.mark.parametrize("value", [10**400, math.nan, math.inf, 0, -1.5])
def test_the_server_refuses_a_timeout_it_cannot_use(value: float) -> None:
    """Was a defect (fixed, found in review): an int too large for a float passed the check
    and then raised ``OverflowError`` while the server was being made; every unusable
    timeout is a ``ValueError`` saying so."""
    with pytest.raises(ValueError, match="positive and finite"):
        timeout_protocol(value, 1.0)
    with pytest.raises(ValueError, match="positive and finite"):
        timeout_protocol(1.0, value)
