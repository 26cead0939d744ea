"""The shipped Grafana dashboard is a fresh render of its panel list, its queries cover every
metric family the service exports (and name no other), and the operations page shows each
panel drawn from the run recorded next to it."""

from __future__ import annotations

import json
import re
from pathlib import Path

from pipeline_state_kafka.dashboard import DASHBOARD_PATH, PANELS, render_dashboard
from pipeline_state_kafka.metrics import FAMILIES
from pipeline_state_kafka.panel_data import panel_series
from pipeline_state_kafka.panel_svg import draw_panel, load_scrapes, panel_file

from tests.optional import require

ROOT = Path(__file__).resolve().parents[2]


def test_docs_dashboard_is_fresh() -> None:
    shipped = (ROOT / DASHBOARD_PATH).read_text(encoding="utf-8")
    assert shipped == render_dashboard(), (
        f"{DASHBOARD_PATH} is stale: regenerate it with `python -m pipeline_state_kafka.dashboard`"
    )


def test_docs_dashboard_panels_cover_every_family() -> None:
    dashboard = json.loads(render_dashboard())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    named = {m.group(0) for expr in exprs for m in re.finditer(r"pipeline_state_\w+", expr)}
    suffixes = ("_total", "_bucket", "_count", "_sum")
    families = {
        next((n[: -len(s)] for s in suffixes if n.endswith(s) and n[: -len(s)] in FAMILIES), n) for n in named
    }
    assert families == set(FAMILIES)
    assert len(dashboard["panels"]) == len(PANELS)
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(set(ids)) == len(ids)
    places = {(p["gridPos"]["x"], p["gridPos"]["y"]) for p in dashboard["panels"]}
    assert len(places) == len(PANELS)  # no two panels on top of each other


def test_docs_operations_page_shows_every_panel_drawn_from_the_recorded_run() -> None:
    require("pygal")
    page = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    folder = ROOT / "docs" / "grafana" / "panels"
    scrapes = load_scrapes(folder / "run.jsonl.gz")
    assert scrapes[-1].at - scrapes[0].at > 5
    for panel in PANELS:
        name = panel_file(panel)
        assert f"(grafana/panels/{name})" in page, name
        assert (folder / name).read_text(encoding="utf-8").startswith("<?xml"), name
        series = panel_series(panel, scrapes, rate_window=3)
        drawn = draw_panel(panel, series).decode()
        assert panel.title in drawn
        assert series, panel.title
        assert all(len(points) > 1 for points in series.values()), panel.title
