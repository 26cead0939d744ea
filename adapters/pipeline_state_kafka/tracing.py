"""Trace context in Kafka records: read on the way in, marked on dead letters.

The W3C ``traceparent`` (and ``tracestate``) headers of an inbound record name the trace its
unit of work continues (see :mod:`pipeline_state._tracing`); the outbox relay writes them on
every record it publishes (:func:`~pipeline_state_kafka.codec.encode_message`). A record the
consumer dead-letters gets a short span in its trace saying so.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from opentelemetry import context as otel_context

from pipeline_state._tracing import TraceContext, continued, inbound_span, record_error

from ._kafka import Headers

__all__ = ["TRACE_HEADERS", "attached", "dead_lettered", "trace_headers"]

TRACE_HEADERS = frozenset({"traceparent", "tracestate"})
"""The W3C trace-context header names."""

log = logging.getLogger(__name__)


def _w3c_text(name: str, raw: bytes) -> bool:
    """Whether ``raw`` is printable ASCII (0x20-0x7e), all the W3C trace headers may hold;
    a value that is not is logged as a bytes literal (ASCII, escapes shown), at most 200 bytes."""
    if all(0x20 <= byte <= 0x7E for byte in raw):
        return True
    log.warning("dropped a %s header outside the W3C character set: %r", name, raw[:200])
    return False


def trace_headers(headers: Headers | None) -> TraceContext:
    """The trace-context headers of a record as text pairs (empty when it has none).

    A value outside the W3C character set is dropped, not handed to the propagator: it could
    not be valid, and OpenTelemetry's parser logs a malformed ``tracestate`` member verbatim,
    so any producer could write terminal escapes through whatever handler shows its warnings."""
    if not headers:
        return ()
    return tuple(
        (name, raw.decode("ascii"))
        for name, raw in headers
        if name in TRACE_HEADERS and raw and _w3c_text(name, raw)
    )


@contextlib.contextmanager
def attached(headers: Headers | None) -> Iterator[None]:
    """Make the record's trace current for the body (its handler's span continues it)."""
    parent = continued(trace_headers(headers))
    if parent is None:
        yield
        return
    token = otel_context.attach(parent)
    try:
        yield
    finally:
        otel_context.detach(token)


def dead_lettered(topic: str, headers: Headers | None, error: BaseException) -> None:
    """Record in the record's trace that it went to ``<topic>.DLQ`` because of ``error``
    (never raises: the letter is written, a failing span must not make it written twice)."""
    with contextlib.suppress(Exception):
        span = inbound_span(topic, trace_headers(headers))
        record_error(span, error, result="dead_lettered")
        span.end()
