"""Prometheus label cardinality under hostile input.

Every hostile record below carries a fresh attacker-chosen string (garbage JSON, unknown
pipelines and phases, bogus event types, odd reasons). The consumer's metrics must keep a
bounded, input-independent set of series: no attacker string becomes a label value.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from intake_kit import LogConsumer, MemoryProducer
from pipeline_state_kafka import (
    ConsumerSettings,
    DeadLetterWriter,
    InboundConsumer,
    service_batch_handler,
    service_handler,
)
from pipeline_state_kafka.metrics import ServiceMetrics
from prometheus_client.parser import text_string_to_metric_families

from pipeline_state import InMemoryStore, PipelineService
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

ENV = HuleEduEnvelopes()
MARK = "zzattack"


def _hostile(source: LogConsumer, rounds: int) -> None:
    register_topic, _ = ENV.register("x", items=1)
    for i in range(rounds):
        tag = f"{MARK}{i}"
        source.append(register_topic, f'{{"{tag}": \x1b'.encode(), key=b"k")  # invalid JSON
        topic, envelope = ENV.register(f"b-{tag}", items=1)
        envelope["event_type"] = f"evil.{tag}"
        envelope["data"]["course_code"] = {"nested": tag}
        source.append(topic, json.dumps(envelope).encode(), key=b"k")  # schema violation
        topic, envelope = ENV.request(f"b-{tag}", f"pipe-{tag}")
        source.append(topic, json.dumps(envelope).encode(), key=b"k")  # unknown batch / pipeline
        topic, envelope = ENV.outcome(f"b-{tag}", f"phase-{tag}", str(uuid.uuid4()), processed=[f"e-{tag}"])
        source.append(topic, json.dumps(envelope).encode(), key=b"k")  # unknown phase
        topic, envelope = ENV.outcome(f"b-{tag}", "spellcheck", str(uuid.uuid4()), processed=[f"e-{tag}"])
        source.append(topic, json.dumps(envelope).encode(), key=b"k")  # waits for its batch
    source.append("huleedu.unknown.topic.v1", b"{}", key=b"k")  # a topic it does not know


async def _run(rounds: int, batched: bool) -> tuple[str, int]:
    stop = asyncio.Event()
    source = LogConsumer(stop)
    _hostile(source, rounds)
    service = PipelineService(InMemoryStore())
    producer = MemoryProducer()
    metrics = ServiceMetrics()
    consumer = InboundConsumer(
        ConsumerSettings("127.0.0.1:1", retry_base_seconds=0.001, retry_max_seconds=0.002),
        service_handler(service),
        DeadLetterWriter(producer, group_id="units"),
        batch_handler=service_batch_handler(service) if batched else None,
        consumer_factory=lambda _settings: source,
        metrics=metrics,
    )
    await asyncio.wait_for(consumer.run(stop), timeout=30)
    text = (await metrics.exposition()).decode()
    series = sum(
        1
        for family in text_string_to_metric_families(text)
        if family.name in ("pipeline_state_messages", "pipeline_state_dead_lettered")
        for sample in family.samples
        if sample.name.endswith("_total")
    )
    return text, series


@pytest.mark.timeout(60)
@pytest.mark.parametrize("batched", [True, False])
def test_hostile_records_add_no_label_values(batched: bool) -> None:
    small_text, small = asyncio.run(_run(3, batched))
    big_text, big = asyncio.run(_run(30, batched))
    assert MARK not in big_text
    assert "\x1b" not in big_text
    assert "pipe-" not in big_text
    assert "phase-" not in big_text
    assert "evil." not in big_text
    assert big == small, (small_text, big_text)  # series do not grow with hostile input
    assert big <= 20
