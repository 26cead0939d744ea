"""The tracing fast paths agree with OpenTelemetry's W3C propagator (issue 15, point 6).

:func:`~pipeline_state._tracing.carrier_of` formats ``traceparent`` and ``tracestate`` straight
from a span context, and :func:`~pipeline_state._tracing.continued` reads a lone version-00
``traceparent`` without the propagator: for any span context and any header, malformed ones
included, the result must be exactly the propagator's.
"""

from __future__ import annotations

import string

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.trace.span import TraceState

from pipeline_state import HandleResult
from pipeline_state._tracing import TraceContext, carrier_of, continued, for_publish, with_span_ids
from pipeline_state.ports import OutboxMessage

W3C = TraceContextTextMapPropagator()

_KEY_FIRST = string.ascii_lowercase
_KEY_REST = string.ascii_lowercase + string.digits + "_-*/"
_VALUE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in ",=")

trace_states = st.lists(
    st.tuples(
        st.builds(
            str.__add__, st.sampled_from(_KEY_FIRST), st.text(alphabet=_KEY_REST, min_size=0, max_size=12)
        ),
        st.text(alphabet=_VALUE, min_size=1, max_size=16),
    ),
    max_size=4,
    unique_by=lambda pair: pair[0],
).map(TraceState)

span_contexts = st.builds(
    SpanContext,
    trace_id=st.integers(1, 2**128 - 1),
    span_id=st.integers(1, 2**64 - 1),
    is_remote=st.booleans(),
    trace_flags=st.integers(0, 255).map(TraceFlags),
    trace_state=st.one_of(st.none(), trace_states),
)


def _injected(context: SpanContext) -> TraceContext:
    carrier: dict[str, str] = {}
    W3C.inject(carrier, context=trace.set_span_in_context(NonRecordingSpan(context)))
    return tuple(carrier.items())


def _view(context: Context | None) -> dict[str, object] | None:
    """A context's entries, each span as its type and span context (spans have no equality)."""
    if context is None:
        return None
    return {
        key: (type(value), value.get_span_context()) if isinstance(value, Span) else value
        for key, value in context.items()
    }


def _named(context: Context | None) -> SpanContext | None:
    """The span context a continued context names (``None``: it names none)."""
    if context is None:
        return None
    named = trace.get_current_span(context).get_span_context()
    return named if named.is_valid else None


@settings(max_examples=300, deadline=None)
@given(span_contexts)
def test_carrier_of_writes_what_the_w3c_propagator_injects(context: SpanContext) -> None:
    assert carrier_of(NonRecordingSpan(context)) == _injected(context)


@settings(max_examples=300, deadline=None)
@given(span_contexts)
def test_what_carrier_of_writes_is_continued_as_the_propagator_reads_it(context: SpanContext) -> None:
    carrier = carrier_of(NonRecordingSpan(context))
    expected = W3C.extract(dict(carrier))
    got = continued(carrier)
    assert _view(got) == _view(expected)
    named = _named(got)
    assert named is not None
    assert (named.trace_id, named.span_id, named.trace_flags) == (
        context.trace_id,
        context.span_id,
        context.trace_flags,
    )
    assert named.is_remote
    assert named.trace_state == (context.trace_state or TraceState())


def test_an_invalid_span_has_no_carrier() -> None:
    assert carrier_of(trace.INVALID_SPAN) == ()


_HEX = "0123456789abcdef"


def _hex(size: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=_HEX, min_size=size, max_size=size)


well_formed = st.builds(
    "{}-{}-{}-{}".format, st.sampled_from(["00", "00", "01", "cc", "ff"]), _hex(32), _hex(16), _hex(2)
)
zero_ids = st.builds(
    "00-{}-{}-{}".format,
    st.sampled_from(["0" * 32, "0af7651916cd43dd8448eb211c80319c"]),
    st.sampled_from(["0" * 16, "b7ad6b7169203331"]),
    _hex(2),
)


@st.composite
def damaged(draw: st.DrawFn) -> str:
    """A well-formed header with one change: a character replaced, inserted or removed,
    upper case, surrounding white space, or extra fields."""
    header = draw(well_formed)
    kind = draw(st.sampled_from(["replace", "insert", "delete", "upper", "space", "extra"]))
    at = draw(st.integers(0, len(header) - 1))
    char = draw(st.sampled_from("0f-gZ \t-"))
    if kind == "replace":
        return header[:at] + char + header[at + 1 :]
    if kind == "insert":
        return header[:at] + char + header[at:]
    if kind == "delete":
        return header[:at] + header[at + 1 :]
    if kind == "upper":
        return header.upper()
    if kind == "space":
        return draw(st.sampled_from([" ", "\t", ""])) + header + draw(st.sampled_from([" ", "\t", "  "]))
    return header + draw(st.sampled_from(["-", "-00", "-extra-fields", "x"]))


headers = st.one_of(well_formed, zero_ids, damaged(), st.text(max_size=60))


@settings(max_examples=500, deadline=None)
@given(headers, st.one_of(st.none(), st.sampled_from(["", "a=1", "a=1,b=2", "bad key=1", "a=1,a=2"])))
def test_continued_reads_any_header_as_the_w3c_propagator_does(
    traceparent: str, tracestate: str | None
) -> None:
    carrier: TraceContext = (("traceparent", traceparent),)
    if tracestate is not None:
        carrier += (("tracestate", tracestate),)
    expected = W3C.extract(dict(carrier))
    assert _view(continued(carrier)) == _view(expected)
    assert _view(continued(dict(carrier))) == _view(expected)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from([0, 1, 2]), min_size=1, max_size=8), st.lists(headers, min_size=3, max_size=3)
)
def test_continued_reads_a_header_again_as_it_read_it_the_first_time(
    order: list[int], choices: list[str]
) -> None:
    """The last header read directly is kept (the rows of one decision share it): reading
    headers in any order, repeats included, still gives what the propagator reads."""
    for index in order:
        carrier: TraceContext = (("traceparent", choices[index]),)
        assert _view(continued(carrier)) == _view(W3C.extract(dict(carrier)))


def test_continued_without_a_carrier_continues_the_current_trace() -> None:
    assert continued(None) is None
    assert continued(()) is None
    assert continued({}) is None
    assert _view(continued((("tracestate", "a=1"),))) == _view(W3C.extract({"tracestate": "a=1"})) == {}


def _fields_except(instance: OutboxMessage | HandleResult, name: str) -> dict[str, object]:
    return {f.name: getattr(instance, f.name) for f in attrs.fields(type(instance)) if f.name != name}


def test_with_span_ids_and_for_publish_keep_every_other_field() -> None:
    context = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, False, TraceFlags(1))
    span = NonRecordingSpan(context)
    message = OutboxMessage("e-1", "t.v1", "k", {"event_id": "e-1"})
    result = HandleResult("e-0", "b1", None, (message,), attempts=2, correlation_id="c", waiting="w")

    named = with_span_ids(span, result)
    assert named.span_ids == ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
    assert _fields_except(named, "span_ids") == _fields_except(result, "span_ids")
    assert with_span_ids(trace.INVALID_SPAN, result) is result

    sent = for_publish(message, span)
    assert sent.trace_context == (("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),)
    assert _fields_except(sent, "trace_context") == _fields_except(message, "trace_context")
    assert for_publish(sent, span) is sent  # already carries it: no copy
    assert for_publish(message, trace.INVALID_SPAN) is message
