"""The diagrams really render: the built site is served on loopback and opened in Chromium.

Each diagram page is loaded in headless Chromium; its DOM must hold one rendered ``<svg>``
per Mermaid block, drawn by the vendored mermaid.js (the network is not used). A screenshot
of each page is kept under ``artifacts/docs/`` (a build artefact, ignored by git).

Without Chromium the test skips locally and fails under ``CI=true``.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts" / "docs"
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome")
CHROMIUM_TIMEOUT_SECONDS = 90

# Source page -> number of Mermaid blocks it must render.
DIAGRAM_PAGES = {
    "reference/lifecycles.md": 3,
    "reference/pipelines.md": 4,
}

pytestmark = pytest.mark.browser


def _chromium() -> str:
    for candidate in CHROMIUM_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    message = "headless Chromium is not installed (apt-get install chromium)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def site_url(built_site: Any) -> Iterator[str]:
    """The built site, served by http.server on a free loopback port for this module."""
    handler = functools.partial(_QuietHandler, directory=str(built_site.path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="docs-site", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _run_chromium(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=10000",
        *args,
    ]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT_SECONDS, check=False
    )


def _url(base: str, page: str) -> str:
    return f"{base}/{page.removesuffix('.md')}/"


@pytest.mark.parametrize(("page", "diagrams"), list(DIAGRAM_PAGES.items()))
def test_docs_diagrams_render_as_svg_in_chromium(
    page: str, diagrams: int, site_url: str, tmp_path: Path
) -> None:
    chromium = _chromium()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / f"{page.removesuffix('.md').replace('/', '-')}.png"
    shot.unlink(missing_ok=True)

    # One launch: the DOM after the virtual-time budget on stdout, and a screenshot.
    result = _run_chromium(
        chromium,
        tmp_path / "profile",
        "--window-size=1280,1600",
        f"--screenshot={shot}",
        "--dump-dom",
        _url(site_url, page),
    )

    assert result.returncode == 0, result.stderr[-2000:]
    html = result.stdout
    status = re.search(r'data-mermaid="([^"]*)"', html)
    assert status is not None, "mermaid-init.js did not run (no data-mermaid on <body>)"
    assert status.group(1) == f"rendered:{diagrams}", status.group(1)
    rendered = re.findall(r'<div class="mermaid"[^>]*data-processed="true"[^>]*>\s*<svg\b', html)
    assert len(rendered) == diagrams
    assert "Syntax error" not in html
    # Real drawings: a state or node for every block, not an empty SVG.
    assert len(re.findall(r'<g class="node', html)) >= 2 * diagrams
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 20_000
