"""The status page in a real headless Chromium: the diagram renders and the phases show.

The app is served by uvicorn on a free loopback port in a background thread; Chromium
loads the page, runs its scripts for a bounded virtual time, and dumps the DOM; a
screenshot is written too. Under ``CI=true`` a missing Chromium fails the test.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from pipeline_state_http import HttpSettings, create_app

from pipeline_state import InMemoryStore, ManualClock, PipelineService
from pipeline_state.profiles.huleedu.events import ClientBatchPipelineRequestV1
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from tests.optional import unavailable

from .conftest import TOKENS

pytestmark = pytest.mark.browser

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--window-size=1280,1100",
    "--virtual-time-budget=5000",
)


def chromium() -> str:
    found = next(
        (p for p in (shutil.which("chromium"), "/usr/bin/chromium") if p and os.access(p, os.X_OK)), None
    )
    if found is None:
        message = "headless Chromium is not installed (apt-get install chromium)"
        unavailable(message)
    return found


async def _seed(service: PipelineService) -> str:
    env = HuleEduEnvelopes()
    await service.handle_message(*env.register("b1", items=3))
    await service.handle_message(*env.provisioned("b1", env.item_ids("b1", 3)))
    first = await service.execute(
        ClientBatchPipelineRequestV1(batch_id="b1", requested_pipeline="nlp", user_id="t")
    )
    assert first.state is not None
    assert first.state.active_run is not None
    corr = first.state.active_run.correlation_id
    for phase in ("spellcheck", "nlp"):
        await service.handle_message(*env.outcome("b1", phase, corr, processed=env.item_ids("b1", 3)))
    second = await service.execute(
        ClientBatchPipelineRequestV1(batch_id="b1", requested_pipeline="comprehensive", user_id="t")
    )
    assert second.state is not None
    assert second.state.active_run is not None
    corr = second.state.active_run.correlation_id
    await service.handle_message(
        *env.outcome("b1", "cj_assessment", corr, processed=env.item_ids("b1", 2), failed=["b1-e2"])
    )
    return "b1"


@pytest.fixture
def served() -> Iterator[str]:
    """The base URL of the app served by uvicorn on a free loopback port."""
    service = PipelineService(InMemoryStore(), clock=ManualClock())
    asyncio.run(_seed(service))
    # A browser cannot send a token when it navigates: the page is public, the rest is not.
    settings = HttpSettings(status_refresh_seconds=1, public_status_page=True, **TOKENS)
    app = create_app(service, settings=settings)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start within 10 s")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def run_chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def test_status_page_renders_the_diagram_and_phase_states(served: str, tmp_path: Path) -> None:
    binary = chromium()
    url = f"{served}/v1/batches/b1/status"
    dom = run_chromium(binary, tmp_path / "profile", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert "<svg" in html, "no SVG in the rendered page"
    assert re.search(r'<svg[^>]*id="phases-diagram"', html)
    assert re.search(r'<svg[^>]*id="batch-diagram"', html)
    assert 'data-name="processing_pipelines"' in html
    table = re.search(r'<table id="phases">.*?</table>', html, re.S)
    assert table is not None
    states = re.findall(r'data-status="([a-z_]+)"', table.group(0))
    assert states == [
        "already_completed",
        "already_completed",
        "completed_with_partial_success",
        "dispatch_initiated",
    ]
    # The live refresh ran in the page (virtual time > refresh period) and kept the content.
    refreshed = re.search(r'<span id="refreshed">([^<]*)</span>', html)
    assert refreshed is not None
    assert refreshed.group(1).startswith("20")
    assert refreshed.group(1).endswith("Z"), "the refresh script did not run"

    shot = tmp_path / "status.png"
    taken = run_chromium(binary, tmp_path / "profile2", f"--screenshot={shot}", url)
    assert taken.returncode == 0, taken.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 20_000  # a blank page is a few kB
    keep = os.environ.get("PIPELINE_STATE_SCREENSHOT_DIR")
    if keep:
        shutil.copy(shot, Path(keep) / "status.png")
