"""The diagrams really render: the built site is served on loopback and opened in Chromium.

Each diagram page is loaded in headless Chromium; its DOM must hold one rendered ``<svg>``
per Mermaid block, drawn by the vendored mermaid.js (the network is not used); a Mermaid
parse error fails the test (a test below proves that it is detected). A screenshot of each
page, and one of each lifecycle diagram cut out of the rendered page, is kept under
``artifacts/docs/`` (build artefacts, ignored by git): ``lifecycle-batch.png``,
``lifecycle-run.png``, ``lifecycle-phase.png``.

Without Chromium the tests skip locally and fail under ``CI=true``.
"""

from __future__ import annotations

import functools
import http.server
import re
import shutil
import subprocess
import threading
from collections.abc import Iterable, Iterator
from html import escape as html_escape
from pathlib import Path
from typing import Any

import pytest

from pipeline_state._diagrams import lifecycle_mermaid, state_groups
from pipeline_state._lifecycle import ABSENT, LIFECYCLES, Lifecycle, Transition, define_lifecycle
from tests.optional import unavailable

ROOT = Path(__file__).resolve().parents[2]
JAVASCRIPTS = ROOT / "docs" / "javascripts"
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
    unavailable(message)


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


# --------------------------------------------------------------------------- lifecycle diagrams

_SVG = re.compile(r'<div class="mermaid"[^>]*data-processed="true"[^>]*>\s*(<svg\b.*?</svg>)\s*</div>', re.S)
_VIEWBOX = re.compile(r'viewBox="(-?[\d.]+) (-?[\d.]+) ([\d.]+) ([\d.]+)"')
_NODE = re.compile(
    r'<g class="(node [^"]*)" id="[^"]*?-state-(\w+?)-\d+"[^>]*transform="translate\(([-\d.]+), ?([-\d.]+)\)"'
)
_CLUSTER = re.compile(
    r'<g class="[^"]*statediagram-cluster[^"]*" id="[^"]*" data-id="(\w+)"[^>]*>\s*(?:<g>\s*)?<rect[^>]*?'
    r'x="([-\d.]+)" y="([-\d.]+)" width="([\d.]+)" height="([\d.]+)"'
)


def _dump(chromium: str, profile: Path, url: str) -> str:
    result = _run_chromium(chromium, profile, "--window-size=1280,1600", "--dump-dom", url)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def _status(html: str) -> str:
    status = re.search(r'data-mermaid="([^"]*)"', html)
    assert status is not None, "mermaid-init.js did not run (no data-mermaid on <body>)"
    return status.group(1)


def _mermaid_ids(text: str) -> dict[str, str]:
    """State name -> Mermaid id, read from the diagram's ``state "name" as id`` lines."""
    aliases = re.findall(r'^\s*state "([^"]*)" as (\w+)$', text, re.M)
    return {re.sub(r"#(\d+);", lambda m: chr(int(m.group(1))), name): node for name, node in aliases}


def _check_drawing(svg: str, lifecycle: Lifecycle, text: str, highlight: Iterable[str] = ()) -> None:
    """Every state is drawn once (a state named again outside its composite would be drawn
    twice), the composites hold exactly their states, and only highlighted states are current."""
    aliases = _mermaid_ids(text)
    ids = {state: aliases.get(state, state) for state in lifecycle.states}
    nodes = [(m.group(2), m.group(1), float(m.group(3)), float(m.group(4))) for m in _NODE.finditer(svg)]
    drawn = [node for node, *_ in nodes if node not in ("root_start", "root_end")]
    assert sorted(drawn) == sorted(ids.values()), drawn
    current = {node for node, css, *_ in nodes if "current" in css.split()}
    assert current == {ids[state] for state in highlight if state in ids}
    clusters = [tuple(float(m.group(i)) for i in range(2, 6)) for m in _CLUSTER.finditer(svg)]
    groups = state_groups(lifecycle) if " {" in text else []
    assert len(clusters) == len(groups)
    for (x, y, width, height), group in zip(clusters, groups, strict=True):
        inside = {node for node, _, nx, ny in nodes if x < nx < x + width and y < ny < y + height}
        assert inside == {ids[state] for state in group.states}, inside


