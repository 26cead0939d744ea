"""The same inbound event delivered three times has one effect (the inbox), and a repeated
outcome with a fresh event id changes nothing (the state check)."""

from __future__ import annotations

import pytest
from kafka_harness import fast_settings, running, wait_status, wait_until
from pipeline_state_kafka import ProducerLike
from pipeline_state_kafka.testing import Collector, LocalBroker, send_envelopes

from pipeline_state import BatchStatus
from pipeline_state.profiles.huleedu.events import OUTBOUND_TOPICS, Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

pytestmark = pytest.mark.kafka


async def test_kafka_event_delivered_three_times_has_one_effect(
    broker: LocalBroker, prefix: str, producer: ProducerLike
) -> None:
    env = HuleEduEnvelopes()
    ids = env.item_ids("r1", 2)
    corr = "0b5e2a59-8d0e-4f57-9d7a-2f1de0b2b001"
    async with (
        running(fast_settings(broker.bootstrap, prefix)) as runner,
        Collector(broker.bootstrap, OUTBOUND_TOPICS, topic_prefix=prefix) as out,
    ):
        register = env.register("r1", items=2)
        await send_envelopes(producer, [register] * 3, topic_prefix=prefix)
        await wait_until(lambda: runner.stats.handled == 3, what="three deliveries handled")
        await send_envelopes(producer, [env.provisioned("r1", ids)], topic_prefix=prefix)
        await wait_status(runner, "r1", BatchStatus.READY_FOR_PIPELINE_EXECUTION)

        request = env.request("r1", "nlp", correlation_id=corr)
        await send_envelopes(producer, [request] * 3, topic_prefix=prefix)
        await out.wait_for(lambda c: bool(c.on(Topic.SPELLCHECK)), what="the spellcheck command")

        spell = env.outcome("r1", "spellcheck", corr, processed=ids)
        # The same outcome three times, then once more as a new event (fresh event id).
        again = env.outcome("r1", "spellcheck", corr, processed=ids)
        await send_envelopes(producer, [spell, spell, spell, again], topic_prefix=prefix)
        await wait_until(lambda: runner.stats.handled == 3 + 1 + 3 + 4, what="every delivery handled")
        await out.wait_for(lambda c: bool(c.on(Topic.NLP)), what="the nlp command")
        # A follow-up on the same partition proves nothing else was still in flight.
        await send_envelopes(producer, [env.outcome("r1", "nlp", corr, processed=ids)], topic_prefix=prefix)
        await out.wait_for(
            lambda c: bool(c.on(Topic.PIPELINE_COMPLETED)) and len(c.on(Topic.TEACHER_NOTIFICATION)) >= 2,
            what="the completion and its notification",
        )

        assert runner.stats.duplicates == 2 + 2 + 2
        assert runner.stats.ignored == 1  # the fresh-id repeat: recorded as ignored, no effect
        counts = {topic: len(out.on(topic)) for topic in OUTBOUND_TOPICS}
        assert counts[Topic.ESSAYS_REGISTERED] == 1
        assert counts[Topic.SPELLCHECK] == 1
        assert counts[Topic.NLP] == 1
        assert counts[Topic.PIPELINE_COMPLETED] == 1
        assert [n.data["notification_type"] for n in out.on(Topic.TEACHER_NOTIFICATION)] == [
            "batch_processing_started",
            "pipeline_completed",
        ]
        assert runner.opened is not None
        state = await runner.opened.store.load("r1")
        assert state is not None
        assert state.past.count == 1
        assert len(await runner.opened.store.history("r1")) == 1
