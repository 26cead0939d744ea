"""Structured log lines for the service: ``key=value`` (default) or JSON, one per record.

Every field passed with ``extra=`` is written (``batch_id``, ``correlation_id``,
``event_id``, ``topic``, ``partition``, ``offset``...), so a batch's story can be found with
a grep on its id::

    ts=2025-01-01T10:00:00.120Z level=INFO logger=pipeline_state_kafka.consumer msg="handled
    huleedu.els.batch.phase.outcome.v1" batch_id=b1 correlation_id=1f0... result=applied emitted=2
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

__all__ = ["JsonFormatter", "KeyValueFormatter", "configure_logging"]

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}
_FIRST = ("batch_id", "correlation_id", "event_id")


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ts": datetime.fromtimestamp(record.created, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        "level": record.levelname,
        "logger": record.name,
        "msg": record.getMessage(),
    }
    extras = {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}
    for name in _FIRST:
        if extras.get(name) is not None:
            out[name] = extras.pop(name)
    out.update((k, v) for k, v in extras.items() if v is not None)
    if record.exc_info and record.exc_info[1] is not None:
        error = record.exc_info[1]
        out["error"] = f"{type(error).__name__}: {error}"
    return out


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, separators=(",", ":"))
    if text == "" or any(c in text for c in ' "=\n\t'):
        return json.dumps(text, ensure_ascii=False)
    return text


class KeyValueFormatter(logging.Formatter):
    """``key=value`` pairs; values with spaces, quotes or ``=`` are JSON-quoted."""

    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={_text(v)}" for k, v in _fields(record).items())


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record), default=str, ensure_ascii=False)


class _CurrentStderr(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stderr`` is now (a live display may have redirected it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def configure_logging(level: str | int = "INFO", fmt: Literal["kv", "json"] = "kv") -> logging.Handler:
    """Route the library's loggers to stderr as structured lines; returns the handler."""
    handler = _CurrentStderr(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _CurrentStderr)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else level.upper())
    # aiokafka and alembic are chatty at INFO about routine group membership and migrations.
    for chatty in ("aiokafka", "alembic"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))
    return handler
