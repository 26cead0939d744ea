"""OpenTelemetry traces of the service: one span per inbound message, one per relay publish.

The library only uses ``opentelemetry-api``. Until an application installs an SDK tracer
provider every tracer is a no-op: a span is a non-recording placeholder and no attribute is
ever computed (each helper checks :meth:`~opentelemetry.trace.Span.is_recording` first, and
a publish span, whose few attributes are given when it starts, first checks for an SDK).

The trace context travels the W3C way (``traceparent`` and ``tracestate``, written and read
by opentelemetry's :class:`TraceContextTextMapPropagator`). The service stamps it on every
outbox message a decision emits (:attr:`~pipeline_state.ports.OutboxMessage.trace_context`,
kept on the outbox row), the relay's publish span continues it and hands its own context to
the transport, so the consumer of a command continues the trace of the decision that emitted
it, even when the row is published after a restart or a failed attempt.

With an SDK every message costs about two or three spans (its own, the publishes of what it
emitted), so the helpers keep the work around each span small: the ``traceparent`` header
is formatted straight from the span context, and read back without the propagator's
generic machinery when it is the usual version-00 header (anything else still goes
through :class:`TraceContextTextMapPropagator`, whose output and verdicts the fast paths
reproduce exactly); a publish span gets all its attributes when it starts (one validation
by the SDK); making a span current is one context attach, nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from contextvars import Token
from types import TracebackType
from typing import TYPE_CHECKING, cast

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from ._model import evolve

if TYPE_CHECKING:
    from ._decide.journal import Move
    from ._service import HandleResult
    from .ports import OutboxMessage

__all__ = [
    "TRACER_NAME",
    "TraceContext",
    "carrier_of",
    "continued",
    "current_trace_context",
    "entered",
    "finish",
    "for_publish",
    "handled",
    "handling",
    "inbound_span",
    "publish_span",
    "record_error",
    "record_published",
    "record_result",
    "result_attributes",
    "tracer",
    "with_span_ids",
]

TRACER_NAME = "pipeline_state"
"""The instrumentation scope of the library's spans."""

TraceContext = tuple[tuple[str, str], ...]
"""W3C trace-context headers as ``(name, value)`` pairs (``traceparent``, maybe ``tracestate``);
empty when there is no valid span to continue."""

_PROPAGATOR = TraceContextTextMapPropagator()
_NO_OP = trace.NoOpTracer()
_NONE: TraceContext = ()


def tracer() -> trace.Tracer:
    """The library's tracer: the installed provider's, or a no-op one while none is."""
    return _sdk_tracer() or _NO_OP


_TRACEPARENT = "traceparent"
_TRACESTATE = "tracestate"
_VERSION_00 = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
"""A version-00 ``traceparent`` exactly as written (the common case, read without the propagator)."""


def continued(carrier: Mapping[str, str] | TraceContext | None) -> Context | None:
    """The context that continues the trace named by ``carrier`` (``None``: continue the
    current one). A malformed ``traceparent`` is ignored, as the W3C rules say.

    A lone version-00 ``traceparent`` (what this library writes) is read directly, and the
    last one read is kept: the outbox rows of one decision carry the same one and the relay
    publishes them one after the other. Any other carrier goes through
    :class:`TraceContextTextMapPropagator`, and the result is the same either way."""
    global _LAST_READ
    if not carrier:
        return None
    if type(carrier) is tuple and len(carrier) == 1 and carrier[0][0] == _TRACEPARENT:
        traceparent = carrier[0][1]
        last, parent = _LAST_READ
        if traceparent != last:
            parent = _parent(traceparent)
            if parent is None:
                return _PROPAGATOR.extract(dict(carrier))
            _LAST_READ = (traceparent, parent)
        return parent
    return _PROPAGATOR.extract(carrier if isinstance(carrier, Mapping) else dict(carrier))


_LAST_READ: tuple[str | None, Context | None] = (None, None)
"""The last ``traceparent`` :func:`continued` read directly, and the context it read (a
context is never changed in place: sharing it is safe)."""


def _parent(traceparent: str) -> Context | None:
    """What the W3C propagator extracts from a well-formed version-00 ``traceparent`` (with
    no ``tracestate``), or ``None`` for anything else (the propagator then decides)."""
    match = _VERSION_00.fullmatch(traceparent)
    if match is None:
        return None
    trace_id, span_id = int(match[1], 16), int(match[2], 16)
    if not (trace_id and span_id):  # all-zero ids: invalid, the propagator says so
        return None
    parent = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(int(match[3], 16)))
    return trace.set_span_in_context(NonRecordingSpan(parent), Context())


_FLAGS = tuple(f"{flags:02x}" for flags in range(256))
"""The ``traceparent`` text of each trace-flags byte."""


