"""``bench/sql.py --quick`` and ``bench/relay.py --quick`` run end to end and print their
tables (the figures themselves are not checked: timings are never test assertions)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SQLITE_FIGURES = (
    "durable_sqlite",
    "durable_sqlite_normal",
    "relay_sqlite_batch1",
    "relay_sqlite_batch100",
    "relay_sqlite_handoff",
    "scale_sqlite",
    "history_sqlite",
)
POSTGRES_FIGURES = (
    "durable_postgres",
    "relay_postgres_batch1",
    "relay_postgres_batch100",
    "relay_postgres_handoff",
    "scale_postgres",
    "history_postgres",
)


def _run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--quick", *args],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        cwd=ROOT,
    )


def _figures(out: str) -> dict[str, str]:
    """Figure name -> result column of the printed table."""
    table = out.split("-----", 1)[1].split("\n\n", 1)[0]
    rows = [line.split() for line in table.splitlines()[1:] if line.strip()]
    return {row[0]: row[-1] for row in rows}


def test_sql_bench_runs_in_quick_mode(postgres_url: Any) -> None:
    done = _run("sql.py")
    assert done.returncode == 0, done.stderr[-3000:]
    figures = _figures(done.stdout)
    assert set(figures) == {*SQLITE_FIGURES, *POSTGRES_FIGURES}, done.stdout
    for name in ("durable_sqlite", "durable_postgres", "scale_sqlite", "scale_postgres", "history_postgres"):
        assert figures[name] in ("PASS", "MISS")


def test_sql_bench_measures_only_the_figures_asked_for() -> None:
    done = _run("sql.py", "--no-postgres", "--only", "history,scale")
    assert done.returncode == 0, done.stderr[-3000:]
    assert set(_figures(done.stdout)) == {"scale_sqlite", "history_sqlite"}, done.stdout


def test_relay_bench_runs_on_its_own() -> None:
    done = _run("relay.py", "--no-postgres")
    assert done.returncode == 0, done.stderr[-3000:]
    assert set(_figures(done.stdout)) == {
        "relay_sqlite_batch1",
        "relay_sqlite_batch100",
        "relay_sqlite_handoff",
    }
