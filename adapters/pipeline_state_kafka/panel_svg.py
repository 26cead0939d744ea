"""Draw the dashboard's panels as SVG charts from scrapes recorded in a real run.

Where no Grafana runs (the documentation, a CI log), the same panels are drawn with
``pygal`` from ``/metrics`` texts recorded while a service ran: each line of the recording
is ``{"at": seconds, "text": "<exposition>"}`` (``bench/kafka.py --record-metrics DIR``
writes one per backend). The panels and their queries are those of the Grafana dashboard
(:data:`~pipeline_state_kafka.dashboard.PANELS`), evaluated by
:mod:`~pipeline_state_kafka.panel_data`::

    python -m pipeline_state_kafka.panel_svg run.jsonl docs/grafana/panels --rate-window 5

``pygal`` is a documentation dependency (the ``docs`` extra), imported only here.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from .dashboard import PANELS, Panel
from .panel_data import Scrape, Series, panel_series

__all__ = ["draw_panel", "load_scrapes", "main", "panel_file"]


def load_scrapes(path: Path) -> list[Scrape]:
    """The scrapes recorded in ``path`` (JSON lines ``{"at", "text"}``, gzipped when the
    name ends in ``.gz``), in time order."""
    scrapes = []
    data = path.read_bytes()
    text = (gzip.decompress(data) if path.suffix == ".gz" else data).decode("utf-8")
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            scrapes.append(Scrape.parse(float(entry["at"]), str(entry["text"])))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{number}: not a recorded scrape ({exc})") from exc
    if len(scrapes) < 2:
        raise ValueError(f"{path}: at least two scrapes are needed to draw rates, found {len(scrapes)}")
    return sorted(scrapes, key=lambda s: s.at)


def panel_file(panel: Panel) -> str:
    """The file name of ``panel``'s chart."""
    return re.sub(r"[^a-z0-9]+", "-", panel.title.lower()).strip("-") + ".svg"


def _short(legend: str) -> str:
    """A legend without the namespace of its topic names (``huleedu.batch.x.v1``: ``batch.x.v1``)."""
    return " ".join(part.split(".", 1)[1] if part.count(".") >= 3 else part for part in legend.split(" "))


def draw_panel(panel: Panel, series: Series) -> bytes:
    """``panel`` as an SVG line chart of ``series`` (seconds on the x axis)."""
    import pygal
    from pygal.style import CleanStyle

    style = CleanStyle(no_data_font_size=16, legend_font_size=11, title_font_size=15)
    chart = pygal.XY(
        title=f"{panel.title} (x: seconds into the run)",
        x_title=None,
        y_title=panel.unit
        if panel.unit not in ("short", "ops")
        else ("per second" if panel.unit == "ops" else ""),
        width=640,
        height=340,
        show_dots=False,
        style=style,
        legend_at_bottom=True,
        legend_at_bottom_columns=2 if any(len(_short(k)) > 24 for k in series) else 4,
        truncate_legend=-1,
        no_data_text="no data in this run",
    )
    for legend, points in sorted(series.items()):
        chart.add(_short(legend), [(round(t, 3), round(v, 6)) for t, v in points])
    rendered: bytes = chart.render()
    return rendered


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline_state_kafka.panel_svg", description=__doc__.split("\n")[0]
    )
    parser.add_argument("scrapes", type=Path, help="recorded scrapes (JSON lines with at and text)")
    parser.add_argument("out", type=Path, help="folder for one SVG per panel")
    parser.add_argument("--rate-window", type=float, help="seconds of every rate() (default: the query's)")
    args = parser.parse_args(argv)
    try:
        scrapes = load_scrapes(args.scrapes)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    for panel in PANELS:
        target = args.out / panel_file(panel)
        target.write_bytes(draw_panel(panel, panel_series(panel, scrapes, rate_window=args.rate_window)))
        print(f"wrote {target}", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
