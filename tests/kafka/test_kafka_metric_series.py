"""Found by an attack (held) on Prometheus label cardinality in ``serve`` (real broker, in
process): 1,200 hostile records with distinct bytes, event types, pipeline and phase names,
headers and keys create no new metric series: ``topic``, ``result`` and ``reason`` take
only fixed values, and the completion-latency bookkeeping stays bounded.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from kafka_harness import fast_settings, running, wait_until
from pipeline_state_kafka import ProducerLike
from pipeline_state_kafka.testing import LocalBroker
from prometheus_client.parser import text_string_to_metric_families

from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

pytestmark = pytest.mark.kafka

N = 1200


def _records(env: HuleEduEnvelopes) -> list[tuple[str, bytes, bytes, list[tuple[str, bytes]]]]:
    out: list[tuple[str, bytes, bytes, list[tuple[str, bytes]]]] = []
    for i in range(N):
        kind = i % 4
        key = f"evil-key-{i}-{uuid.uuid4().hex[:6]}".encode()
        headers = [(f"x-evil-{i}", f"value-{i}".encode())]
        if kind == 0:
            out.append((Topic.PHASE_OUTCOME.value, key, b"\xff\xfe not json %d" % i, headers))
        elif kind == 1:
            body: dict[str, Any] = {
                "event_id": str(uuid.uuid4()),
                "event_type": f"evil.type.{i}",
                "data": {f"field_{i}": i},
            }
            out.append((Topic.BATCH_REGISTER.value, key, json.dumps(body).encode(), headers))
        elif kind == 2:
            _, envelope = env.request(f"ghost-{i}", f"pipeline-{i}", requested_by=f"user-{i}")
            out.append((Topic.PIPELINE_REQUEST.value, key, json.dumps(envelope).encode(), headers))
        else:
            _, envelope = env.outcome(f"ghost-{i}", f"phase-{i}", f"corr-{i}", processed=[f"e-{i}"])
            out.append((Topic.PHASE_OUTCOME.value, key, json.dumps(envelope).encode(), headers))
    return out


@pytest.mark.timeout(180)
async def test_hostile_distinct_values_create_no_new_metric_series(
    broker: LocalBroker, prefix: str, producer: ProducerLike
) -> None:
    env = HuleEduEnvelopes()
    records = _records(env)
    settings = fast_settings(broker.bootstrap, prefix)
    async with running(settings) as runner:
        futures = [
            await producer.send(f"{prefix}{topic}", value, key=key, headers=headers)  # type: ignore[attr-defined]
            for topic, key, value, headers in records
        ]
        await asyncio.gather(*futures)

        await wait_until(lambda: runner.stats.consumed >= N, within=120, what=f"{N} records consumed")
        assert runner.metrics is not None
        text = (await runner.metrics.exposition()).decode()
        series: dict[str, set[frozenset[tuple[str, str]]]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                series.setdefault(sample.name, set()).add(frozenset(sample.labels.items()))
        messages = series.get("pipeline_state_messages_total", set())
        dead = series.get("pipeline_state_dead_lettered_total", set())
        lag = series.get("pipeline_state_consumer_lag", set())
        assert runner.stats.dead_lettered > 0  # the hostile records did reach the dead-letter path
        total = sum(len(v) for v in series.values())
        assert len(messages) <= 6 * 8, sorted(messages)
        assert len(dead) <= 8 * 4, sorted(dead)
        assert len(lag) <= 64, sorted(lag)
        assert total <= 400, total
        consumer = runner.consumer
        assert consumer is not None
        assert len(consumer._unexpected) == 0
        assert len(runner.metrics._counted) <= 64
        assert len(runner.metrics._completions) == 0