def _hex_ids(context: SpanContext) -> tuple[str, str, str] | None:
    """The trace id, span id and flags of a valid ``context`` as ``traceparent`` writes them
    (lowercase hex, 32, 16 and 2 digits), ``None`` for an invalid one.

    A span context is a 6-tuple (trace id, span id, remote, flags, state, valid): unpacked
    once rather than read through its properties, and the ids turned to hex by ``bytes.hex``
    (a fraction of what a width-padded ``format`` of a 128-bit integer costs)."""
    trace_id, span_id, _remote, flags, _state, valid = context
    if not valid:
        return None
    return trace_id.to_bytes(16, "big").hex(), span_id.to_bytes(8, "big").hex(), _FLAGS[flags]


def carrier_of(span: Span) -> TraceContext:
    """The trace-context headers that make a receiver continue ``span``'s trace: what
    :class:`TraceContextTextMapPropagator` injects for it, formatted directly."""
    context = span.get_span_context()
    ids = _hex_ids(context)
    if ids is None:
        return _NONE
    traceparent = f"00-{ids[0]}-{ids[1]}-{ids[2]}"
    if context.trace_state:
        return ((_TRACEPARENT, traceparent), (_TRACESTATE, context.trace_state.to_header()))
    return ((_TRACEPARENT, traceparent),)


def current_trace_context() -> TraceContext:
    """:func:`carrier_of` the current span (what the service stamps on outbox messages)."""
    return carrier_of(trace.get_current_span())


_UNKNOWN = object()
_ENVIRONMENT_READ = False
_RESOLVED: tuple[object, trace.Tracer | None] = (None, None)
"""The provider the library's tracer was last taken from, and that tracer."""


def _sdk_tracer() -> trace.Tracer | None:
    """The installed tracer provider's tracer for the library, or ``None`` when no provider
    is installed (the API's proxy is still the global one): a span could then only pass a
    trace through, never record one.

    ``trace.get_tracer_provider()`` reads the environment on every call until a provider is
    set (it may name one in ``OTEL_PYTHON_TRACER_PROVIDER``), which costs microseconds per
    message; so it is asked once, and afterwards the API's global is looked at directly (a
    provider set later in code is seen at once). The tracer is taken from the provider once
    and kept while that provider is installed (no proxy lookup per span)."""
    global _ENVIRONMENT_READ, _RESOLVED
    if not _ENVIRONMENT_READ:
        trace.get_tracer_provider()  # installs a provider the environment names, if any
        _ENVIRONMENT_READ = True
    provider = getattr(trace, "_TRACER_PROVIDER", _UNKNOWN)
    if provider is _UNKNOWN:  # an API without that global: ask it, the slow way
        provider = trace.get_tracer_provider()
        if type(provider) is trace.ProxyTracerProvider:
            return None
    elif provider is None:
        return None
    known, tracer = _RESOLVED
    if provider is known and tracer is not None:
        return tracer
    tracer = cast(trace.TracerProvider, provider).get_tracer(TRACER_NAME)
    _RESOLVED = (provider, tracer)
    return tracer


def inbound_span(topic: str, carrier: Mapping[str, str] | TraceContext | None = None) -> Span:
    """A started consumer span for one inbound message of ``topic`` (end it after the unit of
    work committed). It continues ``carrier``'s trace, or the current one without it.

    Without an SDK and with no trace to continue this is the invalid placeholder span,
    returned without asking the tracer (what it would return too): the common case of a
    service that does not trace costs one type check and one context lookup."""
    sdk = _sdk_tracer()
    if sdk is None:
        if not carrier and not trace.get_current_span().get_span_context().is_valid:
            return trace.INVALID_SPAN
        sdk = _NO_OP  # passes the trace it continues on, records nothing
    return sdk.start_span(f"process {topic}", context=continued(carrier), kind=SpanKind.CONSUMER)


class entered:
    """Make ``span`` current for the body without ending it (a placeholder span that
    continues no trace is left out: there is nothing to propagate).

    Only the context is switched: an exception from the body is not recorded here, the
    caller ends the span with the outcome (:func:`finish`)."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: Span) -> None:
        self._span = span
        self._token: Token[Context] | None = None

    def __enter__(self) -> Span:
        span = self._span
        if span.get_span_context().is_valid:
            self._token = otel_context.attach(trace.set_span_in_context(span))
        return span

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._token is not None:
            otel_context.detach(self._token)


class handling(entered):
    """:func:`inbound_span` made current for the body and ended after it; an exception that
    escapes is recorded on the span (status ``ERROR``) and propagates.

    A class rather than a generator: without an SDK (and no trace to continue) it costs a
    placeholder span and one validity check, nothing is attached to the context.
    """

    __slots__ = ()

    def __init__(self, topic: str, carrier: Mapping[str, str] | TraceContext | None = None) -> None:
        super().__init__(inbound_span(topic, carrier))

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        super().__exit__(kind, error, tb)
        if error is not None:
            record_error(self._span, error)
        self._span.end()


def handled(span: Span, topic: str, result: HandleResult) -> HandleResult:
    """:func:`record_result`, then return ``result`` with the span's ids (:func:`with_span_ids`)."""
    record_result(span, topic, result)
    return with_span_ids(span, result)


