"""OpenTelemetry spans of the service and the relay (in memory): one span per inbound message
with what it did, outbox messages that continue it, one publish span per relay attempt."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.propagate import inject
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from pipeline_state import HandleResult, InboundMessage, InMemoryRuntime
from pipeline_state._tracing import continued
from pipeline_state.errors import InvalidMessageError
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from pipeline_state.testing import SpanCapture, span_capture

ROOT = Path(__file__).resolve().parents[2]
CLIENT = trace.get_tracer("tests.client")


@pytest.fixture
def spans() -> Iterator[SpanCapture]:
    with span_capture().recording() as capture:
        yield capture


def _carrier() -> dict[str, str]:
    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier


def _parent_id(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def _only(capture: SpanCapture, name: str) -> ReadableSpan:
    found = capture.named(name)
    assert len(found) == 1, [s.name for s in capture.spans()]
    return found[0]


async def _ready(rt: InMemoryRuntime, env: HuleEduEnvelopes, batch_id: str = "b1") -> list[str]:
    ids = env.item_ids(batch_id, 2)
    await rt.deliver(*env.register(batch_id, items=2))
    await rt.deliver(*env.provisioned(batch_id, ids))
    return ids


async def test_a_request_span_continues_the_caller_and_its_commands_continue_it(
    spans: SpanCapture,
) -> None:
    rt, env = InMemoryRuntime(), HuleEduEnvelopes()
    await _ready(rt, env)
    topic, request = env.request("b1", "ai_feedback")
    with CLIENT.start_as_current_span("client") as client:
        carrier = _carrier()
    result = await rt.service.handle_message(topic, request, trace=carrier)
    await rt.relay.drain()

    handled = _only(spans, f"process {topic}")
    assert handled.kind is SpanKind.CONSUMER
    assert handled.context.trace_id == client.get_span_context().trace_id
    assert _parent_id(handled) == client.get_span_context().span_id
    attributes = dict(handled.attributes or {})
    state = await rt.service.get_batch("b1")
    assert state.active_run is not None
    assert attributes["pipeline_state.result"] == "applied"
    assert attributes["pipeline_state.batch_id"] == "b1"
    assert attributes["pipeline_state.run_id"] == state.active_run.run_id == result.decision.run_id  # type: ignore[union-attr]
    assert attributes["messaging.destination.name"] == topic
    assert attributes["messaging.message.id"] == request["event_id"]
    first = result.decision.moves[0]  # type: ignore[union-attr]
    assert attributes["pipeline_state.trigger"] == first.trigger
    assert attributes["pipeline_state.source_state"] == first.source
    assert attributes["pipeline_state.dest_state"] == first.dest
    assert len(attributes["pipeline_state.moves"]) == len(result.decision.moves)  # type: ignore[arg-type, union-attr]
    assert attributes["pipeline_state.emitted"] == len(result.messages) > 0

    # Every outbox message the decision wrote names the handling span; the relay's publish
    # span is its child and the published message names the publish span.
    for message in result.messages:
        stored = continued(message.trace_context)
        assert stored is not None
        assert trace.get_current_span(stored).get_span_context().span_id == handled.context.span_id
    published = rt.bus.messages(Topic.SPELLCHECK.value)
    assert len(published) == 1
    publish = _only(spans, f"publish {Topic.SPELLCHECK.value}")
    assert publish.kind is SpanKind.PRODUCER
    assert _parent_id(publish) == handled.context.span_id
    assert publish.context.trace_id == client.get_span_context().trace_id
    received = trace.get_current_span(continued(published[0].trace_context)).get_span_context()
    assert (received.trace_id, received.span_id) == (publish.context.trace_id, publish.context.span_id)


@pytest.mark.parametrize(
    ("send", "result", "reason"),
    [
        ("again", "duplicate", None),
        ("provisioned_again", "ignored", "unexpected:provision_guest in ready_for_pipeline_execution"),
        ("unknown_pipeline", "denied", "unknown_pipeline"),
        ("early_outcome", "deferred", "batch_registration"),
    ],
)
async def test_the_span_names_the_result_and_its_reason(
    spans: SpanCapture, send: str, result: str, reason: str | None
) -> None:
    rt, env = InMemoryRuntime(), HuleEduEnvelopes()
    ids = await _ready(rt, env)
    delivery = {
        "again": env.provisioned("b1", ids, event_id=str(uuid.uuid4())),
        "provisioned_again": env.provisioned("b1", ids),
        "unknown_pipeline": env.request("b1", "no_such_pipeline"),
        "early_outcome": env.outcome("b2", "spellcheck", str(uuid.uuid4())),
    }[send]
    await rt.service.handle_message(*delivery)
    if send == "again":
        await rt.service.handle_message(*delivery)
    attributes = dict(spans.named(f"process {delivery[0]}")[-1].attributes or {})
    assert attributes["pipeline_state.result"] == result
    assert attributes.get("pipeline_state.reason") == reason


async def test_handle_many_gives_each_message_its_own_span_and_context(spans: SpanCapture) -> None:
    rt, env = InMemoryRuntime(), HuleEduEnvelopes()
    await _ready(rt, env, "b1")
    await _ready(rt, env, "b2")
    requests: list[InboundMessage] = [
        env.request("b1", "ai_feedback"),
        env.request("b2", "ai_feedback"),
        ("bogus.topic", b"{}"),
    ]
    parents = []
    for _ in requests:
        with CLIENT.start_as_current_span("client") as client:
            parents.append((client.get_span_context(), _carrier()))
    spans.exporter.clear()
    results = await rt.service.handle_many(requests, traces=[c for _, c in parents])

    assert isinstance(results[2], InvalidMessageError)
    handled = [s for s in spans.spans() if s.name.startswith("process ")]
    assert len(handled) == 3
    by_parent = {_parent_id(s): s for s in handled}
    for (parent, _), result in zip(parents, results, strict=True):
        span = by_parent[parent.span_id]
        assert span.context.trace_id == parent.trace_id
        if not isinstance(result, HandleResult):
            assert span.status.status_code is StatusCode.ERROR
            assert any(e.name == "exception" for e in span.events)
            continue
        assert dict(span.attributes or {})["pipeline_state.batch_id"] == result.batch_id
        for message in result.messages:
            named = trace.get_current_span(continued(message.trace_context)).get_span_context()
            assert named.span_id == span.context.span_id


async def test_a_message_that_breaks_the_contract_ends_its_span_in_error(spans: SpanCapture) -> None:
    rt = InMemoryRuntime()
    with pytest.raises(InvalidMessageError):
        await rt.service.handle_message(Topic.PIPELINE_REQUEST.value, b"not json")
    span = _only(spans, f"process {Topic.PIPELINE_REQUEST.value}")
    assert span.status.status_code is StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]


def test_without_an_sdk_nothing_is_recorded_and_a_caller_trace_passes_through() -> None:
    """A process with no tracer provider: spans are placeholders, no attribute is built, the
    outbox carries no context of its own (only an inbound one, unchanged)."""
    script = textwrap.dedent(
        """
        import asyncio, json
        import pipeline_state._tracing as tracing
        from opentelemetry import trace
        from pipeline_state import InMemoryRuntime
        from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

        def refuse(*args):
            raise AssertionError("attributes built without an SDK")

        tracing.result_attributes = refuse

        async def main():
            rt, env = InMemoryRuntime(), HuleEduEnvelopes()
            ids = env.item_ids("b1", 2)
            await rt.deliver(*env.register("b1", items=2))
            await rt.deliver(*env.provisioned("b1", ids))
            plain = await rt.service.handle_message(*env.request("b1", "ai_feedback"))
            await rt.deliver(*env.register("b2", items=2))
            await rt.deliver(*env.provisioned("b2", env.item_ids("b2", 2)))
            parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            passed = await rt.service.handle_message(
                *env.request("b2", "ai_feedback"), trace={"traceparent": parent}
            )
            print(json.dumps({
                "recording": trace.get_tracer("x").start_span("probe").is_recording(),
                "plain": [list(m.trace_context) for m in plain.messages],
                "passed": sorted({dict(m.trace_context)["traceparent"] for m in passed.messages}),
            }))

        asyncio.run(main())
        """
    )
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'adapters'}"}
    env = {k: v for k, v in env.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["recording"] is False
    assert out["plain"]
    assert all(context == [] for context in out["plain"])
    assert out["passed"] == ["00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"]


async def test_a_message_that_never_applies_in_handle_many_is_recorded_once_on_its_span(
    spans: SpanCapture,
) -> None:
    """Making a span current records nothing: the error is recorded once, when the span ends
    with it (not also by the context switch around the decision)."""
    rt, env = InMemoryRuntime(), HuleEduEnvelopes()
    ghost = env.outcome("ghost", "astrology", str(uuid.uuid4()))  # unknown batch and phase
    results = await rt.service.handle_many([ghost, env.register("b1", items=2)])

    assert type(results[0]).__name__ == "BatchNotFoundError"
    assert isinstance(results[1], HandleResult)
    failed = _only(spans, f"process {ghost[0]}")
    assert failed.status.status_code is StatusCode.ERROR
    assert [e.name for e in failed.events] == ["exception"]
    registered = _only(spans, f"process {Topic.BATCH_REGISTER.value}")
    assert registered.status.status_code is StatusCode.UNSET
    assert not registered.events


async def test_a_publish_span_has_its_attributes_from_the_start(spans: SpanCapture) -> None:
    rt, env = InMemoryRuntime(), HuleEduEnvelopes()
    result = await rt.service.handle_message(*env.register("b1", items=2))
    await rt.relay.drain()
    (message,) = result.messages
    publish = _only(spans, f"publish {message.topic}")
    assert dict(publish.attributes or {}) == {
        "messaging.operation.type": "send",
        "messaging.destination.name": message.topic,
        "messaging.message.id": message.event_id,
        "pipeline_state.publish.attempt": 1,
    }
    assert publish.status.status_code is StatusCode.UNSET


def test_the_library_traces_with_the_provider_installed_when_it_starts_a_span() -> None:
    """No provider: a no-op tracer and placeholder spans. Once an SDK provider is installed,
    that provider's tracer, taken once and reused (no proxy between it and each span)."""
    script = textwrap.dedent(
        """
        import json
        import pipeline_state._tracing as tracing
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        before = tracing.tracer()
        placeholder = tracing.inbound_span("t")
        provider = TracerProvider()
        exporter = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        after = tracing.tracer()
        span = tracing.inbound_span("t")
        span.end()
        print(json.dumps({
            "before": type(before).__name__,
            "placeholder": placeholder is trace.INVALID_SPAN,
            "after": type(after).__module__,
            "reused": tracing.tracer() is after,
            "recorded": [s.name for s in exporter.get_finished_spans()],
        }))
        """
    )
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'adapters'}"}
    env = {k: v for k, v in env.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out == {
        "before": "NoOpTracer",
        "placeholder": True,
        "after": "opentelemetry.sdk.trace",
        "reused": True,
        "recorded": ["process t"],
    }


async def test_a_process_span_carries_the_asked_for_attributes_and_no_others(spans: SpanCapture) -> None:
    """Issue 15's attributes (batch and run ids, topic, trigger, source and destination
    states, result) and what a reader needs besides (message id, emitted count, every
    move): each attribute is a validation by the SDK, so nothing else rides along (the
    correlation id is on the unit of work's log line, with the span's ids)."""
    rt, env = InMemoryRuntime(), HuleEduEnvelopes()
    await _ready(rt, env)
    await rt.service.handle_message(*env.request("b1", "ai_feedback"))
    handled = _only(spans, f"process {Topic.PIPELINE_REQUEST.value}")
    assert set(handled.attributes or {}) == {
        "messaging.destination.name",
        "messaging.message.id",
        "pipeline_state.batch_id",
        "pipeline_state.run_id",
        "pipeline_state.result",
        "pipeline_state.trigger",
        "pipeline_state.source_state",
        "pipeline_state.dest_state",
        "pipeline_state.moves",
        "pipeline_state.emitted",
    }
