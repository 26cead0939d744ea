"""Trace context in the Kafka adapter without a broker: record headers in and out, the
batched and one-by-one consumer paths, dead letters, and the ``OTEL_*`` rules of ``serve``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

import pytest
from intake_kit import LogConsumer, drain, new_consumer
from opentelemetry import trace
from opentelemetry.propagate import inject
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.trace import StatusCode
from pipeline_state_kafka.codec import encode_message
from pipeline_state_kafka.tracing import trace_headers
from pipeline_state_service import SettingsError
from pipeline_state_service.otel import requested_exporters, tracer_provider
from pipeline_state_service.serve import serve_main

from pipeline_state.ports import OutboxMessage
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from pipeline_state.testing import SpanCapture, span_capture

CLIENT = trace.get_tracer("tests.client")
PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def spans() -> Iterator[SpanCapture]:
    with span_capture().recording() as capture:
        yield capture


def test_kafka_record_carries_the_message_trace_context_and_reads_it_back() -> None:
    message = OutboxMessage("e-1", "t.v1", "k", {"event_id": "e-1"}, (("traceparent", PARENT),))
    record = encode_message(message)
    assert dict(record.headers)["traceparent"] == PARENT.encode()
    assert trace_headers(record.headers) == (("traceparent", PARENT),)
    assert trace_headers([("event_id", b"e"), ("tracestate", b"a=1")]) == (("tracestate", "a=1"),)
    assert trace_headers(None) == ()
    plain = encode_message(OutboxMessage("e-2", "t.v1", "k", {"event_id": "e-2"}))
    assert "traceparent" not in dict(plain.headers)


def _traced(env: HuleEduEnvelopes, source: LogConsumer, batch_id: str) -> int:
    """Append a registration of ``batch_id`` sent inside a client span; its span id."""
    with CLIENT.start_as_current_span(f"client {batch_id}") as client:
        carrier: dict[str, str] = {}
        inject(carrier)
    topic, envelope = env.register(batch_id, items=1)
    source.append(
        topic,
        json.dumps(envelope).encode(),
        key=batch_id.encode(),
        headers=tuple((k, v.encode()) for k, v in carrier.items()),
    )
    return client.get_span_context().span_id


@pytest.mark.parametrize("batched", [True, False])
async def test_kafka_consumer_continues_each_record_trace(spans: SpanCapture, batched: bool) -> None:
    stop = asyncio.Event()
    source = LogConsumer(stop)
    env = HuleEduEnvelopes()
    parents = {f"b{i}": _traced(env, source, f"b{i}") for i in range(3)}
    consumer, _, _ = new_consumer(source, batched=batched, partition_concurrency=1)
    await drain(consumer, source)
    handled = spans.named("process ")
    assert len(handled) == 3
    for span in handled:
        batch_id = dict(span.attributes or {})["pipeline_state.batch_id"]
        assert span.parent is not None
        assert span.parent.span_id == parents[str(batch_id)]


async def test_kafka_dead_lettered_record_gets_a_span_in_its_trace(spans: SpanCapture) -> None:
    stop = asyncio.Event()
    source = LogConsumer(stop)
    topic = HuleEduEnvelopes().register("b1")[0]
    source.append(topic, b"not json", key=b"b1", headers=(("traceparent", PARENT.encode()),))
    consumer, _, producer = new_consumer(source)
    await drain(consumer, source)
    assert len(producer.sent) == 1  # the dead letter
    letters = [
        s for s in spans.named(f"process {topic}") if s.attributes and "pipeline_state.result" in s.attributes
    ]
    assert len(letters) == 1
    letter = letters[0]
    assert dict(letter.attributes or {})["pipeline_state.result"] == "dead_lettered"
    assert letter.status.status_code is StatusCode.ERROR
    assert letter.context.trace_id == int(PARENT.split("-")[1], 16)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, ()),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, ("otlp",)),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, ("otlp",)),
        ({"OTEL_TRACES_EXPORTER": "console"}, ("console",)),
        ({"OTEL_TRACES_EXPORTER": "otlp, console"}, ("otlp", "console")),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, ()),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, ()),
    ],
)
def test_serve_turns_tracing_on_only_when_otel_variables_ask(
    env: dict[str, str], expected: tuple[str, ...]
) -> None:
    assert requested_exporters(env) == expected
    provider = tracer_provider(env)
    assert (provider is None) == (not expected)
    if provider is not None:
        provider.shutdown()


@pytest.mark.parametrize(
    "env",
    [
        {"OTEL_TRACES_EXPORTER": "zipkin"},
        {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
    ],
)
def test_serve_rejects_otel_settings_it_cannot_honour(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError, match="OTEL_"):
        requested_exporters(env)


class _Collector(BaseHTTPRequestHandler):
    received: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return None


def test_serve_otlp_exporter_sends_spans_to_the_configured_endpoint() -> None:
    """The provider ``serve`` builds exports OTLP/HTTP to ``OTEL_EXPORTER_OTLP_ENDPOINT``
    (a local HTTP server stands in for the collector and decodes the protobuf)."""
    _Collector.received = []
    server = HTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_SERVICE_NAME": "ps-test"}
        with pytest.MonkeyPatch.context() as patch:
            for name, value in env.items():
                patch.setenv(name, value)
            provider = tracer_provider(env)
        assert provider is not None
        provider.get_tracer("tests").start_span("exported").end()
        provider.shutdown()  # flushes the batch processor
    finally:
        server.shutdown()
        thread.join(5)
    assert _Collector.received
    request = ExportTraceServiceRequest.FromString(_Collector.received[0])
    resource = request.resource_spans[0]
    names = {a.key: a.value.string_value for a in resource.resource.attributes}
    assert names["service.name"] == "ps-test"
    assert [s.name for s in resource.scope_spans[0].spans] == ["exported"]


def test_serve_main_stops_with_status_2_when_otel_asks_for_what_it_cannot_do(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    args = argparse.Namespace(kafka="127.0.0.1:9", store="memory://", http=None, group_id="g", consumers=[])
    try:
        assert serve_main(args) == 2
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    assert "OTEL_TRACES_EXPORTER: unsupported exporter 'zipkin'" in capsys.readouterr().err
