"""Found by an attack on the HTML, SVG and Mermaid pages: values from clients, workers and
catalogs that land in markup.

Were defects (fixed; the tests failed before): a pipeline name reached the Mermaid front
matter of the ``phases`` view unencoded; a bidirectional override in a ``user_id`` turned
the rest of the status page's line around (ids now refuse bidi controls, and the page
isolates the values it shows in ``<bdi>``); the ``/docs`` and ``/redoc`` pages wrote the
configured title unescaped.

Held: hostile names never become markup on the status page; hostile phase names stay inert
in every diagram view; the status page's headers and a fresh nonce per answer.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote

import attrs
import httpx
import pytest
from pipeline_state_http import HttpSettings, create_app

from pipeline_state import Catalog, InMemoryStore, ManualClock, PipelineService, Profile
from pipeline_state.profiles import load_profile
from pipeline_state.testing import Envelopes

from .conftest import BASE

pytestmark = pytest.mark.timeout(120)

API, INTERNAL, OPS = "w2-api", "w2-internal", "w2-ops"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_catalog.py"
MEDIA = load_profile(f"{EXAMPLE}:MEDIA")

# Hostile values (no "/" in the batch id: a path segment cannot hold one).
PHASE_A = "<script>alert(1)</script>"
PHASE_B = '"><svg onload=alert(2)><foreignObject><body onload=alert(2)>'
PIPELINE = "</title><img src=x onerror=alert(3)>'javascript:alert(3)"
BATCH = "<b onmouseover=alert(4)>'\"&amp;%%{init: {'securityLevel': 'loose'}}%%"
OWNER = "javascript:alert(5)</style><style>*{background:url(//evil.example/x)}</style>"
REASON = "</pre><script>alert(6)</script>"

ALLOWED_TAGS = {
    "html", "head", "meta", "title", "style", "body", "div", "h1", "h2", "h3", "p", "span", "code",
    "table", "thead", "tbody", "tr", "th", "td", "details", "summary", "pre", "footer", "script", "bdi",
    "svg", "defs", "marker", "path", "g", "rect", "text",
}  # fmt: skip


def _evil_profile() -> Profile:
    catalog = Catalog.from_dict(
        {"pipelines": {PIPELINE: {"steps": [{"name": PHASE_A}, {"name": PHASE_B, "depends_on": [PHASE_A]}]}}}
    )
    return attrs.evolve(
        MEDIA,
        name="evil",
        catalog=catalog,
        phase_commands={
            PHASE_A: MEDIA.phase_commands["transcode"],
            PHASE_B: MEDIA.phase_commands["thumbnails"],
        },
    )


class _Page(HTMLParser):
    """Every start tag with its attributes, and every text node (entities decoded)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.texts: list[str] = []
        self.stack: list[str] = []
        self.style_texts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in ("meta", "path", "rect"):
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if tag in self.stack:
            while self.stack and self.stack.pop() != tag:
                pass

    def handle_data(self, data: str) -> None:
        self.texts.append(data)
        if self.stack and self.stack[-1] == "style":
            self.style_texts.append(data)


def _parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    page.close()
    return page


