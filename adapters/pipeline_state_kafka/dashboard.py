"""The Grafana dashboard of a running service, generated from its panel list.

:data:`PANELS` says what each panel shows (PromQL over the ``pipeline_state_*`` families of
:mod:`pipeline_state_kafka.metrics`); :func:`render_dashboard` turns it into Grafana's
dashboard JSON, shipped as ``docs/grafana/pipeline-state.json`` (import it in Grafana and
pick the Prometheus data source that scrapes ``/metrics``). A test re-renders it, so the
shipped file cannot drift from this list. Regenerate it with::

    python -m pipeline_state_kafka.dashboard docs/grafana/pipeline-state.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

__all__ = ["DASHBOARD_PATH", "PANELS", "Panel", "Query", "main", "render_dashboard"]

DASHBOARD_PATH = "docs/grafana/pipeline-state.json"
"""Where the dashboard is shipped, from the repository root."""

_DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


@attrs.frozen
class Query:
    """One PromQL query of a panel and the legend of its series."""

    expr: str
    legend: str


@attrs.frozen
class Panel:
    """A time-series panel: a title, a Grafana unit and its queries."""

    title: str
    unit: str
    queries: tuple[Query, ...]
    description: str = ""


def _quantiles(family: str, window: str = "5m") -> tuple[Query, ...]:
    return tuple(
        Query(f"histogram_quantile({q}, sum by (le) (rate({family}_bucket[{window}])))", f"p{round(q * 100)}")
        for q in (0.5, 0.95, 0.99)
    )


PANELS: tuple[Panel, ...] = (
    Panel(
        "Records handled by result",
        "ops",
        (Query("sum by (result) (rate(pipeline_state_messages_total[1m]))", "{{result}}"),),
        "Inbound records per second: applied, duplicate, ignored, denied, deferred, dead_lettered.",
    ),
    Panel(
        "Dead letters",
        "ops",
        (
            Query(
                "sum by (topic, reason) (rate(pipeline_state_dead_lettered_total[5m]))",
                "{{topic}} {{reason}}",
            ),
        ),
        "Records parked in <topic>.DLQ, by the error that parked them.",
    ),
    Panel(
        "Decision time (one unit of work)",
        "s",
        _quantiles("pipeline_state_decision_seconds"),
        "Load, decide and commit of one unit of work.",
    ),
    Panel(
        "Completion latency",
        "s",
        _quantiles("pipeline_state_completion_latency_seconds"),
        "From consuming a run's last outcome to publishing its completion.",
    ),
    Panel(
        "Outbox",
        "short",
        (
            Query("pipeline_state_outbox_pending", "pending"),
            Query("pipeline_state_outbox_parked", "parked"),
        ),
        "Rows not yet published, and rows parked after too many failed publications.",
    ),
    Panel(
        "Oldest unpublished outbox row",
        "s",
        (Query("pipeline_state_outbox_oldest_age_seconds", "age"),),
        "Grows while the relay cannot publish.",
    ),
    Panel(
        "Active runs",
        "short",
        (
            Query("pipeline_state_active_runs", "active runs"),
            Query("pipeline_state_waiting_facts", "waiting facts"),
        ),
        "Batches with an active pipeline run, and early facts waiting for their batch.",
    ),
    Panel(
        "Oldest active run",
        "s",
        (Query("pipeline_state_oldest_active_run_age_seconds", "age"),),
        "A run that keeps ageing is stalled: see the stalled-runs listing.",
    ),
    Panel(
        "Consumer lag",
        "short",
        (Query("sum by (topic) (pipeline_state_consumer_lag)", "{{topic}}"),),
        "Records behind the end of the partitions, by topic.",
    ),
    Panel(
        "Compare-and-set retries",
        "ops",
        (Query("rate(pipeline_state_cas_retries_total[5m])", "retries"),),
        "Units of work decided again after another writer changed their batch first.",
    ),
)
"""The dashboard's panels, in order (two per row)."""


def _panel(index: int, panel: Panel) -> dict[str, Any]:
    return {
        "id": index + 1,
        "type": "timeseries",
        "title": panel.title,
        "description": panel.description,
        "datasource": _DATASOURCE,
        "gridPos": {"h": 8, "w": 12, "x": 12 * (index % 2), "y": 8 * (index // 2)},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}},
        "targets": [
            {"refId": chr(ord("A") + n), "datasource": _DATASOURCE, "expr": q.expr, "legendFormat": q.legend}
            for n, q in enumerate(panel.queries)
        ],
    }


def render_dashboard(panels: Sequence[Panel] = PANELS) -> str:
    """Grafana's dashboard JSON for ``panels`` (a Prometheus data source chosen on import)."""
    dashboard = {
        "title": "pipeline-state",
        "uid": "pipeline-state",
        "description": "A pipeline-state service, from the pipeline_state_* families of /metrics.",
        "tags": ["pipeline-state"],
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus"}
            ]
        },
        "panels": [_panel(index, panel) for index, panel in enumerate(panels)],
    }
    return json.dumps(dashboard, indent=2) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Write the dashboard to the path given (default: :data:`DASHBOARD_PATH`)."""
    parser = argparse.ArgumentParser(prog="python -m pipeline_state_kafka.dashboard")
    parser.add_argument("path", nargs="?", default=DASHBOARD_PATH, help="where to write the JSON")
    args = parser.parse_args(argv)
    target = Path(args.path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_dashboard(), encoding="utf-8")
    print(f"wrote {target}", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
