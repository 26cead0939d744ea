"""How operator commands answer: a JSON document for scripts (``--json``) or short text
lines for people, on standard output; errors go to standard error, one line each.

Text lines and error lines are printed through :func:`printable`: a value the store holds
(who asked, a note, an error text: written by an older release or another client) cannot
move the cursor, erase or add a line, or turn the text after it around on a terminal.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TextIO

__all__ = ["add_json_argument", "emit", "error_line", "printable"]

_UNPRINTABLE = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
"""C0 and C1 control characters (escape sequences, line breaks, carriage returns), line and
paragraph separators, bidirectional marks, embeddings, overrides and isolates, and lone
surrogates (which no terminal encoding can print)."""


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with every character of ``_UNPRINTABLE`` shown as its escape
    (``\\x1b``, ``\\u202e``), so one value prints as itself on one line."""
    return _UNPRINTABLE.sub(_escaped, text)


def add_json_argument(parser: Any) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON for scripts instead of text")


def _default(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def emit(
    document: Mapping[str, Any] | Sequence[Any],
    *,
    as_json: bool,
    text: Callable[[], Sequence[str]],
    out: TextIO | None = None,
) -> None:
    """Print ``document`` as JSON, or the lines ``text()`` gives."""
    stream = out or sys.stdout
    if as_json:
        print(json.dumps(document, indent=2, default=_default, ensure_ascii=False), file=stream)
        return
    for line in text():
        print(printable(line), file=stream)


def error_line(message: str, *, err: TextIO | None = None) -> None:
    """``error: <message>`` on standard error."""
    print(f"error: {printable(message)}", file=err or sys.stderr)