async def test_hostile_names_never_become_markup_in_the_status_page() -> None:
    """Every hostile value lands in the page as text or as a quoted attribute value: the page
    has only the tags it is built of, no event-handler or URL attribute, one script (the
    nonce'd one), one style element (the page's own CSS), and each value reads back intact."""
    profile = _evil_profile()
    service = PipelineService(InMemoryStore(), profile=profile, clock=ManualClock())
    env = Envelopes(profile=profile)
    app = create_app(service, settings=HttpSettings(api_token=API, internal_token=INTERNAL, ops_token=OPS))
    path = f"/v1/batches/{quote(BATCH, safe='')}"
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=BASE, headers={"Authorization": f"Bearer {API}"}
    ) as http:
        body = {"batch_id": BATCH, "expected_essay_count": 2, "essay_ids": ["e1", "e2"], "user_id": OWNER,
                "course_code": "ENG5"}  # fmt: skip
        registered = await http.post("/v1/batches/register", json=body)
        assert registered.status_code == 202, registered.text
        await service.handle_message(*env.provisioned(BATCH, ["e1", "e2"]))
        first = await http.post(f"{path}/pipelines", json={"requested_pipeline": PIPELINE, "user_id": OWNER})
        assert first.status_code == 202, first.text
        cancelled = await http.post(f"{path}/cancel", json={"user_id": OWNER, "reason": REASON})
        assert cancelled.status_code == 202, cancelled.text
        second = await http.post(f"{path}/pipelines", json={"requested_pipeline": PIPELINE, "user_id": OWNER})
        assert second.status_code == 202, second.text
        page = await http.get(f"{path}/status", headers={"Authorization": f"Bearer {OPS}"})
    assert page.status_code == 200, page.text
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    parsed = _parse(page.text)
    tags = [tag for tag, _ in parsed.tags]
    assert set(tags) <= ALLOWED_TAGS, set(tags) - ALLOWED_TAGS
    assert tags.count("script") == 1
    assert tags.count("style") == 1
    (script,) = [a for t, a in parsed.tags if t == "script"]
    assert set(script) == {"nonce"}
    for tag, attributes in parsed.tags:
        for name, value in attributes.items():
            assert not name.startswith("on"), (tag, name)
            assert name not in ("href", "src", "xlink:href", "action", "formaction", "srcdoc"), (tag, name)
            if value is not None:
                assert "javascript:" not in value or name.startswith("data-") or name == "title", (tag, name)
    assert "evil.example" not in "".join(parsed.style_texts)
    text = "".join(parsed.texts)
    for value in (BATCH, OWNER, PIPELINE, PHASE_A):
        assert value in text, value  # read back intact: escaped once, not mangled nor doubled
    phases = [a.get("data-phase") for t, a in parsed.tags if t == "td" and "data-phase" in a]
    assert phases == [PHASE_A, PHASE_B]
    names = [a.get("data-name") for t, a in parsed.tags if t == "g" and a.get("class", "").startswith("node")]
    assert PHASE_A in names
    assert PHASE_B in names
    assert REASON not in page.text


async def test_hostile_phase_names_stay_inert_in_every_diagram_view() -> None:
    """The Mermaid text of each view carries no raw ``<``, ``>`` or quote of a hostile name
    (they become entity codes), no directive, and is served as nosniff plain text with a
    ``default-src 'none'`` policy."""
    profile = _evil_profile()
    service = PipelineService(InMemoryStore(), profile=profile, clock=ManualClock())
    env = Envelopes(profile=profile)
    app = create_app(service, settings=HttpSettings(api_token=API, internal_token=INTERNAL, ops_token=OPS))
    await service.handle_message(*env.register("s1", item_ids=["e1"], prompt=None))
    await service.handle_message(*env.provisioned("s1", ["e1"]))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=BASE, headers={"Authorization": f"Bearer {OPS}"}
    ) as http:
        accepted = await http.post(
            "/v1/batches/s1/pipelines",
            json={"requested_pipeline": PIPELINE, "user_id": "owner-1"},
            headers={"Authorization": f"Bearer {API}"},
        )
        assert accepted.status_code == 202, accepted.text
        for view in ("all", "batch", "run", "phases"):
            answer = await http.get("/v1/batches/s1/diagram", params={"view": view})
            assert answer.status_code == 200, (view, answer.text)
            assert answer.headers["content-type"] == "text/plain; charset=utf-8"
            assert answer.headers["x-content-type-options"] == "nosniff"
            assert answer.headers["content-security-policy"] == "default-src 'none'"
            # The phase names (node labels); the pipeline name's title line is the next test's.
            body = "\n".join(line for line in answer.text.splitlines() if not line.startswith("title:"))
            for raw in ("<script", "<svg", "<foreignObject", "onload=alert(2)>", '"><'):
                assert raw not in body, (view, raw)
        phases = await http.get("/v1/batches/s1/diagram", params={"view": "phases"})
        assert "#60;script#62;alert(1)#60;/script#62;" in phases.text


