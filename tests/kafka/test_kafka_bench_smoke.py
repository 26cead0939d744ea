"""The Kafka benchmark runs in its quick mode and prints every figure (never a timing check)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from pipeline_state_kafka.testing import LocalBroker

from tests.optional import require

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parents[2]


def test_kafka_bench_quick_mode_runs_and_prints_its_table(broker: LocalBroker) -> None:
    require("pipeline_state_sql")
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
    figures = ["outcomes_per_s", "completion_p50", "completion_p99"]
    if Path("/proc/self/stat").exists():  # the serve's CPU time is read there
        figures.append("serve_cpu_per_outcome")
    for backend in ("memory", "sqlite", "sqlite,traces"):  # tracing on vs off in the same run
        for figure in figures:
            assert f"{figure}[{backend}]" in done.stdout
    assert "PASS" in done.stdout or "MISS" in done.stdout
    recorded = re.search(r"(\d+) spans recorded by the traced serve", done.stdout)
    assert recorded is not None  # tracing was really on in the traced run
    assert int(recorded.group(1)) > 0
    for backend in ("memory", "sqlite"):  # the in-process figures that resolve 5 %
        assert f"tracing_cpu_per_outcome[{backend}]" in done.stdout
        assert f"metrics_cpu_per_outcome[{backend}]" in done.stdout


def test_kafka_bench_rows_take_the_median_of_the_rounds_ratios(monkeypatch: pytest.MonkeyPatch) -> None:
    """The observability rows of several interleaved rounds (no broker: made-up figures)."""
    monkeypatch.syspath_prepend(str(ROOT))
    from bench.kafka import Config, Measured, _rows

    def measured(label: str, per_s: float, cpu: float, latencies: list[float]) -> Measured:
        return Measured(label, per_s, latencies, cpu_us_per_outcome=cpu)

    results = {
        "memory": [measured("memory", 900, 1000, [10.0])],
        "sqlite": [
            measured("sqlite", v, c, [20.0, 30.0]) for v, c in ((400, 2000), (500, 2100), (450, 2000))
        ],
        "sqlite,traces": [
            measured("sqlite,traces", v, c, [25.0, 300.0]) for v, c in ((380, 2100), (490, 2150), (400, 2200))
        ],
    }
    rows = {row.figure: row for row in _rows(results, Config(runs=10, rounds=3))}

    traced = rows["outcomes_per_s[sqlite,traces]"]
    assert traced.value == 400  # the median over the rounds
    assert traced.baseline == 450
    assert traced.ratio == pytest.approx(0.95)  # the rounds' ratios: 0.95, 0.98, 0.889
    assert "ratio per round 0.95x, 0.98x, 0.89x" in traced.spread
    assert traced.result == "PASS"
    cpu = rows["serve_cpu_per_outcome[sqlite,traces]"]
    assert cpu.value == 2150
    assert cpu.ratio == pytest.approx(1.05)  # the rounds' ratios: 1.05, 1.024, 1.10
    assert cpu.result == "PASS"
    p99 = rows["completion_p99[sqlite,traces]"]
    assert p99.value == 300.0  # pooled over the rounds
    assert p99.ratio == pytest.approx(300.0 / 30.0)
    assert p99.result == "MISS"
    plain = rows["outcomes_per_s[sqlite]"]
    assert (plain.value, plain.baseline, plain.ratio) == (450, 900, 0.5)  # against memory: medians
    assert rows["serve_cpu_per_outcome[sqlite]"].target is None
    assert "outcomes_per_s[memory]" in rows


def test_kafka_bench_rows_leave_out_a_ratio_to_no_cpu_at_all(monkeypatch: pytest.MonkeyPatch) -> None:
    """A short run (``--quick``) can read no CPU time for the memory store's serve (below the
    clock's tick): the durable stores' CPU rows then have no ratio instead of dividing by 0."""
    monkeypatch.syspath_prepend(str(ROOT))
    from bench.kafka import Config, Measured, _rows

    results = {
        "memory": [Measured("memory", 900, [10.0], cpu_us_per_outcome=0.0)],
        "sqlite": [Measured("sqlite", 400, [20.0], cpu_us_per_outcome=625.0)],
    }
    rows = {row.figure: row for row in _rows(results, Config(runs=8, rounds=1))}
    cpu = rows["serve_cpu_per_outcome[sqlite]"]
    assert cpu.value == 625.0
    assert cpu.ratio is None


@pytest.mark.postgres
def test_kafka_bench_scale_out_mode_measures_one_and_two_serves(broker: LocalBroker) -> None:
    """``--serves 1,2``: two serve processes in one group on one PostgreSQL schema are
    measured against one (the figures are information, never checked)."""
    require("pipeline_state_sql")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from proof_harness import postgres_url

    postgres_url()  # fails under CI=true when PostgreSQL is missing
    command = [sys.executable, str(ROOT / "bench" / "kafka.py"), "--quick", "--runs", "8"]
    only_scale_out = ["--backends", "none", "--traced", "none", "--metrics", "off", "--serves", "1,2"]
    done = subprocess.run(
        [*command, "--kafka", broker.bootstrap, *only_scale_out],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for label in ("postgres,1 serve", "postgres,2 serves"):
        assert f"scale_out_outcomes_per_s[{label}]" in done.stdout
    assert "the same with 1 serve process" in done.stdout
    assert "load average" in done.stdout.splitlines()[0]
