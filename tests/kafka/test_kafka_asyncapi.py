"""The AsyncAPI document (issue 15, point 4) against a real broker: every record the service
publishes is on a channel the document sends to, with the key, value and headers the
document declares, and every record it consumed matches a channel it receives from."""

from __future__ import annotations

import uuid

import pytest
from kafka_harness import fast_settings, running, wait_status
from pipeline_state_kafka import ProducerLike
from pipeline_state_kafka.dlq import ParkedFact, WaitedTooLongError, dead_letter
from pipeline_state_kafka.testing import Collector, LocalBroker, send_envelopes

from pipeline_state import BatchStatus
from pipeline_state._asyncapi import asyncapi_document
from pipeline_state._asyncapi_kafka import DEAD_LETTER_SUFFIX
from pipeline_state.profiles.huleedu.events import INBOUND_TOPICS, OUTBOUND_TOPICS, Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from pipeline_state.testing import WireChecker

pytestmark = pytest.mark.kafka


async def test_kafka_records_match_the_asyncapi_document(
    broker: LocalBroker, prefix: str, producer: ProducerLike
) -> None:
    checker = WireChecker(asyncapi_document())
    env = HuleEduEnvelopes()
    ids = env.item_ids("b1", 2)
    corr = str(uuid.uuid4())
    async with (
        running(fast_settings(broker.bootstrap, prefix)) as runner,
        Collector(broker.bootstrap, [*INBOUND_TOPICS, *OUTBOUND_TOPICS], topic_prefix=prefix) as seen,
    ):
        for delivery in (
            env.register("b1", items=2, group_id="c1", owner="teacher-7"),
            env.provisioned("b1", ids),
            env.group_confirmed("b1", "c1", ids),
            env.items_ready("b1", ids),
        ):
            await send_envelopes(producer, [delivery], topic_prefix=prefix)
        await wait_status(runner, "b1", BatchStatus.READY_FOR_PIPELINE_EXECUTION)
        await send_envelopes(
            producer,
            [
                env.request("b1", "nlp", requested_by="teacher-7", correlation_id=corr),
                env.request("b1", "nope"),
            ],
            topic_prefix=prefix,
        )
        await send_envelopes(
            producer, [env.outcome("b1", "spellcheck", corr, processed=ids)], topic_prefix=prefix
        )
        await seen.wait_for(
            lambda c: bool(c.on("huleedu.batch.nlp.initiate.command.v2")), what="the nlp command"
        )
        await send_envelopes(producer, [env.outcome("b1", "nlp", corr, processed=ids)], topic_prefix=prefix)
        await seen.wait_for(
            lambda c: bool(c.on("huleedu.batch.pipeline.completed.v1")), what="the completion event"
        )
        assert runner.stats.dead_lettered == 0

    sent = [r for r in seen.records if r.topic in OUTBOUND_TOPICS]
    received = [r for r in seen.records if r.topic in INBOUND_TOPICS]
    assert len(received) == 8
    assert {r.topic for r in sent} >= {
        "huleedu.batch.essays.registered.v1",
        "huleedu.batch.student.matching.initiate.command.v1",
        "huleedu.els.spellcheck.initiate.command.v1",
        "huleedu.batch.nlp.initiate.command.v2",
        "huleedu.pipeline.denied.v1",
        "huleedu.batch.pipeline.completed.v1",
        "huleedu.notification.teacher.requested.v1",
    }
    for record in sent:
        checker.check(
            record.topic, action="send", key=record.key, value=record.envelope, headers=record.headers
        )
    for record in received:
        checker.check(record.topic, action="receive", key=record.key, value=record.envelope)


async def test_kafka_dead_letters_match_the_asyncapi_document(
    broker: LocalBroker, prefix: str, producer: ProducerLike
) -> None:
    checker = WireChecker(asyncapi_document())
    register, outcome = Topic.BATCH_REGISTER.value, Topic.PHASE_OUTCOME.value
    letters = [f"{register}{DEAD_LETTER_SUFFIX}", f"{outcome}{DEAD_LETTER_SUFFIX}"]
    topic, envelope = HuleEduEnvelopes().outcome("b9", "spellcheck", str(uuid.uuid4()))
    envelope["data"]["phase_status"] = "exploded"
    async with (
        running(fast_settings(broker.bootstrap, prefix)) as runner,
        Collector(broker.bootstrap, letters, topic_prefix=prefix) as seen,
    ):
        await producer.send_and_wait(f"{prefix}{register}", b"not json", b"b9", headers=[("origin", b"test")])
        await send_envelopes(producer, [(topic, envelope)], topic_prefix=prefix)
        await seen.wait_for(lambda c: len(c.records) == 2, what="two dead letters")
        assert runner.stats.dead_lettered == 2
    for record in seen.records:
        assert record.key == "b9"
        checker.check(
            record.topic, action="send", key=record.key, value=record.envelope, headers=record.headers
        )
    (garbage,) = seen.on(letters[0])
    assert garbage.raw == b"not json"
    assert garbage.headers["origin"] == "test"  # the original's headers are kept beside the dlq_* ones
    (invalid,) = seen.on(letters[1])
    assert invalid.headers["dlq_error_field"] == "data.phase_status"


def test_every_header_a_dead_letter_can_carry_is_in_the_asyncapi_document() -> None:
    checker = WireChecker(asyncapi_document())
    topic = Topic.PIPELINE_REQUEST.value
    waited = WaitedTooLongError("waited too long", waits_for="batch_registration", event_id=str(uuid.uuid4()))
    fact = ParkedFact(topic, b"b1", b"{}" * 50_000, headers=(("origin", b"x"),))
    letter = dead_letter(fact, waited, group_id="g", max_message_bytes=20_000)
    headers = {name: value.decode() for name, value in letter.headers}
    assert {"dlq_truncated", "dlq_waited_for", "dlq_event_id", "dlq_consumer_group"} <= headers.keys()
    assert letter.topic == f"{topic}{DEAD_LETTER_SUFFIX}"
    checker.check(letter.topic, action="send", key="b1", value={}, headers=headers)
    headers["dlq_truncated"] = "yes"
    with pytest.raises(AssertionError, match="dlq_truncated"):
        checker.check(letter.topic, action="send", key="b1", value={}, headers=headers)
