"""Found by an attack: what a new user meets first (README commands, ``demo``, ``diagram``, ``paths``).

Tests under "were defects" failed before the fix that came with them (each docstring says
what was wrong); tests under "held" are attacks the code withstood.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline_state._cli import main

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(sys.executable).parent / "pipeline-state"
MEDIA = f"{ROOT / 'examples' / 'custom_catalog.py'}:MEDIA"


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **(env or {})},
        encoding="utf-8",
        errors="replace",
    )


def into_a_pipe_nobody_reads(*args: str) -> tuple[int, str]:
    """Run the command with stdout a pipe whose reader is already gone (as in
    ``pipeline-state ... | head -1`` once ``head`` has exited): deterministic EPIPE."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [str(SCRIPT), *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write_end)
    return done.returncode, done.stderr


# ======================================================================= were defects


def test_demo_profile_refuses_zero_or_negative_batches(capsys: pytest.CaptureFixture[str]) -> None:
    """``demo --help`` says ``--batches`` is 1-20 and the default demo refuses 0 with exit 2.
    With ``--profile`` the bound is not checked: ``--batches 0`` (or -3) plays nothing, prints
    "0 batch(es)" and "OK: every run ended exactly once ..." and exits 0, a check that checked
    nothing. Correct: one line ``--batches must be between 1 and 20`` on stderr, exit 2."""
    for value in ("0", "-3"):
        code = main(["demo", "--profile", MEDIA, "--batches", value])
        captured = capsys.readouterr()
        assert code == 2, captured.out
        assert "--batches must be between 1 and 20" in captured.err
        assert "OK:" not in captured.out


