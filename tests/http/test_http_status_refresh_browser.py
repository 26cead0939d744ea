"""Found by an attack on the status page in headless Chromium: its refresh period.

Was a defect (fixed; the test failed before): a ``status_refresh_seconds`` above the
browsers' timer limit (2**31 - 1 ms) made ``setTimeout`` fire at once, so an open page
reloaded itself in a loop, each load a store read. Now the settings refuse such a period.

Held: at the largest period allowed the page loads once.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from pipeline_state_http import HttpSettings, create_app
from pipeline_state_http.settings import MAX_REFRESH_SECONDS

from pipeline_state import InMemoryStore, ManualClock, PipelineService
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

from .test_http_browser import CHROMIUM_FLAGS, chromium

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

BUDGET_MS = 1500


class _Counting:
    """Counts the GET requests for the status page before passing them on."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.pages = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/status"):
            self.pages += 1
        await self.app(scope, receive, send)


@contextmanager
def _served(refresh_seconds: int) -> Iterator[tuple[str, _Counting]]:
    service = PipelineService(InMemoryStore(), clock=ManualClock())
    env = HuleEduEnvelopes()
    asyncio.run(service.handle_message(*env.register("r1", items=1)))
    settings = HttpSettings(
        api_token="w2b-api",
        ops_token="w2b-ops",
        public_status_page=True,
        status_refresh_seconds=refresh_seconds,
    )
    counting = _Counting(create_app(service, settings=settings))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(counting, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start within 10 s")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", counting
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def _load(binary: str, profile: Path, url: str) -> str:
    flags = [f for f in CHROMIUM_FLAGS if not f.startswith("--virtual-time-budget")]
    try:
        done = subprocess.run(
            [
                binary,
                *flags,
                f"--virtual-time-budget={BUDGET_MS}",
                f"--user-data-dir={profile}",
                "--dump-dom",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=45,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return "timed out"
    return f"exit {done.returncode}"


def test_a_refresh_period_past_the_browser_timer_limit_is_refused() -> None:
    """Was a defect: a period above 2**31 - 1 ms was accepted, and the page's ``setTimeout``
    (which keeps delays in a signed 32-bit integer) fired at once: an open page re-fetched
    itself in a loop (152 requests within 1.5 s of page time), each a store read. Now the
    settings refuse it."""
    with pytest.raises(ValueError, match="status_refresh_seconds"):
        HttpSettings(status_refresh_seconds=2_200_000)
    assert (
        HttpSettings(status_refresh_seconds=MAX_REFRESH_SECONDS).status_refresh_seconds == MAX_REFRESH_SECONDS
    )


def test_a_refresh_period_under_the_timer_limit_waits(tmp_path: Path) -> None:
    binary = chromium()
    with _served(2_000_000) as (base, counting):
        how = _load(binary, tmp_path / "profile", f"{base}/v1/batches/r1/status")
        pages = counting.pages
    assert how == "exit 0"
    assert pages == 1