async def test_pipeline_name_is_encoded_in_the_diagram_text() -> None:
    """Was a defect, fixed.

    Expected (diagram.py module docstring): text from a request, "the batch id, names",
    is written through ``mermaid_text`` (every character but letters, digits and
    ``_.,:-+@()`` as ``#<code>;``), so it can neither open a Mermaid directive nor carry
    markup into a page that renders the diagram. Before the fix: the requested pipeline's name goes
    into the ``phases`` view's front matter as ``title: <json.dumps(name)>``
    (pipeline_state/_diagrams.py ``_front_matter``, called by ``pipeline_mermaid``), so
    ``</title><img src=x onerror=...>`` and a ``%%{init ...}%%`` directive reach the text
    verbatim. Severity: low (the name must be a catalog pipeline)."""
    profile = _evil_profile()
    service = PipelineService(InMemoryStore(), profile=profile, clock=ManualClock())
    env = Envelopes(profile=profile)
    app = create_app(service, settings=HttpSettings(api_token=API, ops_token=OPS))
    await service.handle_message(*env.register("s1", item_ids=["e1"], prompt=None))
    await service.handle_message(*env.provisioned("s1", ["e1"]))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=BASE, headers={"Authorization": f"Bearer {API}"}
    ) as http:
        accepted = await http.post(
            "/v1/batches/s1/pipelines", json={"requested_pipeline": PIPELINE, "user_id": "owner-1"}
        )
        assert accepted.status_code == 202, accepted.text
        answer = await http.get("/v1/batches/s1/diagram", params={"view": "phases"})
    assert answer.status_code == 200
    for raw in ("<img", "onerror=alert(3)>", "</title>"):
        assert raw not in answer.text, f"{raw!r} of the pipeline name is in the Mermaid text"


async def test_bidi_override_in_a_user_id_never_spills_over_the_status_page() -> None:
    """Was a defect, fixed.

    Expected: a value from a request cannot change the reading direction of the page text
    around it: either ids with Unicode bidi controls (U+202A-U+202E, U+2066-U+2069) are
    refused (422, like C0 controls), or the page isolates each value (``<bdi>`` or
    ``dir="auto"``). Before the fix: ``user_id="t1\\u202e"`` is accepted (202) and written raw inside a
    ``<code>`` in the meta paragraph, so everything after it on that line (the item count,
    the update time) renders right-to-left: an operator reads a spoofed line."""
    service = PipelineService(InMemoryStore(), clock=ManualClock())
    app = create_app(service, settings=HttpSettings(api_token=API, ops_token=OPS))
    owner = "t1\u202e"
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=BASE, headers={"Authorization": f"Bearer {API}"}
    ) as http:
        body = {"batch_id": "bidi-1", "expected_essay_count": 1, "user_id": owner, "course_code": "ENG5"}
        registered = await http.post("/v1/batches/register", json=body)
        if registered.status_code == 422:
            return  # refused at the door: nothing to spill
        assert registered.status_code == 202, registered.text
        page = await http.get("/v1/batches/bidi-1/status")
    assert page.status_code == 200
    # Every bidi control in the page must sit inside an isolating element.
    isolated: list[bool] = []

    class Walk(HTMLParser):
        def __init__(self) -> None:
            super().__init__(convert_charrefs=True)
            self.open: list[tuple[str, dict[str, str | None]]] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag not in ("meta", "path", "rect"):
                self.open.append((tag, dict(attrs)))

        def handle_endtag(self, tag: str) -> None:
            while self.open and self.open.pop()[0] != tag:
                pass

        def handle_data(self, data: str) -> None:
            if re.search("[\u202a-\u202e\u2066-\u2069]", data):
                isolated.append(any(t == "bdi" or a.get("dir") == "auto" for t, a in self.open))

    Walk().feed(page.text)
    assert isolated, "the bidi control vanished without being refused"
    assert all(isolated), "a raw RIGHT-TO-LEFT OVERRIDE from user_id sits unisolated in the status page"


