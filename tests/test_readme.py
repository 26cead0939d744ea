"""The README's first two commands are the project's set-up contract; CI runs the second."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block is not None, "README.md must start with a bash block of commands"
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def test_readme_starts_with_demo_and_test_commands() -> None:
    commands = readme_commands()
    assert len(commands) == 2
    demo, tests = commands
    assert demo.endswith("pipeline-state demo")
    assert tests.endswith("-m pytest")
    # Both set up from nothing: a fresh virtual environment and an install of the project.
    for command in commands:
        assert command.startswith("python3 -m venv .venv && .venv/bin/pip install")


def test_ci_runs_exactly_the_readme_test_command() -> None:
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    last = [line for line in script.splitlines() if line.strip() and not line.startswith("#")][-1]
    assert last.strip() == readme_commands()[1]