def _shoot_svg(chromium: str, profile: Path, svg: str, head: str, shot: Path, work: Path) -> None:
    """A PNG of one rendered diagram: its SVG alone on a page with the site's stylesheets."""
    viewbox = _VIEWBOX.search(svg)
    assert viewbox is not None
    width, height = (float(viewbox.group(i)) for i in (3, 4))
    sized = re.sub(r'style="max-width: [^"]*"', f'style="width:{width}px;height:{height}px"', svg, count=1)
    page = work / f"{shot.stem}.html"
    page.write_text(
        f"<!doctype html><html><head>{head}</head>"
        '<body style="margin:0;padding:16px;background:#fff"><article class="md-typeset">'
        f"{sized}</article></body></html>",
        encoding="utf-8",
    )
    shot.unlink(missing_ok=True)
    result = _run_chromium(
        chromium,
        profile,
        f"--window-size={int(width) + 32},{int(height) + 32}",
        "--force-device-scale-factor=1.5",
        f"--screenshot={shot}",
        page.as_uri(),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 20_000


def test_docs_each_lifecycle_diagram_is_drawn_whole_and_shot(site_url: str, tmp_path: Path) -> None:
    chromium = _chromium()
    url = _url(site_url, "reference/lifecycles.md")
    html = _dump(chromium, tmp_path / "profile", url)
    assert _status(html) == f"rendered:{len(LIFECYCLES)}"
    svgs = _SVG.findall(html)
    assert len(svgs) == len(LIFECYCLES)
    styles = "".join(re.findall(r'<link rel="stylesheet"[^>]*>', html))
    head = f'<meta charset="utf-8"><base href="{url}">{styles}'
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for svg, (name, lifecycle) in zip(svgs, LIFECYCLES.items(), strict=True):
        assert "Syntax error" not in svg
        _check_drawing(svg, lifecycle, lifecycle_mermaid(lifecycle))
        _shoot_svg(chromium, tmp_path / "profile", svg, head, ARTIFACTS / f"lifecycle-{name}.png", tmp_path)


def _standalone(work: Path, diagrams: list[str]) -> str:
    """A page that renders ``diagrams`` with the site's vendored mermaid.js and init script."""
    for script in ("vendor/mermaid.min.js", "mermaid-init.js"):
        shutil.copy(JAVASCRIPTS / script, work / Path(script).name)
    blocks = "".join(f'<div class="mermaid">{html_escape(text)}</div>' for text in diagrams)
    page = work / "diagrams.html"
    page.write_text(
        f'<!doctype html><html><head><meta charset="utf-8"></head><body>{blocks}'
        '<script src="mermaid.min.js"></script><script src="mermaid-init.js"></script></body></html>',
        encoding="utf-8",
    )
    return page.as_uri()


def _odd_lifecycle() -> Lifecycle:
    """Names Mermaid would misread, a composite holding them, an else-alternative."""
    opened = ("new item", "state", "a:b", 'say "hi"')
    return define_lifecycle(
        "odd",
        states=(*opened, "end", "<b>"),
        initial="new item",
        final=("end", "<b>"),
        transitions=(
            Transition("begin", ABSENT, "new item"),
            Transition("next", "new item", "state"),
            Transition("then: go", "state", "a:b"),
            Transition("quote", "a:b", 'say "hi"'),
            Transition("finish: now", opened, "end"),
            Transition("stop", opened, "<b>"),
        ),
    )


def test_docs_lifecycle_diagram_variants_render_in_chromium(tmp_path: Path) -> None:
    """Highlighted states inside a composite, effects on the arrows, no grouping, odd names."""
    chromium = _chromium()
    batch = LIFECYCLES["batch"]
    odd = _odd_lifecycle()
    cases: list[tuple[Lifecycle, str, tuple[str, ...]]] = [
        (
            batch,
            lifecycle_mermaid(batch, highlight=["processing_pipelines"], title="b1"),
            ("processing_pipelines",),
        ),
        (batch, lifecycle_mermaid(batch, group=False, effects=True), ()),
        *(
            (lc, lifecycle_mermaid(lc, effects=True, highlight=sorted(lc.final)), tuple(lc.final))
            for lc in LIFECYCLES.values()
        ),
        (odd, lifecycle_mermaid(odd, highlight=["a:b", "<b>"]), ("a:b", "<b>")),
    ]
    html = _dump(chromium, tmp_path / "profile", _standalone(tmp_path, [text for _, text, _ in cases]))
    assert _status(html) == f"rendered:{len(cases)}"
    svgs = _SVG.findall(html)
    assert len(svgs) == len(cases)
    for svg, (lifecycle, text, highlight) in zip(svgs, cases, strict=True):
        assert "Syntax error" not in svg
        _check_drawing(svg, lifecycle, text, highlight)
    for label in ("new item", "a:b", 'say "hi"', "finish: now", "&lt;b&gt;"):
        assert label in svgs[-1], label


def test_docs_a_mermaid_parse_error_is_reported(tmp_path: Path) -> None:
    """What the page tests rely on: a diagram Mermaid cannot parse sets an ``error:`` status."""
    chromium = _chromium()
    good = lifecycle_mermaid(LIFECYCLES["run"])
    broken = 'stateDiagram-v2\n    state "open" as g {\n    a --> : [\n'
    html = _dump(chromium, tmp_path / "profile", _standalone(tmp_path, [good, broken]))
    assert _status(html).startswith("error:"), _status(html)