async def test_docs_pages_escape_the_title() -> None:
    """Was a defect, fixed.

    Expected: the docs pages escape the configured title as the status page does (or the
    title is checked when the settings are built). Before the fix: ``HttpSettings(title=...)`` is passed
    raw to FastAPI's ``get_swagger_ui_html`` / ``get_redoc_html`` (app.py ``_docs_router``),
    so ``</title><script>`` in it becomes a live script tag in ``/docs`` and ``/redoc``, while
    ``/v1/batches/{id}/status`` shows ``&lt;/title&gt;&lt;script&gt;``."""
    evil = "ops</title><script>alert(7)</script>"
    service = PipelineService(InMemoryStore(), clock=ManualClock())
    app = create_app(service, settings=HttpSettings(api_token=API, title=evil))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=BASE, headers={"Authorization": f"Bearer {API}"}
    ) as http:
        body = {"batch_id": "t1", "expected_essay_count": 1, "user_id": "u", "course_code": "ENG5"}
        assert (await http.post("/v1/batches/register", json=body)).status_code == 202
        status = await http.get("/v1/batches/t1/status")
        assert "<script>alert(7)" not in status.text  # the status page escapes it
        for path in ("/docs", "/redoc"):
            page = await http.get(path)
            assert page.status_code == 200
            assert "<script>alert(7)</script>" not in page.text, f"{path} renders the title as markup"


async def test_status_page_headers_and_a_fresh_nonce_per_answer() -> None:
    """The page is ``text/html; charset=utf-8`` with nosniff, no-store, no-referrer and a
    CSP that allows no script but its own nonce (no 'unsafe-inline'/'unsafe-eval' script,
    no framing, no base or form target); the nonce is new on every answer and is the only
    one in the page; the 401 and 404 answers are JSON, never HTML."""
    service = PipelineService(InMemoryStore(), clock=ManualClock())
    app = create_app(service, settings=HttpSettings(api_token=API, ops_token=OPS))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=BASE, headers={"Authorization": f"Bearer {API}"}
    ) as http:
        body = {"batch_id": "h1", "expected_essay_count": 1, "user_id": "u", "course_code": "ENG5"}
        assert (await http.post("/v1/batches/register", json=body)).status_code == 202
        nonces = []
        for _ in range(3):
            page = await http.get("/v1/batches/h1/status")
            assert page.status_code == 200
            assert page.headers["content-type"] == "text/html; charset=utf-8"
            assert page.headers["x-content-type-options"] == "nosniff"
            assert page.headers["cache-control"] == "no-store"
            assert page.headers["referrer-policy"] == "no-referrer"
            csp = page.headers["content-security-policy"]
            directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
            assert directives["default-src"] == "'none'"
            assert directives["frame-ancestors"] == "'none'"
            assert directives["base-uri"] == "'none'"
            assert directives["form-action"] == "'none'"
            script = directives["script-src"]
            assert re.fullmatch(r"'nonce-[A-Za-z0-9_-]{16,}'", script), script
            nonce = script[len("'nonce-") : -1]
            assert page.text.count(nonce) == 1
            assert f'<script nonce="{nonce}">' in page.text
            nonces.append(nonce)
        assert len(set(nonces)) == 3
        for answer in (
            await http.get("/v1/batches/h1/status", headers={"Authorization": "Bearer nope"}),
            await http.get("/v1/batches/missing/status"),
        ):
            assert answer.status_code in (401, 404)
            assert answer.headers["content-type"] == "application/json"
            assert answer.headers["x-content-type-options"] == "nosniff"
