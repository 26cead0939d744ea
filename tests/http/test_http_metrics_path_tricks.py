"""``/metrics`` and ``/asyncapi.json`` on a real uvicorn, raw path tricks.

The existing raw-path attack serves an app without a metrics source, so ``/metrics``
spellings there answer 404 trivially. Here the app serves real metrics (secret marker in
the exposition) and the AsyncAPI document, and every spelling, method and wrong-scope or
query-string token is sent raw over a socket.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import uvicorn
from pipeline_state_http import HttpSettings, create_app
from pipeline_state_http.server import uvicorn_config

from pipeline_state import InMemoryStore, ManualClock, PipelineService

pytestmark = pytest.mark.timeout(60)

API, INTERNAL, OPS = "ob-api-token", "ob-internal-token", "ob-ops-token"
SECRET = b"ob_secret_metric"


class Metrics:
    content_type = "text/plain; version=0.0.4; charset=utf-8"

    async def exposition(self) -> bytes:
        return b"# TYPE ob_secret_metric gauge\nob_secret_metric 42\n"


@contextmanager
def _serving(settings: HttpSettings) -> Iterator[tuple[str, int]]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    started, stop = threading.Event(), threading.Event()

    async def main() -> None:
        app = create_app(
            PipelineService(InMemoryStore(), clock=ManualClock()), settings=settings, metrics=Metrics()
        )
        server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port, log_level="warning", lifespan="off"))
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not serving.done():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        started.set()
        await asyncio.to_thread(stop.wait)
        server.should_exit = True
        await serving

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield "127.0.0.1", port
    finally:
        stop.set()
        thread.join(10)
        sock.close()


def _raw(port: int, request: bytes) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=3) as conn:
        conn.sendall(request)
        received = b""
        try:
            while chunk := conn.recv(65536):
                received += chunk
        except TimeoutError:
            pass
    status = int(received.split(b" ", 2)[1]) if received.startswith(b"HTTP/") else 0
    return status, received


def _authorized_get(target: str, host: str, token: str) -> bytes:
    return (
        f"GET {target} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        "Connection: close\r\n\r\n".encode()
    )


TARGETS = [
    "/metrics", "//metrics", "///metrics", "/metrics.", "/metrics..", "/metrics/.", "/metrics/..",
    "/metrics%20", "/metrics%09", "/%2Fmetrics", "/%2fmetrics", "/metrics%00", "/metrics%2e",
    "/metrics?access_token=" + OPS, "/metrics?token=" + OPS, "/metrics#x", "/Metrics",
    "/metrics/?", "/healthz/../metrics", "/healthz%2F..%2Fmetrics", "/.%2Fmetrics",
    "/asyncapi.json", "//asyncapi.json", "/asyncapi.json.", "/asyncapi.json?access_token=" + API,
    "/asyncapi%2Ejson", "/asyncapi.JSON", "/asyncapi.json/.",
]  # fmt: skip


def test_metrics_and_asyncapi_path_tricks_grant_nothing() -> None:
    settings = HttpSettings(api_token=API, internal_token=INTERNAL, ops_token=OPS)
    with _serving(settings) as (host, port):
        ok, body = _raw(port, _authorized_get("/metrics", host, OPS))
        assert ok == 200
        assert SECRET in body
        ok, body = _raw(port, _authorized_get("/asyncapi.json", host, API))
        assert ok == 200
        assert b"asyncapi" in body
        for target in TARGETS:
            wrong = {"metrics": API, "asyncapi": OPS}["metrics" if "etrics" in target else "asyncapi"]
            for auth in ("", f"Authorization: Bearer {wrong}\r\n", f"Authorization: Bearer {INTERNAL}\r\n",
                         f"Cookie: token={OPS}; access_token={API}\r\n"):  # fmt: skip
                for method in ("GET", "HEAD", "OPTIONS", "POST"):
                    request = f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n"
                    status, raw = _raw(port, request.encode())
                    where = (method, target, auth, status, raw[:160])
                    assert status in (307, 400, 401, 404, 405), where
                    assert SECRET not in raw, where
                    assert b'"asyncapi"' not in raw, where
