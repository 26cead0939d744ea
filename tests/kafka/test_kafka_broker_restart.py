"""A broker restart is survived: while the broker is down outbox rows stay pending (not
parked, not lost); once it is back they are published, and the consumer goes on.

The test broker keeps data in memory only, so its topics vanish with the restart and are
created again (as an operator would after losing a cluster)."""

from __future__ import annotations

import asyncio
import uuid

import attrs
import pytest
from kafka_harness import fast_settings, running, wait_status, wait_until
from pipeline_state_kafka import ProducerSettings, create_producer, ensure_topics, service_topics
from pipeline_state_kafka.testing import Collector, LocalBroker, send_envelopes

from pipeline_state import BatchStatus
from pipeline_state.ports import Outbox
from pipeline_state.profiles.huleedu.events import OUTBOUND_TOPICS, Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

pytestmark = pytest.mark.kafka


async def test_kafka_relay_survives_a_broker_restart(own_broker: LocalBroker, prefix: str) -> None:
    env = HuleEduEnvelopes()
    broker = own_broker
    ids = env.item_ids("x1", 2)
    corr = str(uuid.uuid4())
    base = fast_settings(broker.bootstrap, prefix)
    settings = attrs.evolve(
        base,
        producer=ProducerSettings(broker.bootstrap, request_timeout_ms=2000),
        consumer=attrs.evolve(base.consumer_settings(), metadata_max_age_ms=1000, request_timeout_ms=5000),
    )
    producer = create_producer(ProducerSettings(broker.bootstrap, request_timeout_ms=5000))
    await producer.start()
    try:
        async with running(settings) as runner:
            assert runner.opened is not None
            assert runner.service is not None
            outbox = runner.opened.outbox
            async with Collector(broker.bootstrap, OUTBOUND_TOPICS, topic_prefix=prefix) as before:
                await send_envelopes(producer, [env.register("x1", items=2)], topic_prefix=prefix)
                await before.wait_for(lambda c: bool(c.on(Topic.ESSAYS_REGISTERED)), what="registration")
                await send_envelopes(producer, [env.provisioned("x1", ids)], topic_prefix=prefix)
                await wait_status(runner, "x1", BatchStatus.READY_FOR_PIPELINE_EXECUTION)

            broker.stop()
            # Input that reaches the service another way (HTTP, an operator) while Kafka is down.
            topic, envelope = env.request("x1", "nlp", correlation_id=corr)
            result = await runner.service.handle_message(topic, envelope)
            assert len(result.messages) == 2
            assert runner.relay is not None
            runner.relay.wake()
            await wait_until(
                lambda: runner.stats.publish_failures >= 2, within=20, what="a failed relay pass"
            )
            await asyncio.sleep(1.0)
            assert await outbox.pending_count() == 2  # still pending: not published, not parked
            assert runner.stats.parked == 0

            broker.start()
            await ensure_topics(broker.bootstrap, service_topics(prefix))
            await wait_until(lambda: _drained(outbox), within=30, what="the relay to publish")
            async with Collector(broker.bootstrap, OUTBOUND_TOPICS, topic_prefix=prefix) as after:
                await after.wait_for(lambda c: bool(c.on(Topic.SPELLCHECK)), what="the spellcheck command")
                assert {m.event_id for m in result.messages} <= {r.event_id for r in after.records}
                assert len(after.on(Topic.SPELLCHECK)) == 1
                # The consumer rejoins its (new) group and carries on with the pipeline.
                await send_envelopes(
                    producer, [env.outcome("x1", "spellcheck", corr, processed=ids)], topic_prefix=prefix
                )
                await after.wait_for(lambda c: bool(c.on(Topic.NLP)), within=40, what="the nlp command")
    finally:
        await producer.stop()


async def _drained(outbox: Outbox) -> bool:
    return await outbox.pending_count() == 0
