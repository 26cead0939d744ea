"""A whole pipeline through a real broker: inbound events in, commands, skips, completion and
notifications out, compared with the in-memory reference runtime fed the same events."""

from __future__ import annotations

import uuid
from typing import Any

import attrs
import pytest
from kafka_harness import fast_settings, running, running_runner, wait_status
from pipeline_state_kafka import ProducerLike
from pipeline_state_kafka.testing import Collector, LocalBroker, send_envelopes
from pipeline_state_service import OpenedStore, ServiceRunner

from pipeline_state import BatchStatus, Catalog, InMemoryRuntime, PipelineService
from pipeline_state.profiles.huleedu.events import OUTBOUND_TOPICS, Topic
from pipeline_state.profiles.huleedu.profile import huleedu_profile
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

pytestmark = pytest.mark.kafka

Delivery = tuple[str, dict[str, Any]]


class Driver:
    """Sends each delivery to Kafka and to the in-memory reference, which says what to expect."""

    def __init__(self, producer: ProducerLike, prefix: str, out: Collector) -> None:
        self.producer = producer
        self.prefix = prefix
        self.out = out
        self.reference = InMemoryRuntime()
        self.expected: list[dict[str, Any]] = []

    async def deliver(self, delivery: Delivery) -> list[dict[str, Any]]:
        emitted = await self.reference.deliver(*delivery)
        self.expected.extend(emitted)
        await send_envelopes(self.producer, [delivery], topic_prefix=self.prefix)
        want = {m["value"]["event_id"] for m in self.expected}
        await self.out.wait_for(
            lambda c: want <= {r.event_id for r in c.records}, within=30, what=f"the output of {delivery[0]}"
        )
        return emitted


async def test_kafka_whole_pipeline_emits_commands_skips_completion_and_notifications(
    broker: LocalBroker, prefix: str, producer: ProducerLike
) -> None:
    env = HuleEduEnvelopes()
    ids = env.item_ids("b1", 3)
    corr = str(uuid.uuid4())
    async with (
        running(fast_settings(broker.bootstrap, prefix)) as runner,
        Collector(broker.bootstrap, OUTBOUND_TOPICS, topic_prefix=prefix) as out,
    ):
        drive = Driver(producer, prefix, out)
        # Registration of a class batch, provisioning, student matching, readiness.
        await drive.deliver(env.register("b1", items=3, group_id="c1", owner="teacher-7"))
        await drive.deliver(env.provisioned("b1", ids))
        await drive.deliver(env.group_confirmed("b1", "c1", ids))
        await wait_status(runner, "b1", BatchStatus.GROUP_VALIDATION_COMPLETED)
        await drive.deliver(env.items_ready("b1", ids))
        await wait_status(runner, "b1", BatchStatus.READY_FOR_PIPELINE_EXECUTION)
        # The ai_feedback pipeline: spellcheck -> nlp -> ai_feedback, one essay failing in nlp.
        await drive.deliver(env.request("b1", "ai_feedback", requested_by="teacher-7", correlation_id=corr))
        await drive.deliver(env.outcome("b1", "spellcheck", corr, processed=ids))
        await drive.deliver(env.outcome("b1", "nlp", corr, processed=ids[:2], failed=ids[2:]))
        await drive.deliver(env.outcome("b1", "ai_feedback", corr, processed=ids[:2]))
        # A second request prunes spellcheck (completed by the first run).
        corr2 = str(uuid.uuid4())
        await drive.deliver(
            env.request("b1", "cj_assessment", requested_by="teacher-7", correlation_id=corr2)
        )

        got = out.records
        assert runner.stats.dead_lettered == 0
        # Everything the reference emitted arrived exactly once, with the same ids and keys.
        assert sorted((r.topic, r.key, r.event_id) for r in got) == sorted(
            (m["topic"], m["key"], m["value"]["event_id"]) for m in drive.expected
        )
        assert len({r.event_id for r in got}) == len(got)
        for record in got:
            assert record.headers["event_id"] == record.event_id
            assert record.headers["event_type"] == record.topic == record.envelope["event_type"]
            assert record.headers["correlation_id"] == record.envelope["correlation_id"]

        # Commands, in dependency order, each with the essays that survived the step before.
        commands = [r for r in got if r.topic.endswith("initiate.command.v1") or r.topic == Topic.NLP]
        assert [r.topic for r in commands] == [
            Topic.STUDENT_MATCHING,
            Topic.SPELLCHECK,
            Topic.NLP,
            Topic.AI_FEEDBACK,
            Topic.CJ_ASSESSMENT,
        ]
        ai = out.on(Topic.AI_FEEDBACK)[0]
        assert [e["essay_id"] for e in ai.data["essays_to_process"]] == ids[:2]
        assert all(r.key == "b1" for r in commands)
        assert {r.envelope["correlation_id"] for r in commands[1:4]} == {corr}

        (completion,) = out.on(Topic.PIPELINE_COMPLETED)
        assert completion.key == "b1"
        assert completion.data["pipeline_name"] == "ai_feedback"
        assert completion.data["final_status"] == "completed_with_failures"
        assert completion.data["completed_phases"] == ["spellcheck", "nlp", "ai_feedback"]
        assert (completion.data["successful_essay_count"], completion.data["failed_essay_count"]) == (2, 1)
        assert completion.data["correlation_id"] == corr

        (skip,) = out.on(Topic.PHASE_SKIPPED)
        assert (skip.data["phase_name"], skip.data["skip_reason"]) == ("spellcheck", "already_completed")
        assert skip.envelope["correlation_id"] == corr2

        notes = out.on(Topic.TEACHER_NOTIFICATION)
        assert [(n.key, n.data["notification_type"], n.data["priority"]) for n in notes] == [
            ("teacher-7", "batch_processing_started", "low"),
            ("teacher-7", "pipeline_completed", "immediate"),
            ("teacher-7", "batch_processing_started", "low"),
        ]
        opened = runner.opened
        assert opened is not None
        state = await opened.store.load("b1")
        assert state is not None
        assert state.status is BatchStatus.PROCESSING_PIPELINES
        assert await opened.outbox.pending_count() == 0