def test_demo_profile_refuses_a_huge_batch_count_quickly() -> None:
    """``demo --profile SPEC --batches 100000000`` must be refused at once (exit 2, as
    ``demo --batches 100000000`` is); today it starts playing 10^8 batches in memory and runs
    until killed (here: the 20 s timeout)."""
    try:
        done = run_cli("demo", "--profile", MEDIA, "--batches", "100000000", timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("demo --profile --batches 100000000 still running after 20 s (no bound)")
    assert done.returncode == 2, done.stdout[-500:] + done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_readme_demo_on_an_ascii_terminal_does_not_crash() -> None:
    """The README's first command, ``pipeline-state demo`` (rich output), on a terminal whose
    encoding is ASCII (``PYTHONIOENCODING=ascii``) dies with a ``UnicodeEncodeError``
    traceback and exit 1 before printing anything: Renderer uses "·", "→" and "─"
    (pipeline_state/profiles/huleedu/demo/render.py:171-173) whenever ``plain`` is False,
    whatever the stream can encode. Correct: fall back to the ASCII characters (or plain
    output) when the stream's encoding cannot encode them; exit 0 with the story."""
    done = run_cli("demo", env={"PYTHONIOENCODING": "ascii", "LANG": "C", "LC_ALL": "C"}, timeout=120)
    assert "Traceback" not in done.stderr, done.stderr[-800:]
    assert done.returncode == 0
    assert "OK: the story checked out" in done.stdout


@pytest.mark.parametrize(
    "args", [("demo", "--plain"), ("diagram", "pipelines")], ids=["demo-plain", "diagram-pipelines"]
)
def test_output_into_a_closed_pipe_is_not_a_traceback(args: tuple[str, ...]) -> None:
    """``pipeline-state demo --plain | head -1`` and ``pipeline-state diagram pipelines | head
    -1`` print a ``BrokenPipeError`` traceback on stderr and exit 1 once the reader has gone
    (render.py:183 ``out.write`` and _cli.py:41 ``print``; nothing in ``main`` handles
    ``BrokenPipeError``). Reproduced here deterministically with a pipe whose read end is
    closed. Correct: the conventional quiet exit when the reader goes away (no traceback)."""
    _code, err = into_a_pipe_nobody_reads(*args)
    assert "Traceback" not in err, err[-600:]
    assert "BrokenPipeError" not in err


def test_paths_with_a_bad_profile_spec_exits_2_not_1(capsys: pytest.CaptureFixture[str]) -> None:
    """``paths`` documents exit 1 as "a declared transition is unreachable (or decide
    crashed)" (docs/testing.md, ``paths --help``). A malformed ``--profile`` is bad usage,
    exit 2, as ``demo --profile`` answers it (_demo/any_profile.py:67-70). Today
    ``paths --profile nope`` exits 1: ``load_profile``'s DefinitionError reaches the generic
    ``except PipelineStateError: return 1`` in _cli.py main (line 164-166), so a script cannot
    tell "your profile spec is wrong" from "coverage is incomplete"."""
    for spec in ("nope", "no_such_module_xyz:P", "pipeline_state._profile:NOPE"):
        code = main(["paths", "--profile", spec])
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1
        assert code == 2, (spec, err)


def test_diagram_unknown_pipeline_or_bad_catalog_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """``diagram nope`` and ``diagram pipelines --catalog /missing.toml`` are bad input
    (usage), which the CLI's epilog and docs/reference/cli.md give exit 2 (and argparse's own
    usage errors for ``diagram`` are 2). Today both exit 1, the code documented as "denied or
    refused by the engine", because the CatalogError/DefinitionError falls into the generic
    ``except PipelineStateError: return 1`` in _cli.py main."""
    assert main(["diagram", "nope"]) == 2
    assert "unknown pipeline 'nope'" in capsys.readouterr().err
    assert main(["diagram", "pipelines", "--catalog", "/nonexistent/catalog.toml"]) == 2


def test_diagram_bad_yaml_catalog_error_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A malformed YAML catalog is reported on five lines: ``Catalog.from_yaml``
    (pipeline_state/_catalog.py:477-478) puts PyYAML's multi-line ``str(exc)`` (with a
    source excerpt and a caret) into the message. The TOML path gives one line; errors are
    "one line on standard error" (docs/reference/cli.md). Correct: collapse the YAML
    error to one line (e.g. its problem and mark: "expected the node content ... line 1,
    column 5")."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [", encoding="utf-8")
    main(["diagram", "pipelines", "--catalog", str(bad)])
    err = capsys.readouterr().err
    assert "cannot parse YAML catalog" in err
    assert len(err.strip().splitlines()) == 1, err


def test_paths_console_example_in_testing_md_matches_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    """(Low severity, doc drift.) docs/testing.md shows ``$ pipeline-state paths`` printing
    "2265 abstract states, 87956 inputs decided"; the command prints "2173 abstract states,
    84296 inputs decided". Correct: regenerate the example (or elide the numbers)."""
    text = (ROOT / "docs" / "testing.md").read_text(encoding="utf-8")
    documented = re.search(r"\$ pipeline-state paths\n(.+)\n", text)
    assert documented is not None
    assert main(["paths"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first == documented.group(1)


# =============================================================================== held


@pytest.mark.parametrize("command", [[], ["demo"], ["diagram"], ["paths"]])
def test_version_on_every_core_command(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("pipeline-state ")


@pytest.mark.parametrize(
    "argv",
    [
        ["demo", "--batches", "abc"],
        ["demo", "--seed", "x"],
        ["demo", "--seed", "9" * 5000],
        ["demo", "--frobnicate"],
        ["paths", "--max-depth", "x"],
        ["diagram"],
        ["nope"],
    ],
)
def test_bad_flag_values_are_one_usage_line_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "(see --help)" in err


@pytest.mark.parametrize("value", ["0", "21", "-1", "100000000000000000000"])
def test_default_demo_bounds_batches(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--batches", value]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_paths_max_depth_bounds(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["paths", "--max-depth", "0"]) == 2
    assert main(["paths", "--max-depth", "-5"]) == 2


@pytest.mark.parametrize("what", ["batch", "run", "phase", "pipelines", "ai_feedback", "nlp"])
def test_diagram_prints_mermaid(what: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["diagram", what]) == 0
    out = capsys.readouterr().out
    assert out.isascii()
    assert "stateDiagram" in out or "flowchart" in out or "graph" in out


def test_demo_seed_extremes_are_fine(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--plain", "--batches", "1", "--seed", str(-(10**300))]) == 0
    assert main(["demo", "--profile", MEDIA, "--batches", "1", "--seed", str(10**300)]) == 0


def test_plain_demo_and_help_on_ascii_terminal() -> None:
    env = {"PYTHONIOENCODING": "ascii", "LANG": "C", "LC_ALL": "C"}
    for args in (("demo", "--plain"), ("--help",), ("demo", "--help"), ("diagram", "pipelines")):
        done = run_cli(*args, env=env, timeout=120)
        assert done.returncode == 0, done.stderr[-500:]
        assert "Traceback" not in done.stderr


def test_demo_with_c_locale_only_is_fine() -> None:
    done = run_cli("demo", env={"LANG": "C", "LC_ALL": "C"}, timeout=120)
    assert done.returncode == 0, done.stderr[-500:]
