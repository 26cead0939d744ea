"""The in-process tracing-cost benchmark runs in its quick mode and reports its figure for
each store (only the shape of the output is checked, never a timing)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.optional import require

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("mode", ["table", "split", "breakdown"])
def test_quick_tracing_cost_bench_prints_its_figures(tmp_path: Path, mode: str) -> None:
    require("pipeline_state_sql")
    out = tmp_path / "figures.json"
    extra = {"table": ["--json", str(out)], "split": ["--split"], "breakdown": ["--breakdown"]}[mode]
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "tracing_cost.py"), "--quick", *extra],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    if mode == "split":
        for backend in ("memory", "sqlite"):
            assert re.search(rf"^{backend}: off .* unsampled .* unexported .* on ", done.stdout, re.M)
        return
    if mode == "breakdown":
        assert "SDK span, no processor" in done.stdout
        assert "result_attributes" in done.stdout
        return
    figures = {row["figure"]: row for row in json.loads(out.read_text())["figures"]}
    assert list(figures) == ["tracing_cpu_per_outcome[memory]", "tracing_cpu_per_outcome[sqlite]"]
    for row in figures.values():
        assert row["value"] > 0
        assert row["baseline"] > 0
        assert row["result"] in {"PASS", "MISS"}
    assert "2.50 spans" in done.stdout  # tracing was really on: one process span, 1.5 publishes
