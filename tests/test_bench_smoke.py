"""The core benchmark runs in its quick mode and reports every figure.

Only the shape of the output is checked, never a timing: benchmarks print figures and
ratios, they are not assertions of the test suite.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIGURES = (
    "outcome_e2e",
    "decide_dispatch",
    "decide_complete",
    "decide_vs_dict",
    "trigger_vs_dict",
    "memory_idle_batch",
    "memory_after_run",
    "memory_service_path",
    "cost_100k_vs_1k",
)
TARGETED = {"outcome_e2e", "decide_dispatch", "decide_complete", "memory_idle_batch", "cost_100k_vs_1k"}


def test_quick_core_bench_prints_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "core", "--json", str(out)],
        cwd=tmp_path,  # the script must not depend on the working directory
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    header = proc.stdout.splitlines()[0]
    assert f"Python {sys.version.split()[0]}" in header
    assert "cores" in header
    table = proc.stdout.split("core (issue 2, point 10)", 1)[1]
    columns = table.strip().splitlines()[0].split()
    assert columns == ["figure", "value", "baseline", "ratio", "target", "result"]
    for name in FIGURES:
        assert any(line.startswith(f"{name} ") for line in table.splitlines()), name

    report = json.loads(out.read_text())
    assert report["environment"]["quick"] is True
    figures = {row["figure"]: row for row in report["figures"]}
    assert list(figures) == list(FIGURES)
    for name, row in figures.items():
        assert row["value"] > 0, name
        assert row["result"] in ({"PASS", "MISS"} if name in TARGETED else {"info"}), name
        assert row["baseline"] is not None, name
        assert row["baseline"] > 0, name
        assert row["ratio"] > 0, name
