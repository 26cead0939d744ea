"""hostile W3C trace-context headers on inbound Kafka records.

Malformed, oversized, duplicated, non-UTF-8 and null ``traceparent``/``tracestate`` header
values must never stop a record from being handled, must never be dead-lettered for it,
and what the decision stamps on its outbox rows (``OutboxMessage.trace_context``) stays
bounded (``traceparent`` 55 characters, ``tracestate`` at most OpenTelemetry's 8192).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from intake_kit import LogConsumer, drain, new_consumer

from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from pipeline_state.testing import SpanCapture, span_capture

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
OTHER = "00-11111111111111111111111111111111-2222222222222222-01"
TRACE_ID = int(PARENT.split("-")[1], 16)
BIG_STATE = ",".join(f"k{i}={'v' * 200}" for i in range(5000)).encode()  # ~1 MB
MANY_STATE = ",".join(f"k{i}=v" for i in range(40)).encode()  # more than 32 members

CASES: dict[str, tuple[tuple[str, bytes | None], ...]] = {
    "non_utf8_traceparent": (("traceparent", b"\xff\xfe00-" + b"\x80" * 60),),
    "non_utf8_tracestate": (("traceparent", PARENT.encode()), ("tracestate", b"a=\xff\xfe")),
    "huge_traceparent": (("traceparent", PARENT.encode() + b"-" + b" " * 1_000_000),),
    "huge_tracestate": (("traceparent", PARENT.encode()), ("tracestate", BIG_STATE)),
    "many_members": (("traceparent", PARENT.encode()), ("tracestate", MANY_STATE)),
    "duplicated": (("traceparent", OTHER.encode()), ("traceparent", PARENT.encode())),
    "null_values": (("traceparent", None), ("tracestate", None)),
    "nul_and_controls": (("traceparent", PARENT.encode() + b"\x00\r\n"), ("tracestate", b"a=1\r\nb=2")),
    "upper_case_version_ff": (("traceparent", b"ff-" + PARENT[3:].encode()),),
    "state_without_parent": (("tracestate", b"a=1"),),
}


@pytest.fixture
def spans() -> Iterator[SpanCapture]:
    with span_capture().recording() as capture:
        yield capture


@pytest.mark.timeout(60)
@pytest.mark.parametrize("batched", [True, False])
def test_hostile_trace_headers_never_stop_a_record_and_stay_bounded(
    spans: SpanCapture, batched: bool
) -> None:
    env = HuleEduEnvelopes()
    stop = asyncio.Event()
    source = LogConsumer(stop)
    for name, headers in CASES.items():
        topic, envelope = env.register(name, items=1)
        source.append(topic, json.dumps(envelope).encode(), key=name.encode(), headers=headers)  # type: ignore[arg-type]
    consumer, service, producer = new_consumer(source, batched=batched)
    asyncio.run(drain(consumer, source))
    assert producer.sent == []  # nothing dead-lettered
    committed = sum(source.committed.values())
    assert committed == len(CASES)
    outbox = service.store.outbox_messages()  # type: ignore[attr-defined]
    by_batch = {m.key: m for m in outbox}
    assert set(CASES) <= set(by_batch)
    for name in CASES:
        context = dict(by_batch[name].trace_context)
        assert set(context) <= {"traceparent", "tracestate"}, name
        assert len(context.get("traceparent", "")) == 55, (name, context)
        assert len(context.get("tracestate", "")) <= 8192, (name, context)
    processed = {dict(s.attributes or {}).get("pipeline_state.batch_id"): s for s in spans.named("process ")}
    # A valid parent is continued, a bad one starts a new trace (never crashes).
    assert processed["non_utf8_tracestate"].context.trace_id == TRACE_ID
    assert processed["huge_tracestate"].context.trace_id == TRACE_ID
    assert processed["many_members"].context.trace_id == TRACE_ID
    for bad in ("non_utf8_traceparent", "huge_traceparent", "null_values", "nul_and_controls",
                "upper_case_version_ff", "state_without_parent"):  # fmt: skip
        assert processed[bad].parent is None, bad
