"""End to end in memory: pipelines driven to completion by the real engine reach the results
read model, and their results are announced through the results outbox and relay.

The results service is subscribed to the runtime's bus for every topic it consumes that the
engine publishes (registrations, phase commands, pruned-phase notices, completions), and is
handed the same inbound phase-outcome envelopes as the engine (as the result aggregator
consumes them). The results outbox is relayed to the same bus.
"""

from __future__ import annotations

from typing import Any

import pytest

from pipeline_state import CancelRun, OutboxRelay
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.results import (
    InMemoryResultsStore,
    RecordingCacheInvalidator,
    ResultsQueries,
    ResultsService,
)
from tests.results_platform import ResultsPlatform

READY = Topic.RESULTS_READY.value
NOTIFY = Topic.TEACHER_NOTIFICATION.value


class Platform(ResultsPlatform):
    """The engine, the results consumer beside it (every message it saw in ``consumed``),
    and the results outbox relayed to the engine's bus after each consumed message."""

    def __init__(self) -> None:
        self.cache = RecordingCacheInvalidator()
        super().__init__(owner="teacher-7", cache=self.cache)
        self.relay = OutboxRelay(self.store, self.rt.bus, self.rt.clock)

    async def consume(self, topic: str, value: dict[str, Any]) -> None:
        await super().consume(topic, value)
        await self.relay.drain()


@pytest.fixture
def platform() -> Platform:
    return Platform()


async def test_pipelines_reach_the_read_model_and_are_announced(platform: Platform) -> None:
    p = platform
    ids = await p.ready_batch("b1", essays=4, class_id="class-7")

    corr1 = await p.start("b1", "cj_assessment")
    p.rt.clock.advance(3)
    await p.outcome("b1", "spellcheck", corr1, processed=ids)
    mid = await p.store.load("b1")
    assert mid is not None
    assert mid.status == "processing"
    p.rt.clock.advance(5)
    out = await p.outcome("b1", "cj_assessment", corr1, processed=ids[:3], failed=ids[3:])
    completed = next(m for m in out if m["topic"] == Topic.PIPELINE_COMPLETED.value)["value"]["data"]

    batch = await p.store.load("b1")
    assert batch is not None
    assert (batch.user_id, batch.class_id, batch.status) == (
        "teacher-7",
        "class-7",
        "completed_with_failures",
    )
    assert (batch.essays_succeeded, batch.essays_failed) == (3, 1)
    assert [(x.name, x.status, x.successful, x.failed, x.duration_seconds) for x in batch.phases] == [
        ("spellcheck", "completed_successfully", 4, 0, 3.0),
        ("cj_assessment", "completed_with_partial_success", 3, 1, 5.0),
    ]
    assert batch.outcomes == ()  # superseded by the completion's figures

    (ready,) = p.published(READY)
    assert ready["data"] == {
        "batch_id": "b1",
        "user_id": "teacher-7",
        "total_essays": 4,
        "completed_essays": 3,
        "phase_results": completed["phase_results"],
        "overall_status": "completed_with_failures",
        "processing_duration_seconds": 8.0,
    }
    assert ready["correlation_id"] == corr1
    notes = [
        n["data"] for n in p.published(NOTIFY) if n["data"]["notification_type"] == "batch_results_ready"
    ]
    assert len(notes) == 1
    assert (notes[0]["teacher_id"], notes[0]["category"], notes[0]["priority"]) == (
        "teacher-7", "processing_results", "high",
    )  # fmt: skip
    assert notes[0]["payload"]["run_id"] == completed["run_id"]
    assert "results:class:class-7" in p.cache.keys

    # A second run: spellcheck is pruned, nlp fails. Announced too; pruned results stay.
    corr2 = await p.start("b1", "nlp")
    p.rt.clock.advance(2)
    await p.outcome("b1", "nlp", corr2, processed=[], failed=ids[:3])
    batch = await p.store.load("b1")
    assert batch is not None
    assert batch.status == "failed_critically"
    assert [(x.name, x.status) for x in batch.phases] == [
        ("spellcheck", "completed_successfully"),
        ("cj_assessment", "completed_with_partial_success"),
        ("nlp", "failed"),
    ]
    assert [r["data"]["overall_status"] for r in p.published(READY)] == [
        "completed_with_failures",
        "failed_critically",
    ]

    summary = await ResultsQueries(p.store).class_json("class-7")
    assert summary is not None
    assert (summary["batch_count"], summary["batches_by_status"]) == (1, {"failed_critically": 1})
    # Every essay that entered the nlp run failed (the engine counts the one nlp never reported).
    assert (summary["essays_succeeded"], summary["essays_failed"]) == (0, 4)
    teacher = await ResultsQueries(p.store).teacher_json("teacher-7")
    assert [b["batch_id"] for b in teacher["batches"]] == ["b1"]

    # The same events replayed in reverse into a fresh consumer give the same read model.
    fresh_store = InMemoryResultsStore()
    fresh = ResultsService(fresh_store, clock=p.rt.clock)
    for topic, value in reversed(p.consumed):
        await fresh.handle_message(topic, value)
    assert await fresh_store.load("b1") == batch
    assert await fresh_store.class_results("class-7") == await p.store.class_results("class-7")
    assert len([r for r in fresh_store.outbox_rows() if r.message.topic == READY]) == 2


async def test_cancelled_run_and_redelivered_completion(platform: Platform) -> None:
    p = platform
    await p.deliver(*p.env.register("g1", owner="teacher-7", items=2))
    await p.deliver(*p.env.provisioned("g1", p.env.item_ids("g1", 2)))
    await p.start("g1", "ai_feedback")
    await p.rt.execute(CancelRun("g1", user_id="teacher-7", reason="changed my mind"))

    batch = await p.store.load("g1")
    assert batch is not None
    assert (batch.status, batch.class_id) == ("cancelled", None)
    (ready,) = p.published(READY)
    assert ready["data"]["overall_status"] == "cancelled"

    # The engine's completion message delivered again: a duplicate, nothing announced again.
    topic, value = next((t, v) for t, v in p.consumed if t == Topic.PIPELINE_COMPLETED.value)
    handled = await p.results.handle_message(topic, value)
    assert (handled.duplicate, handled.messages) == (True, ())
    await p.relay.drain()
    assert len(p.published(READY)) == 1