def with_span_ids(span: Span, result: HandleResult) -> HandleResult:
    """``result`` carrying ``span``'s trace and span ids (``HandleResult.span_ids``), so what
    is logged after the span ended still names it; ``result`` itself without a valid span."""
    ids = _hex_ids(span.get_span_context())
    if ids is None:
        return result
    return evolve(result, span_ids=ids[:2])


def finish(span: Span, topic: str, outcome: HandleResult | BaseException | None) -> None:
    """End a span started with :func:`inbound_span` with what handling its message did."""
    if isinstance(outcome, BaseException):
        record_error(span, outcome)
    elif outcome is not None:
        record_result(span, topic, outcome)
    span.end()


def for_publish(message: OutboxMessage, span: Span) -> OutboxMessage:
    """``message`` carrying ``span``'s trace context, for the transport to send along."""
    context = carrier_of(span)
    if context == message.trace_context:
        return message
    return evolve(message, trace_context=context)


def publish_span(message: OutboxMessage, attempt: int | None = None) -> Span:
    """A started producer span for the relay's publish of ``message``, in the trace of the
    decision that emitted it (its stored :attr:`~pipeline_state.ports.OutboxMessage.trace_context`).
    A message that carries no trace, without an SDK, gets the invalid placeholder span.

    Its attributes are given when it starts (the SDK checks them once): the destination,
    the message id and, with ``attempt``, which publish attempt this is."""
    sdk = _sdk_tracer()
    if sdk is None:  # without an SDK the span only passes the trace on: nothing to record
        if not message.trace_context:
            return trace.INVALID_SPAN
        return _NO_OP.start_span(
            f"publish {message.topic}", context=continued(message.trace_context) or Context()
        )
    attributes: dict[str, AttributeValue] = {
        "messaging.operation.type": "send",
        "messaging.destination.name": message.topic,
        "messaging.message.id": message.event_id,
    }
    if attempt is not None:
        attributes["pipeline_state.publish.attempt"] = attempt
    return sdk.start_span(
        f"publish {message.topic}",
        context=continued(message.trace_context) or Context(),
        kind=SpanKind.PRODUCER,
        attributes=attributes,
    )


def record_published(span: Span, error: BaseException | None, attempts: int | None = None) -> None:
    """End a publish span with the transport's verdict (``error`` ``None``: acknowledged);
    ``attempts``: the attempt number, when :func:`publish_span` was not given it."""
    if span.is_recording():
        if attempts is not None:
            span.set_attribute("pipeline_state.publish.attempt", attempts)
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
    span.end()


def record_result(span: Span, topic: str, result: HandleResult) -> None:
    """Set what handling one message did on its span (nothing is built when not recording)."""
    if span.is_recording():
        span.set_attributes(result_attributes(topic, result))


def record_error(span: Span, error: BaseException, *, result: str | None = None) -> None:
    """Mark ``span`` failed by ``error``; ``result`` (``dead_lettered``, say) when settled."""
    if not span.is_recording():
        return
    span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
    if result is not None:
        span.set_attributes({"pipeline_state.result": result, "pipeline_state.reason": type(error).__name__})


def result_attributes(topic: str, result: HandleResult) -> dict[str, AttributeValue]:
    """The span attributes of one handled message: what issue 15 asks for (batch id, run id,
    topic, trigger, source and destination states, result) and no more than a reader of the
    span needs besides: the message id, the reason of a result that has one, how many
    messages it emitted and every move the decision made.

    ``pipeline_state.result`` is ``applied``, ``duplicate``, ``ignored``, ``denied`` or
    ``deferred``; ``pipeline_state.reason`` says why (the ignored or denial reason, what a
    deferred fact waits for). ``trigger``, ``source_state`` and ``dest_state`` are those of
    the decision's first move; ``pipeline_state.moves`` lists every move. Each attribute
    costs the SDK a validation (about a microsecond), so none is set twice or set empty.
    """
    kind, _, reason = result.label.partition(":")
    attributes: dict[str, AttributeValue] = {
        "messaging.destination.name": topic,
        "messaging.message.id": result.event_id,
        "pipeline_state.batch_id": result.batch_id,
        "pipeline_state.result": kind,
        "pipeline_state.emitted": len(result.all_messages),
    }
    if reason:
        attributes["pipeline_state.reason"] = reason
    decision = result.decision
    if decision is None:
        return attributes
    if decision.run_id is not None:
        attributes["pipeline_state.run_id"] = decision.run_id
    moves = decision.moves
    if moves:
        first = moves[0]
        attributes["pipeline_state.trigger"] = first.trigger
        attributes["pipeline_state.source_state"] = first.source
        attributes["pipeline_state.dest_state"] = first.dest
        attributes["pipeline_state.moves"] = _moves(moves)
    return attributes


def _moves(moves: Sequence[Move]) -> list[str]:
    """``entity name: source -> dest (trigger)`` per move (``-``: a creation's empty source)."""
    return [f"{m.entity} {m.name}: {m.source or '-'} -> {m.dest} ({m.trigger})" for m in moves]
