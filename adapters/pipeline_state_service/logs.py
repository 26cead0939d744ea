"""Structured log lines for the service: JSON (one object per line) or logfmt ``key=value``.

The library logs through the standard :mod:`logging` module; :func:`configure_logging`
puts a :class:`structlog.stdlib.ProcessorFormatter` on stderr that turns each record into
one structured line. Every field passed with ``extra=`` is written (``batch_id``,
``correlation_id``, ``event_id``, ``topic``, ``partition``, ``offset``...), so a batch's story
can be found with a grep on its id. When an OpenTelemetry span is current (see
:func:`trace_context`), the line carries its ``trace_id`` and ``span_id`` too, so a log
line leads to its trace. Every text value is written through
:func:`~pipeline_state_service.ops.output.printable`: an id read back from a refused record,
or a header a library quotes, cannot move the cursor, add a line or turn the line around on
the operator's terminal. ``fmt="auto"`` (the default of ``serve``) writes JSON unless stderr
is a terminal::

    {"ts": "2025-01-01T10:00:00.120Z", "level": "INFO", "logger": "pipeline_state_kafka.consumer",
     "msg": "handled huleedu.els.batch.phase.outcome.v1", "batch_id": "b1",
     "correlation_id": "1f0...", "event_id": "9c2...", "result": "applied", "emitted": 2,
     "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7"}
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

import structlog
from opentelemetry import trace
from structlog.typing import EventDict, Processor, WrappedLogger

from .ops.output import printable

__all__ = ["JsonFormatter", "KeyValueFormatter", "configure_logging", "trace_context"]

LogFormat = Literal["auto", "kv", "json"]

_FIRST = ("ts", "level", "logger", "msg", "batch_id", "correlation_id", "event_id")

_FORMATTED = frozenset({"message", "asctime"})
"""Record attributes :meth:`logging.Formatter.format` adds (another handler formatted the
record first): the message and time again, not ``extra=`` fields."""


def trace_context() -> dict[str, str]:
    """The ``trace_id`` and ``span_id`` (lowercase hex, as in W3C ``traceparent``) of the
    current OpenTelemetry span; empty when no valid span is current."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {
        "trace_id": trace.format_trace_id(context.trace_id),
        "span_id": trace.format_span_id(context.span_id),
    }


def _record_fields(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """``ts`` (when the record was made, UTC, milliseconds), ``level`` and ``logger``."""
    record: logging.LogRecord = event["_record"]
    event["ts"] = (
        datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )
    event["level"] = record.levelname
    event["logger"] = record.name
    return event


def _add_trace(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """The current span's ids, unless the line names the span it is about already."""
    if "trace_id" not in event:
        event.update(trace_context())
    return event


def _error_summary(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """``error``: the exception's class and message, when the record carries one."""
    info = event.pop("exc_info", None)
    if isinstance(info, tuple) and info[1] is not None:
        event["error"] = f"{type(info[1]).__name__}: {info[1]}"
    return event


def _tidy(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """Drop empty fields, private ones and what another formatter left; the fixed fields first."""
    fields = {
        k: v for k, v in event.items() if v is not None and not k.startswith("_") and k not in _FORMATTED
    }
    ordered = {k: fields.pop(k) for k in _FIRST if k in fields}
    ordered.update(fields)
    return ordered


def _printable(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """Every value as text with its unshowable characters escaped (``\\x1b``, ``\\u2028``),
    numbers, flags and ``None`` as they are: ids and messages can come from a hostile record,
    and neither renderer escapes C1 controls, line separators or bidi marks (logfmt not even
    ESC). Other text, non-ASCII letters included, is written as it is."""
    return {
        k: v if v is None or isinstance(v, int | float) else printable(v if isinstance(v, str) else str(v))
        for k, v in event.items()
    }


def _chain() -> list[Processor]:
    return [
        structlog.stdlib.ExtraAdder(),
        _record_fields,
        _add_trace,
        _error_summary,
        structlog.processors.EventRenamer("msg"),
    ]


class JsonFormatter(structlog.stdlib.ProcessorFormatter):
    """One JSON object per line."""

    def __init__(self) -> None:
        super().__init__(
            foreign_pre_chain=_chain(),
            processors=[
                _tidy,
                _printable,
                structlog.processors.JSONRenderer(default=str, ensure_ascii=False),
            ],
        )


class KeyValueFormatter(structlog.stdlib.ProcessorFormatter):
    """logfmt ``key=value`` pairs; values with spaces or quotes are quoted."""

    def __init__(self) -> None:
        super().__init__(
            foreign_pre_chain=_chain(),
            processors=[_tidy, _printable, structlog.processors.LogfmtRenderer()],
        )


class _CurrentStderr(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stderr`` is now (a live display may have redirected it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def configure_logging(level: str | int = "INFO", fmt: LogFormat = "auto") -> logging.Handler:
    """Route the library's loggers to stderr as structured lines; returns the handler.
    ``fmt="auto"`` writes JSON unless stderr is a terminal (then ``key=value``)."""
    if fmt not in ("auto", "kv", "json"):
        raise ValueError(f"log format must be auto, kv or json, got {fmt!r}")
    json_lines = fmt == "json" or (fmt == "auto" and not _is_terminal(sys.stderr))
    handler = _CurrentStderr(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else KeyValueFormatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _CurrentStderr)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else level.upper())
    # aiokafka and alembic are chatty at INFO about routine group membership and migrations.
    for chatty in ("aiokafka", "alembic"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))
    return handler