async def test_kafka_denied_request_is_published_not_dropped(
    broker: LocalBroker, prefix: str, producer: ProducerLike
) -> None:
    env = HuleEduEnvelopes()
    async with (
        running(fast_settings(broker.bootstrap, prefix)) as runner,
        Collector(broker.bootstrap, OUTBOUND_TOPICS, topic_prefix=prefix) as out,
    ):
        drive = Driver(producer, prefix, out)
        await drive.deliver(env.register("g1", items=2))
        await drive.deliver(env.provisioned("g1", env.item_ids("g1", 2)))
        await wait_status(runner, "g1", BatchStatus.READY_FOR_PIPELINE_EXECUTION)
        await drive.deliver(env.request("g1", "no_such_pipeline"))
        (denied,) = out.on(Topic.PIPELINE_DENIED)
        assert denied.data["denial_reason"] == "unknown_pipeline"
        assert [n.data["notification_type"] for n in out.on(Topic.TEACHER_NOTIFICATION)] == [
            "pipeline_denied"
        ]
        assert runner.stats.dead_lettered == 0


async def test_kafka_deadline_sweeper_fails_an_overdue_phase_and_completes_the_run(
    broker: LocalBroker, prefix: str, producer: ProducerLike
) -> None:
    catalog = Catalog.from_dict(
        {
            "pipelines": {
                "nlp": {
                    "steps": [
                        {"name": "spellcheck", "deadline_seconds": 0.5},
                        {"name": "nlp", "depends_on": ["spellcheck"]},
                    ]
                }
            }
        }
    )

    def service(opened: OpenedStore) -> PipelineService:
        return PipelineService(opened.store, profile=huleedu_profile(catalog=catalog))

    env = HuleEduEnvelopes()
    corr = str(uuid.uuid4())
    settings = attrs.evolve(fast_settings(broker.bootstrap, prefix), sweep_seconds=0.2)
    runner = ServiceRunner(settings, service_factory=service)
    async with (
        running_runner(runner),
        Collector(broker.bootstrap, OUTBOUND_TOPICS, topic_prefix=prefix) as out,
    ):
        await send_envelopes(producer, [env.register("d1", items=1)], topic_prefix=prefix)
        await out.wait_for(lambda c: bool(c.on(Topic.ESSAYS_REGISTERED)), what="registration")
        await send_envelopes(producer, [env.provisioned("d1", env.item_ids("d1", 1))], topic_prefix=prefix)
        await wait_status(runner, "d1", BatchStatus.READY_FOR_PIPELINE_EXECUTION)
        await send_envelopes(producer, [env.request("d1", "nlp", correlation_id=corr)], topic_prefix=prefix)
        await out.wait_for(lambda c: bool(c.on(Topic.SPELLCHECK)), what="the spellcheck command")
        # No outcome ever comes: the sweeper fails spellcheck when its deadline passes.
        await out.wait_for(lambda c: bool(c.on(Topic.PIPELINE_COMPLETED)), what="the completion")
        (completion,) = out.on(Topic.PIPELINE_COMPLETED)
        assert completion.data["final_status"] == "failed_critically"
        assert completion.data["phase_results"]["spellcheck"]["status"] == "failed"
        assert completion.data["correlation_id"] == corr
        assert runner.stats.expired >= 1
        assert out.on(Topic.NLP) == []
