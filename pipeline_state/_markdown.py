"""Markdown pieces shared by the generated pages (:mod:`._docsgen`, :mod:`._profile_reference`).

Names written into these pages come from catalogs and profiles that users write, so each
piece keeps any text inside its own cell, code span and id: a ``|`` does not split a table
row, a backtick does not end a code span, and two names never share an anchor.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

__all__ = ["anchor", "code", "codes", "table", "unique_anchors"]


def code(text: object) -> str:
    """Inline code that survives a table cell (``|`` written ``&#124;``) and holds any
    backtick (the span is then fenced with two backticks, as CommonMark allows)."""
    shown = " ".join(str(text).splitlines()).replace("|", "&#124;")
    if "`" in shown:
        return f"`` {shown} ``"
    return f"`{shown}`"


def codes(items: Iterable[object], empty: str = "—") -> str:
    """Inline code for each item, comma-separated (``empty`` for none)."""
    rendered = [code(item) for item in items]
    return ", ".join(rendered) if rendered else empty


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """A Markdown table's lines."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return lines


def anchor(name: str) -> str:
    """A stable HTML id for a heading (lower case, ``-`` for anything not alphanumeric)."""
    return re.sub(r"[^0-9a-z]+", "-", name.lower()).strip("-")


def unique_anchors(names: Iterable[str], fallback: str) -> dict[str, str]:
    """An id for each of ``names`` that no other of them shares: :func:`anchor`, or
    ``fallback`` where that is empty, with ``-2``, ``-3``... added on a collision (in the
    order given, so the ids are stable for a given list)."""
    taken: set[str] = set()
    out: dict[str, str] = {}
    for name in names:
        base = anchor(name) or fallback
        found, n = base, 1
        while found in taken:
            n += 1
            found = f"{base}-{n}"
        taken.add(found)
        out[name] = found
    return out
