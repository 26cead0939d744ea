"""The shipped Grafana dashboard is a fresh render of its panel list, and its queries cover
every metric family the service exports (and name no other)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from pipeline_state_kafka.dashboard import DASHBOARD_PATH, PANELS, render_dashboard
from pipeline_state_kafka.metrics import FAMILIES

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
