"""Issue 13, point 1: outside ``pipeline_state/profiles/`` the engine speaks of batches, items,
runs, phases and owners, not of the education platform (essays, teachers, classes, students,
its phases or its name).

The modules that still do are listed below with how many of their lines do. The list is a
ratchet: a module not listed must not start, a listed one must not grow, and a count that
went down must be lowered here (so the list always says what is left to do).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "pipeline_state"
PROFILES = PACKAGE / "profiles"

VOCABULARY = re.compile(
    r"essay|teacher|class_id|huleedu|spellcheck|cj_assessment|nlp|ai_feedback|course_code|student",
    re.IGNORECASE,
)

REMAINING: dict[str, int] = {}
"""Module (relative to ``pipeline_state/``) -> lines that still use the education vocabulary."""

IMPORTS_OF_THE_PROFILE: set[str] = set()
"""Modules outside ``profiles/`` that still import the shipped profile's package; the others
reach the default profile only through :func:`pipeline_state.profiles.default_profile`."""


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if PROFILES not in p.parents)


def _name(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def _vocabulary_lines(path: Path) -> int:
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if VOCABULARY.search(line))


def test_the_vocabulary_pattern_finds_what_it_should() -> None:
    # The pattern itself could be wrong: pin what it catches and what it leaves alone.
    for text in ("state.essays", "Teacher", "class_id", "HuleEdu", "cj_assessment", "student_matching"):
        assert VOCABULARY.search(text), text
    for text in ("state.items", "owner", "group_id", "phase", "batch_id", "run"):
        assert not VOCABULARY.search(text), text


def test_the_remaining_list_names_existing_modules() -> None:
    names = {_name(p) for p in _modules()}
    assert not set(REMAINING) - names
    assert not IMPORTS_OF_THE_PROFILE - names


@pytest.mark.parametrize("path", _modules(), ids=_name)
def test_no_module_outside_profiles_gains_education_vocabulary(path: Path) -> None:
    found = _vocabulary_lines(path)
    allowed = REMAINING.get(_name(path), 0)
    assert found <= allowed, (
        f"{_name(path)} has {found} lines of the education vocabulary, {allowed} allowed: "
        "say it in the engine's words (items, owners, groups) or move it under pipeline_state/profiles/"
    )
    assert found == allowed, f"{_name(path)} is down to {found}: lower REMAINING to match"


def _imports_the_profile(path: Path) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = ".".join(("pipeline_state", *path.relative_to(PACKAGE).parent.parts))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            if base.startswith("pipeline_state.profiles.huleedu") or (
                base == "pipeline_state.profiles" and any(a.name == "huleedu" for a in node.names)
            ):
                return True
        elif isinstance(node, ast.Import) and any(
            a.name.startswith("pipeline_state.profiles.huleedu") for a in node.names
        ):
            return True
    return False


@pytest.mark.parametrize("path", _modules(), ids=_name)
def test_only_the_listed_modules_import_the_shipped_profile(path: Path) -> None:
    assert _imports_the_profile(path) == (_name(path) in IMPORTS_OF_THE_PROFILE)
