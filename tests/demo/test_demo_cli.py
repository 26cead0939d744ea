"""``pipeline-state demo``: the README's first command plays the platform and exits 0."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline_state._cli import main

SCRIPT = Path(sys.executable).parent / "pipeline-state"


def demo_output(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code = main(["demo", "--plain", *args])
    out = capsys.readouterr().out
    assert code == 0, out
    return out


def test_demo_console_script_runs_the_story_and_exits_zero() -> None:
    assert SCRIPT.exists(), f"the console script is not installed next to {sys.executable}"
    done = subprocess.run(
        [str(SCRIPT), "demo", "--plain"], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK: the story checked out" in done.stdout
    assert done.stderr == ""


def test_demo_shows_pruning_partial_success_denials_and_history(capsys: pytest.CaptureFixture[str]) -> None:
    out = demo_output(capsys)
    lines = out.splitlines()
    # Every nlp run skips spellcheck (already completed) and dispatches only nlp.
    nlp_requests = [line for line in lines if re.search(r"pipeline\.request\s+nlp\s{2,}", line)]
    assert len(nlp_requests) == 2
    assert all("skipped:spellcheck" in line and "nlp.cmd(" in line for line in nlp_requests)
    assert "spellcheck.cmd" not in "".join(nlp_requests)
    assert out.count("completed_phases: nlp | skipped_phases: spellcheck") == 2
    assert out.count("completed_phases: ai_feedback | skipped_phases: spellcheck, nlp") == 2
    # Seeded failures show up as partial success.
    assert "completed_with_partial_success" in out
    assert "completed_with_failures" in out
    # Denials are never silent.
    assert re.search(
        r"nlp \(while cj_assessment runs\)\s+DENIED: pipeline_already_active,\s+notify:denied", out
    )
    assert re.search(r"DENIED: prompt_not_attached,\s+notify:denied", out)
    # Redelivered outcomes change nothing.
    assert out.count("nothing, no change") == 2
    # Each batch ends with its history: three runs, oldest first.
    history = out[out.index(" history ") : out.index(" results ")]
    for batch in ("batch-01", "batch-02"):
        assert f"{batch} | ready_for_pipeline_execution" in history
    rows = [line.split() for line in history.splitlines() if re.match(r"[0-9a-f]{8}\s", line)]
    assert [row[1] for row in rows] == ["cj_assessment", "nlp", "ai_feedback"] * 2
    assert all(row[2] in {"completed_successfully", "completed_with_failures"} for row in rows)
    assert [row[-1] for row in rows if row[1] == "ai_feedback"] == ["nlp", "nlp"]


def test_demo_output_is_plain_short_and_fits_100_columns(capsys: pytest.CaptureFixture[str]) -> None:
    out = demo_output(capsys)
    lines = out.splitlines()
    assert len(lines) < 150
    assert max(len(line) for line in lines) <= 100
    assert out.isascii()
    assert "\x1b[" not in out
    assert all(line == line.rstrip() for line in lines)


def test_same_seed_gives_the_same_output(capsys: pytest.CaptureFixture[str]) -> None:
    first = demo_output(capsys, "--seed", "11", "--batches", "3")
    second = demo_output(capsys, "--seed", "11", "--batches", "3")
    assert first == second
    assert first != demo_output(capsys, "--seed", "12", "--batches", "3")


@pytest.mark.parametrize("seed", [1, 2, 3, 42])
def test_the_story_checks_out_for_other_seeds(capsys: pytest.CaptureFixture[str], seed: int) -> None:
    out = demo_output(capsys, "--seed", str(seed), "--batches", "3")
    assert "batch-03" in out
    assert "OK: the story checked out" in out


def test_batches_out_of_range_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--batches", "0"]) == 2
    assert "--batches must be between 1 and 20" in capsys.readouterr().err


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_catalog.py"


def test_demo_plays_any_profile_named_by_file(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["demo", "--profile", f"{EXAMPLE}:MEDIA", "--batches", "2", "--seed", "3"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.splitlines()[0] == "profile media: pipelines preview, release; 2 batch(es), seed 3"
    runs = [line.split() for line in out.splitlines() if line.startswith("demo-")]
    assert [(r[0], r[1]) for r in runs] == [
        ("demo-1", "preview"),
        ("demo-1", "release"),
        ("demo-2", "preview"),
        ("demo-2", "release"),
    ]
    # release after preview: transcode and thumbnails are pruned, captions and publish run
    assert all(
        "skipped ['transcode', 'thumbnails']" in line for line in out.splitlines() if " release " in line
    )
    assert out.rstrip().endswith("OK: every run ended exactly once and every batch is ready again.")


def test_demo_plays_a_profile_factory_named_by_module(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["demo", "--profile", "pipeline_state.profiles.huleedu:huleedu_profile", "--batches", "1"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "demo-1  comprehensive" in out


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no-colon", "expected FILE.py:NAME or MODULE:NAME"),
        ("no_such_module_xyz:P", "cannot import no_such_module_xyz"),
        ("pipeline_state._profile:NOPE", "has no NOPE"),
        ("pipeline_state.profiles.huleedu:HULEEDU_CATALOG", "got Catalog"),
    ],
)
def test_demo_refuses_a_spec_that_names_no_profile(
    capsys: pytest.CaptureFixture[str], spec: str, message: str
) -> None:
    assert main(["demo", "--profile", spec]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1
