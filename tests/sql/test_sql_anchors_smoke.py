"""``bench/anchors.py --quick`` runs end to end on PostgreSQL and prints its table (the
figures are not checked: timings are never test assertions). DBOS comes from the ``bench``
extra: its rows are expected when it is installed, and the run says they were left out
when it is not."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
ALWAYS = ("floor_commits_1", "floor_commits_8", "ps_outcomes_seq", "ps_outcomes_8", "ps_outcomes_8_pool5")
DBOS = ("dbos_steps_seq", "dbos_steps_8")

pytestmark = pytest.mark.postgres


def test_sql_anchors_bench_runs_in_quick_mode(postgres_url: Any) -> None:
    database = f"anchors_smoke_{uuid.uuid4().hex[:8]}"
    command = [sys.executable, str(ROOT / "bench" / "anchors.py"), "--quick"]
    done = subprocess.run(
        [*command, "--postgres", postgres_url, "--database", database],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    table = done.stdout.split("-----", 1)[1].split("\n\n", 1)[0]
    figures = {line.split()[0] for line in table.splitlines()[1:] if line.strip()}
    with_dbos = importlib.util.find_spec("dbos") is not None
    assert figures == {*ALWAYS, *(DBOS if with_dbos else ())}, done.stdout
    assert "statements per outcome" in done.stdout
    assert "load average" in done.stdout.splitlines()[0]
    if with_dbos:
        assert "rows in DBOS's tables after the run" in done.stdout
    else:
        assert "the DBOS rows are left out" in done.stderr
