"""Two service instances in one consumer group share the partitions: a member joining while
records are being handled triggers a rebalance, the work in flight commits first, and every
run still completes exactly once (both instances share one store, as they would share a
database; its commits are slowed down so that work is in flight during the rebalance)."""

from __future__ import annotations

import uuid

import attrs
import pytest
from kafka_harness import SlowCommits, fast_settings, running, wait_until
from pipeline_state_kafka import ProducerLike
from pipeline_state_kafka.testing import Collector, LocalBroker, send_envelopes
from pipeline_state_service import OpenedStore

from pipeline_state import BatchStatus
from pipeline_state.profiles.huleedu.events import OUTBOUND_TOPICS, Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

pytestmark = pytest.mark.kafka


async def test_kafka_second_member_joins_while_records_flow(
    broker: LocalBroker, prefix: str, producer: ProducerLike
) -> None:
    env = HuleEduEnvelopes()
    memory = SlowCommits()
    shared = OpenedStore(memory, memory)
    settings = fast_settings(broker.bootstrap, prefix)
    # One record per fetch: units of work stay small, so some are in flight when the member joins.
    settings = attrs.evolve(settings, consumer=attrs.evolve(settings.consumer, max_records=1))
    batches = [f"j{i:02d}" for i in range(16)]
    essays = {b: env.item_ids(b, 1) for b in batches}
    corr = {b: str(uuid.uuid4()) for b in batches}
    async with (
        running(settings, store=shared) as first,
        Collector(broker.bootstrap, OUTBOUND_TOPICS, topic_prefix=prefix) as out,
    ):
        await send_envelopes(producer, [env.register(b, items=1) for b in batches], topic_prefix=prefix)
        await out.wait_for(lambda c: len(c.on(Topic.ESSAYS_REGISTERED)) == len(batches), what="registrations")
        await send_envelopes(producer, [env.provisioned(b, essays[b]) for b in batches], topic_prefix=prefix)

        async def all_ready() -> bool:
            ready = await memory.list_batches(BatchStatus.READY_FOR_PIPELINE_EXECUTION, limit=100)
            return len(ready) == len(batches)

        await wait_until(all_ready, what="every batch ready")
        await send_envelopes(
            producer, [env.request(b, "nlp", correlation_id=corr[b]) for b in batches], topic_prefix=prefix
        )
        await out.wait_for(lambda c: len(c.on(Topic.SPELLCHECK)) == len(batches), what="spellcheck commands")
        memory.delay = 0.25  # a slow database: 8 outcomes per partition take 2 s
        await send_envelopes(
            producer,
            [
                outcome
                for b in batches
                for outcome in (
                    env.outcome(b, "spellcheck", corr[b], processed=essays[b]),
                    env.outcome(b, "nlp", corr[b], processed=essays[b]),
                )
            ],
            topic_prefix=prefix,
        )
        async with running(settings, store=shared) as second:
            await wait_until(lambda: second.stats.handled > 0, within=30, what="the second member to work")
            await out.wait_for(
                lambda c: len({r.key for r in c.on(Topic.PIPELINE_COMPLETED)}) == len(batches),
                within=30,
                what="every completion",
            )
            assert first.stats.handled + second.stats.handled >= 5 * len(batches)
        completions = out.unique(Topic.PIPELINE_COMPLETED)
        assert sorted(r.key or "" for r in completions) == batches
        assert len({r.data["run_id"] for r in completions}) == len(batches)
        assert first.stats.dead_lettered == 0
