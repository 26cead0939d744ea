"""The public names an adapter's README documents, checked against its ``__all__``."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

__all__ = ["MARKER", "assert_public_names", "documented_names"]

MARKER = "<!-- public-names -->"


def documented_names(readme: Path) -> list[str]:
    """The names in back-quotes of the paragraph after the README's :data:`MARKER`."""
    text = readme.read_text(encoding="utf-8")
    _, found, rest = text.partition(MARKER + "\n")
    assert found, f"{readme} has no {MARKER} paragraph"
    paragraph = rest.split("\n\n", 1)[0]
    return re.findall(r"`(\w+)`", paragraph)


def assert_public_names(package: str, readme: Path, expected: dict[str, Any]) -> None:
    """``package.__all__`` is exactly the README's list and ``expected``'s keys, and each name,
    imported from the package, is the very object ``expected`` gives for it."""
    module = importlib.import_module(package)
    names = list(module.__all__)
    assert len(names) == len(set(names)), "a name is listed twice"
    assert sorted(names) == sorted(documented_names(readme)), f"{package}.__all__ differs from {readme}"
    assert sorted(names) == sorted(expected), f"{package}.__all__ differs from the test's list"
    for name in names:
        namespace: dict[str, Any] = {}
        exec(f"from {package} import {name}", namespace)
        assert namespace[name] is expected[name], f"{package}.{name} is not {expected[name]!r}"
