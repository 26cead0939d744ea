"""The in-process metrics-cost benchmark runs in its quick mode and reports its figure for
each store (only the shape of the output is checked, never a timing): the metrics were
really on (the exposition counted every record and was scraped)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.optional import require

ROOT = Path(__file__).resolve().parents[1]


def test_quick_metrics_cost_bench_prints_its_figures(tmp_path: Path) -> None:
    require("pipeline_state_sql")
    out = tmp_path / "figures.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "metrics_cost.py"), "--quick", "--json", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    figures = {row["figure"]: row for row in json.loads(out.read_text())["figures"]}
    assert list(figures) == ["metrics_cpu_per_outcome[memory]", "metrics_cpu_per_outcome[sqlite]"]
    for row in figures.values():
        assert row["value"] > 0
        assert row["baseline"] > 0
        assert row["result"] in {"PASS", "MISS"}
    assert "4 scrapes over 80 outcomes" in done.stdout  # 2 rounds of 40 outcomes: after each unit of 25
