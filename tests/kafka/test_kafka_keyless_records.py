"""A record with no key is keyed otherwise than by its batch id: it lands in the lane of the
empty key, not in its batch's, so with several lanes it may be handled out of order with the
batch's keyed records. Was a defect (found by an attack on the Kafka intake): the consumer
counted (``miskeyed``) and warned of records keyed by another id, but skipped keyless ones."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from intake_kit import LogConsumer, drain, new_consumer

from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

REGISTER = Topic.BATCH_REGISTER.value


async def test_a_keyless_record_is_counted_and_warned_of_like_a_miskeyed_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = HuleEduEnvelopes()
    source = LogConsumer(asyncio.Event())
    source.append(REGISTER, json.dumps(env.register("kl-1", items=2)[1]).encode(), key=None)
    source.append(REGISTER, json.dumps(env.register("kl-2", items=2)[1]).encode(), key=b"kl-2")
    consumer, service, _ = new_consumer(source, partition_concurrency=4)
    with caplog.at_level(logging.WARNING, logger="pipeline_state_kafka"):
        await drain(consumer, source)
    assert await service.store.load("kl-1") is not None  # handled all the same
    assert consumer.stats.miskeyed == 1
    warnings = [r.getMessage() for r in caplog.records if "keyed otherwise" in r.getMessage()]
    assert len(warnings) == 1
    assert "kl-1" in warnings[0]
