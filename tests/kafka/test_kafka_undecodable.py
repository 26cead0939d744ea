"""A record the Kafka client cannot decode is parked by where it is, and nothing else is lost.

Found by an attack: Kafka header names are bytes on the wire, and aiokafka decodes them as
UTF-8 while ``getmany`` hands records out; a record with other bytes there raised in every
fetch. Its partition stood still for ever (nothing parked, nothing handled after it), and
the records the same call had already taken from other partitions were lost with the
exception (their positions had moved past them)."""

from __future__ import annotations

import json

import aiokafka.producer.message_accumulator as accumulator
import aiokafka.producer.producer as producer_module
import pytest
from aiokafka.record.default_records import _DefaultRecordBatchBuilderPy
from kafka_harness import fast_settings, running
from pipeline_state_kafka import ProducerSettings, create_producer, dlq_topic, ensure_topics, service_topics
from pipeline_state_kafka.testing import Collector, LocalBroker

from pipeline_state.profiles.huleedu.events import OUTBOUND_TOPICS, Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

pytestmark = pytest.mark.kafka

REGISTER = Topic.BATCH_REGISTER.value


class _Undecodable(str):
    """A header name that goes on the wire as bytes that are not UTF-8."""

    def encode(self, *args: object, **kwargs: object) -> bytes:  # type: ignore[override]
        return b"\xff\xfebad"


async def test_an_undecodable_record_is_parked_and_the_records_fetched_with_it_are_not_lost(
    broker: LocalBroker, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = HuleEduEnvelopes()
    topic = f"{prefix}{REGISTER}"
    await ensure_topics(broker.bootstrap, service_topics(prefix))
    # The pure-Python batch builder writes whatever bytes a header name encodes to (the C
    # one checks them); only this producer's batches are built with it.
    monkeypatch.setattr(accumulator, "DefaultRecordBatchBuilder", _DefaultRecordBatchBuilderPy)
    monkeypatch.setattr(producer_module, "DefaultRecordBatchBuilder", _DefaultRecordBatchBuilderPy)
    raw = create_producer(ProducerSettings(broker.bootstrap, client_id="tests-undecodable"))
    await raw.start()
    try:
        # Written before the service starts, so that its first fetch takes them together:
        # good records on partitions 0 and 2, and on partition 1 one it cannot decode
        # between two good ones.
        sends = [
            (0, "u0", None),
            (1, "u1a", None),
            (1, "poison", [(_Undecodable("x"), b"v")]),
            (1, "u1b", None),
            (2, "u2", None),
        ]
        for partition, batch_id, headers in sends:
            value = json.dumps(env.register(batch_id)[1]).encode()
            await raw.send_and_wait(topic, value, batch_id.encode(), partition=partition, headers=headers)
    finally:
        await raw.stop()
        monkeypatch.undo()

    async with (
        running(fast_settings(broker.bootstrap, prefix)) as runner,
        Collector(broker.bootstrap, OUTBOUND_TOPICS, topic_prefix=prefix) as out,
        Collector(broker.bootstrap, [dlq_topic(REGISTER)], topic_prefix=prefix) as dlq,
    ):
        wanted = {"u0", "u1a", "u1b", "u2"}
        await out.wait_for(
            lambda c: {r.data.get("entity_id") for r in c.on(Topic.ESSAYS_REGISTERED)} >= wanted,
            within=30,
            what="every good registration handled",
        )
        await dlq.wait_for(lambda c: len(c.records) == 1, within=10, what="the undecodable record parked")
        letter = dlq.records[0]
        headers = dict(letter.headers)
        assert (headers["dlq_original_partition"], headers["dlq_original_offset"]) == ("1", "1")
        assert headers["dlq_error_type"] == "InvalidMessageError"
        assert "cannot decode" in headers["dlq_reason"]
        assert runner.stats.dead_lettered == 1
        registered = [r.data.get("entity_id") for r in out.on(Topic.ESSAYS_REGISTERED)]
        assert sorted(set(registered)) == sorted(wanted)  # each good one, none lost
        for batch_id in wanted:
            assert await runner.service.get_batch(batch_id)  # type: ignore[union-attr]
