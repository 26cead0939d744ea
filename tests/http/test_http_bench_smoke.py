"""``bench/http.py --quick`` runs end to end and prints its table (figures are not checked)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_http_bench_runs_in_quick_mode() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "http.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    for figure in ("bare GET", "GET /v1/batches/{id}", "bare POST", "POST /v1/batches/{id}/pipelines"):
        assert figure in out
    rows = [line for line in out.splitlines() if line.startswith(("GET /v1", "POST /v1"))]
    assert len(rows) == 2
    assert rows[0].split()[-1] in ("PASS", "MISS")
    # Every request got the answer it should have (202 for each POST on its own batch).
    assert all(line.split()[5] == "0" for line in rows), out
