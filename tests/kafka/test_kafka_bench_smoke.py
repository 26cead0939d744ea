"""The Kafka benchmark runs in its quick mode and prints every figure (never a timing check)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from pipeline_state_kafka.testing import LocalBroker

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parents[2]


def test_kafka_bench_quick_mode_runs_and_prints_its_table(broker: LocalBroker) -> None:
    pytest.importorskip("pipeline_state_sql")
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "kafka.py"),
            "--quick",
            "--runs",
            "8",
            "--kafka",
            broker.bootstrap,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for backend in ("memory", "sqlite", "sqlite,traces"):  # tracing on vs off in the same run
        for figure in ("outcomes_per_s", "completion_p50", "completion_p99"):
            assert f"{figure}[{backend}]" in done.stdout
    assert "PASS" in done.stdout or "MISS" in done.stdout
    recorded = re.search(r"(\d+) spans recorded by the traced serve", done.stdout)
    assert recorded is not None  # tracing was really on in the traced run
    assert int(recorded.group(1)) > 0
