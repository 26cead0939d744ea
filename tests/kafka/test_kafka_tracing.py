"""One trace per run through a real broker: the client's request, the service's consume and
decide span, the relay's publish span, the worker that consumes the command, its outcome
consumed by the service again, the next command, the next worker, all in one trace."""

from __future__ import annotations

import itertools
import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka_harness import fast_settings, running, wait_status
from opentelemetry import trace
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, format_span_id, format_trace_id
from pipeline_state_kafka import ProducerLike
from pipeline_state_kafka.testing import Collected, Collector, LocalBroker, send_envelopes

from pipeline_state import BatchStatus
from pipeline_state.profiles.huleedu.events import OUTBOUND_TOPICS, Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from pipeline_state.testing import SpanCapture, span_capture

pytestmark = pytest.mark.kafka

WORKER = trace.get_tracer("tests.worker")


@pytest.fixture
def spans() -> Iterator[SpanCapture]:
    with span_capture().recording() as capture:
        yield capture


async def _send(
    producer: ProducerLike, prefix: str, delivery: tuple[str, dict[str, object]], headers: dict[str, str]
) -> None:
    topic, envelope = delivery
    data = envelope["data"]
    assert isinstance(data, dict)
    future = await producer.send(
        f"{prefix}{topic}",
        json.dumps(envelope).encode(),
        str(data["batch_id"]).encode(),
        headers=[(k, v.encode()) for k, v in headers.items()],
    )
    await future


async def _command(out: Collector, topic: str) -> Collected:
    await out.wait_for(lambda c: bool(c.on(topic)), within=30, what=topic)
    return out.on(topic)[0]


def _one(capture: SpanCapture, name: str) -> ReadableSpan:
    found = capture.named(name)
    assert len(found) == 1, sorted(s.name for s in capture.spans())
    return found[0]


def _parent(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


async def test_kafka_spans_of_a_run_form_one_trace_through_the_broker(
    broker: LocalBroker,
    prefix: str,
    producer: ProducerLike,
    tmp_path: Path,
    spans: SpanCapture,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="pipeline_state_kafka.consumer")
    env = HuleEduEnvelopes()
    ids = env.item_ids("b1", 2)
    corr = str(uuid.uuid4())
    settings = fast_settings(broker.bootstrap, prefix, store_url=f"sqlite+aiosqlite:///{tmp_path / 's.db'}")
    async with (
        running(settings) as runner,
        Collector(broker.bootstrap, OUTBOUND_TOPICS, topic_prefix=prefix) as out,
    ):
        await send_envelopes(
            producer, [env.register("b1", items=2), env.provisioned("b1", ids)], topic_prefix=prefix
        )
        await wait_status(runner, "b1", BatchStatus.READY_FOR_PIPELINE_EXECUTION)
        spans.exporter.clear()

        # A client asks for a pipeline inside a trace of its own.
        with WORKER.start_as_current_span("client asks", kind=SpanKind.PRODUCER) as client:
            headers: dict[str, str] = {}
            inject(headers)
        await _send(producer, prefix, env.request("b1", "ai_feedback", correlation_id=corr), headers)

        # The spellcheck worker consumes its command and continues the trace from its headers.
        spellcheck = await _command(out, Topic.SPELLCHECK.value)
        assert "traceparent" in spellcheck.headers
        with WORKER.start_as_current_span(
            "spellcheck worker", context=extract(spellcheck.headers), kind=SpanKind.CONSUMER
        ) as worker:
            reply: dict[str, str] = {}
            inject(reply)
        await _send(producer, prefix, env.outcome("b1", "spellcheck", corr, processed=ids), reply)

        nlp = await _command(out, Topic.NLP.value)
        with WORKER.start_as_current_span("nlp worker", context=extract(nlp.headers), kind=SpanKind.CONSUMER):
            pass
        await out.wait_for(lambda c: len(spans.named(f"publish {Topic.NLP.value}")) >= 1, within=10)

    trace_id = client.get_span_context().trace_id
    request = _one(spans, f"process {Topic.PIPELINE_REQUEST.value}")
    publish_spellcheck = _one(spans, f"publish {Topic.SPELLCHECK.value}")
    spellcheck_worker = _one(spans, "spellcheck worker")
    outcome = _one(spans, f"process {Topic.PHASE_OUTCOME.value}")
    publish_nlp = _one(spans, f"publish {Topic.NLP.value}")
    nlp_worker = _one(spans, "nlp worker")
    chain = [request, publish_spellcheck, spellcheck_worker, outcome, publish_nlp, nlp_worker]
    assert {s.context.trace_id for s in chain} == {trace_id}
    assert _parent(request) == client.get_span_context().span_id
    for parent, child in itertools.pairwise(chain):
        assert _parent(child) == parent.context.span_id, (parent.name, child.name)
    assert worker.get_span_context().span_id == spellcheck_worker.context.span_id

    decided = dict(request.attributes or {})
    assert decided["pipeline_state.result"] == "applied"
    assert decided["pipeline_state.batch_id"] == "b1"
    assert decided["pipeline_state.run_id"]
    assert "pipeline_state.trigger" in decided
    assert dict(outcome.attributes or {})["pipeline_state.run_id"] == decided["pipeline_state.run_id"]
    assert dict(publish_nlp.attributes or {})["messaging.message.id"] == nlp.event_id

    # The unit of work's log line names its span, though the span ended before it was written.
    (line,) = [r for r in caplog.records if r.getMessage() == f"handled {Topic.PIPELINE_REQUEST.value}"]
    assert getattr(line, "trace_id", None) == format_trace_id(trace_id)
    assert getattr(line, "span_id", None) == format_span_id(request.context.span_id)
    assert getattr(line, "correlation_id", None) == corr
