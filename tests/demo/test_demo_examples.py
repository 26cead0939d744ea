"""Every example runs and exits 0; the minimal service stays within 20 lines of code."""

from __future__ import annotations

import ast
import io
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

EXPECTED = {
    "platform_demo.py": ["skipped:spellcheck", "OK: the story checked out"],
    "service_in_20_lines.py": [
        "completed_with_failures ['spellcheck', 'cj_assessment'] 1 failed",
        "batch is now ready_for_pipeline_execution",
    ],
    "custom_catalog.py": [
        "-> media.captions.start.v1",
        "-> skipped publish: dependency_failed",
        "== release: failed_critically",
        "-> skipped transcode: already_completed",
        "== preview: completed_successfully, done []",
    ],
}


def test_every_example_is_listed() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs_and_exits_zero(name: str, tmp_path: Path) -> None:
    args = [sys.executable, str(EXAMPLES / name)] + (["--plain"] if name == "platform_demo.py" else [])
    done = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    for expected in EXPECTED[name]:
        assert expected in done.stdout


def code_lines(path: Path) -> set[int]:
    """Lines holding code: not blank, not comments, not the module docstring, not imports."""
    source = path.read_text()
    tree = ast.parse(source)
    excluded: set[int] = set()
    for node in tree.body:
        is_docstring = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        if is_docstring or isinstance(node, ast.Import | ast.ImportFrom):
            excluded.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT}
    skip |= {tokenize.ENCODING, tokenize.ENDMARKER}
    lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in skip:
            lines.update(range(token.start[0], token.end[0] + 1))
    return lines - excluded


def test_the_minimal_service_has_at_most_20_lines_of_code() -> None:
    count = len(code_lines(EXAMPLES / "service_in_20_lines.py"))
    assert 10 < count <= 20
