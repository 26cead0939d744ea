"""Many batches at once (partitions handled concurrently, offsets committed per fetch, order
kept per batch) and an extra consumer run by ``serve --consumers``."""

from __future__ import annotations

import uuid

import attrs
import pytest
from kafka_harness import fast_settings, running, wait_until
from pipeline_state_kafka import ProducerLike
from pipeline_state_kafka.handlers import Handled
from pipeline_state_kafka.testing import Collector, LocalBroker, send_envelopes
from pipeline_state_service import ConsumerPlugin, ServeContext, register_consumer

from pipeline_state import BatchStatus
from pipeline_state.profiles.huleedu.events import OUTBOUND_TOPICS, Topic, parse_message
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

pytestmark = pytest.mark.kafka


async def test_kafka_many_batches_keep_their_order_and_complete_once(
    broker: LocalBroker, prefix: str, producer: ProducerLike
) -> None:
    env = HuleEduEnvelopes()
    batches = [f"m{i:02d}" for i in range(12)]
    essays = {b: env.item_ids(b, 2) for b in batches}
    corr = {b: str(uuid.uuid4()) for b in batches}
    async with (
        running(fast_settings(broker.bootstrap, prefix)) as runner,
        Collector(broker.bootstrap, OUTBOUND_TOPICS, topic_prefix=prefix) as out,
    ):
        assert runner.opened is not None
        store = runner.opened.store
        await send_envelopes(producer, [env.register(b, items=2) for b in batches], topic_prefix=prefix)
        await out.wait_for(lambda c: len(c.on(Topic.ESSAYS_REGISTERED)) == len(batches), what="registrations")
        await send_envelopes(producer, [env.provisioned(b, essays[b]) for b in batches], topic_prefix=prefix)

        async def all_ready() -> bool:
            ready = await store.list_batches(BatchStatus.READY_FOR_PIPELINE_EXECUTION, limit=100)
            return len(ready) == len(batches)

        await wait_until(all_ready, what="every batch ready")
        await send_envelopes(
            producer, [env.request(b, "nlp", correlation_id=corr[b]) for b in batches], topic_prefix=prefix
        )
        await out.wait_for(lambda c: len(c.on(Topic.SPELLCHECK)) == len(batches), what="spellcheck commands")
        handled_before = runner.stats.handled
        commits_before = runner.stats.offset_commits
        # Both outcomes of every batch at once: per batch, spellcheck must be applied before nlp.
        outcomes = []
        for b in batches:
            outcomes.append(env.outcome(b, "spellcheck", corr[b], processed=essays[b]))
            outcomes.append(env.outcome(b, "nlp", corr[b], processed=essays[b]))
        await send_envelopes(producer, outcomes, topic_prefix=prefix)
        await out.wait_for(
            lambda c: len(c.on(Topic.PIPELINE_COMPLETED)) == len(c.on(Topic.NLP)) == len(batches),
            within=30,
            what="nlp commands and completions",
        )

        assert runner.stats.handled - handled_before == 2 * len(batches)
        assert runner.stats.ignored == 0
        assert runner.stats.offset_commits - commits_before < 2 * len(batches)  # one commit per fetch
        completions = {r.key or "": r for r in out.on(Topic.PIPELINE_COMPLETED)}
        assert sorted(completions) == batches
        for b, record in completions.items():
            assert record.data["completed_phases"] == ["spellcheck", "nlp"]
            assert record.data["final_status"] == "completed_successfully"
            assert record.data["correlation_id"] == corr[b]
        nlp = {r.key or "": r for r in out.on(Topic.NLP)}
        assert all(
            ref["text_storage_id"].endswith("-spellcheck")
            for b in batches
            for ref in nlp[b].data["essays_to_process"]
        )
        assert len(out.records) == len(out.unique())


@attrs.define
class _Seen:
    completions: list[str] = attrs.Factory(list)


async def test_kafka_serve_runs_an_extra_consumer(
    broker: LocalBroker, prefix: str, producer: ProducerLike
) -> None:
    seen = _Seen()

    async def completions(context: ServeContext) -> ConsumerPlugin:
        assert context.topic_prefix == prefix

        async def handle(topic: str, raw: bytes) -> Handled:
            envelope, payload = parse_message(topic, raw, inbound_only=False)
            seen.completions.append(getattr(payload, "batch_id", ""))
            return Handled(
                str(envelope.event_id), getattr(payload, "batch_id", None), str(envelope.correlation_id)
            )

        return ConsumerPlugin(topics=(Topic.PIPELINE_COMPLETED.value,), handler=handle)

    name = f"completions-{uuid.uuid4().hex[:6]}"
    register_consumer(name, completions)
    env = HuleEduEnvelopes()
    ids = env.item_ids("e1", 1)
    corr = str(uuid.uuid4())
    settings = attrs.evolve(fast_settings(broker.bootstrap, prefix), consumers=(name,))
    async with running(settings) as runner:
        await send_envelopes(producer, [env.register("e1", items=1)], topic_prefix=prefix)
        await wait_until(lambda: runner.stats.handled >= 1, what="registration")
        await send_envelopes(producer, [env.provisioned("e1", ids)], topic_prefix=prefix)
        await wait_until(lambda: runner.stats.handled >= 2, what="provisioning")
        await send_envelopes(producer, [env.request("e1", "nlp", correlation_id=corr)], topic_prefix=prefix)
        await wait_until(lambda: runner.stats.handled >= 3, what="the request")
        await send_envelopes(
            producer,
            [
                env.outcome("e1", "spellcheck", corr, processed=ids),
                env.outcome("e1", "nlp", corr, processed=ids),
            ],
            topic_prefix=prefix,
        )
        await wait_until(lambda: seen.completions == ["e1"], within=20, what="the extra consumer to see it")
