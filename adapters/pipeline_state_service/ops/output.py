"""How operator commands answer: a JSON document for scripts (``--json``) or short text
lines for people, on standard output; errors go to standard error, one line each."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TextIO

__all__ = ["add_json_argument", "emit", "error_line"]


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
        print(line, file=stream)


def error_line(message: str, *, err: TextIO | None = None) -> None:
    """``error: <message>`` on standard error."""
    print(f"error: {message}", file=err or sys.stderr)
