"""Capturing the library's spans in memory, for tests and the benchmark.

OpenTelemetry lets a process install its global tracer provider once. :func:`span_capture`
installs an SDK provider with an in-memory exporter the first time it is called (or joins a
provider installed before, when that is an SDK one) and hands back the process-wide
:class:`SpanCapture`. Spans are only sampled inside :meth:`SpanCapture.recording`; outside
it the provider drops every span, so code under other tests sees non-recording spans, as
without an SDK (only their trace ids are real).

Needs ``opentelemetry-sdk`` (the ``otel`` extra).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

__all__ = ["SpanCapture", "span_capture"]


class _Switch(Sampler):
    """Samples every span while on, none while off."""

    def __init__(self) -> None:
        self.on = False

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        decision = Decision.RECORD_AND_SAMPLE if self.on else Decision.DROP
        return SamplingResult(decision, attributes if self.on else None, trace_state)

    def get_description(self) -> str:
        return "pipeline_state.testing.spans switch"


class SpanCapture:
    """The in-memory exporter of the process and the switch that turns sampling on."""

    def __init__(self, exporter: InMemorySpanExporter, switch: _Switch | None) -> None:
        self.exporter = exporter
        self._switch = switch

    def sample(self, on: bool = True) -> None:
        """Sample every span from now on (``on``), or none; see :meth:`recording`."""
        if self._switch is not None:
            self._switch.on = on

    @contextlib.contextmanager
    def recording(self) -> Iterator[SpanCapture]:
        """Record and keep every span started in the body (earlier ones are cleared)."""
        self.exporter.clear()
        self.sample(True)
        try:
            yield self
        finally:
            self.sample(False)

    def spans(self) -> list[ReadableSpan]:
        """The finished spans recorded so far, in the order they ended."""
        return list(self.exporter.get_finished_spans())

    def named(self, prefix: str) -> list[ReadableSpan]:
        """The finished spans whose name starts with ``prefix``."""
        return [s for s in self.spans() if s.name.startswith(prefix)]


_CAPTURE: SpanCapture | None = None


def span_capture() -> SpanCapture:
    """The process-wide :class:`SpanCapture` (installs the SDK provider on first use)."""
    global _CAPTURE
    if _CAPTURE is not None:
        return _CAPTURE
    exporter = InMemorySpanExporter()
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):  # someone installed an SDK already: listen to it
        current.add_span_processor(SimpleSpanProcessor(exporter))
        _CAPTURE = SpanCapture(exporter, None)
        return _CAPTURE
    switch = _Switch()
    provider = TracerProvider(sampler=switch)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    if trace.get_tracer_provider() is not provider:
        raise RuntimeError("a tracer provider that is not the SDK's was installed before: no capture")
    _CAPTURE = SpanCapture(exporter, switch)
    return _CAPTURE
