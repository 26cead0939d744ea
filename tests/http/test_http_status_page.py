"""The status page and its server-side SVG, checked as HTML (the browser test renders it)."""

from __future__ import annotations

import re
from xml.etree import ElementTree

import httpx
from pipeline_state_http.svg import lifecycle_svg, phase_class, phases_svg

from pipeline_state import Pipeline, Step
from pipeline_state._lifecycle import BATCH_LIFECYCLE

from .conftest import MakeReady, Outcome


def svg_blocks(html: str) -> list[str]:
    return re.findall(r"<svg\b.*?</svg>", html, re.S)


async def test_page_shows_diagrams_phase_states_and_history(
    http: httpx.AsyncClient, make_ready: MakeReady, outcome: Outcome
) -> None:
    await make_ready("b1")
    first = (
        await http.post("/v1/batches/b1/pipelines", json={"requested_pipeline": "nlp", "user_id": "t"})
    ).json()
    await outcome("b1", "spellcheck", first["correlation_id"])
    await outcome("b1", "nlp", first["correlation_id"])
    second = (
        await http.post(
            "/v1/batches/b1/pipelines", json={"requested_pipeline": "ai_feedback", "user_id": "t"}
        )
    ).json()
    response = await http.get("/v1/batches/b1/status")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["Cache-Control"] == "no-store"
    html = response.text
    blocks = svg_blocks(html)
    assert len(blocks) == 2
    for block in blocks:
        ElementTree.fromstring(block)  # well-formed XML
    assert 'data-name="processing_pipelines"' in blocks[0]
    assert "node current" in blocks[0]
    assert 'data-name="ai_feedback" data-status="dispatch_initiated"' in blocks[1]
    assert 'data-name="spellcheck" data-status="already_completed"' in blocks[1]
    phases = re.search(r'<table id="phases">.*?</table>', html, re.S)
    assert phases is not None
    rows = re.findall(
        r'<td[^>]*>([^<]*)</td><td class="status [a-z]+" data-status="([a-z_]+)"', phases.group(0)
    )
    assert rows == [
        ("spellcheck", "already_completed"),
        ("nlp", "already_completed"),
        ("ai_feedback", "dispatch_initiated"),
    ]
    history = re.search(r'<table id="history">.*?</table>', html, re.S)
    assert history is not None
    assert first["run_id"] in history.group(0)
    assert "completed_successfully" in history.group(0)
    assert second["run_id"] in html
    assert 'id="batch-status" data-status="processing_pipelines"' in html
    assert "stateDiagram-v2" in html  # the Mermaid source is offered too


async def test_page_of_a_batch_without_runs_and_of_an_unknown_batch(
    http: httpx.AsyncClient, make_ready: MakeReady
) -> None:
    await make_ready("b1")
    html = (await http.get("/v1/batches/b1/status")).text
    assert len(svg_blocks(html)) == 1
    assert 'id="no-run"' in html
    missing = await http.get("/v1/batches/nope/status")
    assert missing.status_code == 404


def test_lifecycle_svg_places_back_edges_as_arcs_and_marks_the_current_state() -> None:
    svg = lifecycle_svg(BATCH_LIFECYCLE, current="processing_pipelines", element_id="x")
    root = ElementTree.fromstring(svg)
    ns = {"s": "http://www.w3.org/2000/svg"}
    names = [g.get("data-name") for g in root.findall("s:g", ns)]
    assert names == list(BATCH_LIFECYCLE.states)
    current = [g.get("data-name") for g in root.findall("s:g", ns) if "current" in (g.get("class") or "")]
    assert current == ["processing_pipelines"]
    rects = {g.get("data-name"): g.find("s:rect", ns) for g in root.findall("s:g", ns)}
    x = {name: float(r.get("x", 0)) for name, r in rects.items() if r is not None}
    # Columns follow the lifecycle: content validation, group validation, ready, processing.
    assert x["awaiting_content_validation"] < x["awaiting_group_validation"] < x["group_validation_completed"]
    assert x["group_validation_completed"] < x["ready_for_pipeline_execution"] < x["processing_pipelines"]
    labels = [t.text for t in root.findall("s:text", ns)]
    assert "finish_run" in labels
    assert "start_run" in labels
    assert "cancel" not in labels  # allowed from every open state: told in the caption instead
    note = root.find("s:text[@class='note']", ns)
    assert note is not None
    assert note.text is not None
    assert "cancel → cancelled from any non-final state" in note.text


def test_phases_svg_columns_follow_dependencies_and_colour_states() -> None:
    pipeline = Pipeline("p", (Step("a"), Step("b", ("a",)), Step("c", ("a",)), Step("d", ("b", "c"))))
    statuses = {"a": "completed_successfully", "b": "failed", "c": "in_progress", "d": "pending_dependencies"}
    root = ElementTree.fromstring(phases_svg(pipeline.steps, statuses, title="t", element_id="p"))
    ns = {"s": "http://www.w3.org/2000/svg"}
    groups = {g.get("data-name"): g for g in root.findall("s:g", ns)}
    xs = {n: float(g.find("s:rect", ns).get("x", 0)) for n, g in groups.items()}  # type: ignore[union-attr]
    assert xs["a"] < xs["b"] == xs["c"] < xs["d"]
    assert [groups[n].get("class") for n in "abcd"] == [
        "node done",
        "node failed",
        "node active",
        "node pending",
    ]
    assert len(root.findall("s:path", ns)) == 4  # one arrow per dependency
    assert phase_class("skipped_due_to_dependency_failure") == "skipped"
    assert phase_class("already_completed") == "pruned"
