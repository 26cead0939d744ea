"""Trace context in Kafka records: read on the way in, marked on dead letters.

The W3C ``traceparent`` (and ``tracestate``) headers of an inbound record name the trace its
unit of work continues (see :mod:`pipeline_state._tracing`); the outbox relay writes them on
every record it publishes (:func:`~pipeline_state_kafka.codec.encode_message`). A record the
consumer dead-letters gets a short span in its trace saying so.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from opentelemetry import context as otel_context

from pipeline_state._tracing import TraceContext, continued, inbound_span, record_error

from ._kafka import Headers

__all__ = ["TRACE_HEADERS", "attached", "dead_lettered", "trace_headers"]

TRACE_HEADERS = frozenset({"traceparent", "tracestate"})
"""The W3C trace-context header names."""


def trace_headers(headers: Headers | None) -> TraceContext:
    """The trace-context headers of a record as text pairs (empty when it has none)."""
    if not headers:
        return ()
    return tuple(
        (name, raw.decode("utf-8", "replace")) for name, raw in headers if name in TRACE_HEADERS and raw
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
