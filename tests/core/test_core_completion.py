"""Completion: exactly once, every field of BatchPipelineCompletedV1, the final notification,
archiving into history and the batch back to ready in the same delivery."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from core_flow import Flow, datas, one, topics

from pipeline_state.profiles.huleedu.events import Topic

COMPLETED = Topic.PIPELINE_COMPLETED.value
NOTIFY = Topic.TEACHER_NOTIFICATION.value


async def test_completion_carries_every_field(flow: Flow) -> None:
    ids = await flow.ready("b1", items=4)
    accepted = flow.rt.clock.now()
    started = await flow.start("b1", "nlp")
    corr = started.correlation_id
    flow.rt.clock.advance(3)
    await flow.outcome("b1", "spellcheck", corr, processed=ids[:3], failed=ids[3:])
    flow.rt.clock.advance(5)

    out = await flow.outcome("b1", "nlp", corr, processed=ids[:2], failed=ids[2:3])

    assert topics(out) == [COMPLETED, NOTIFY]
    assert out[0]["key"] == "b1"
    completed = one(out, COMPLETED)
    metadata = completed.pop("metadata")
    assert completed == {
        "batch_id": "b1",
        "pipeline_name": "nlp",
        "run_id": started.run_id,
        "completed_phases": ["spellcheck", "nlp"],
        "skipped_phases": [],
        "final_status": "completed_with_failures",
        "processing_duration_seconds": 8.0,
        "successful_essay_count": 2,
        "failed_essay_count": 2,
        "phase_results": {
            "spellcheck": {
                "status": "completed_with_partial_success",
                "successful": 3,
                "failed": 1,
                "duration_seconds": 3.0,
            },
            "nlp": {
                "status": "completed_with_partial_success",
                "successful": 2,
                "failed": 1,
                "duration_seconds": 5.0,
            },
        },
        "correlation_id": corr,
    }
    assert set(metadata) == {"entity_id", "entity_type", "timestamp"}
    assert metadata["entity_id"] == "b1"
    assert metadata["entity_type"] == "batch"
    assert datetime.fromisoformat(metadata["timestamp"]) == accepted + timedelta(seconds=8)


async def test_completed_phases_follow_plan_order_and_skips_are_listed(flow: Flow) -> None:
    ids = await flow.ready("b1")
    corr = (await flow.start("b1", "comprehensive")).correlation_id
    await flow.outcome("b1", "spellcheck", corr, processed=ids)
    # Finish nlp before cj_assessment: completed_phases still follow plan order.
    await flow.outcome("b1", "nlp", corr, processed=ids)
    await flow.outcome("b1", "ai_feedback", corr, processed=ids)

    out = await flow.outcome("b1", "cj_assessment", corr, processed=ids)

    completed = one(out, COMPLETED)
    assert completed["completed_phases"] == ["spellcheck", "cj_assessment", "nlp", "ai_feedback"]
    assert completed["skipped_phases"] == []
    assert completed["final_status"] == "completed_successfully"
    assert list(completed["phase_results"]) == ["spellcheck", "cj_assessment", "nlp", "ai_feedback"]


@pytest.mark.parametrize(
    ("processed", "status", "priority", "action"),
    [
        pytest.param(3, "completed_successfully", "high", False, id="clean"),
        pytest.param(2, "completed_with_failures", "immediate", True, id="failed-essays"),
        pytest.param(0, "failed_critically", "immediate", True, id="not-successful"),
    ],
)
async def test_completion_notification(
    flow: Flow, processed: int, status: str, priority: str, action: bool
) -> None:
    ids = await flow.ready("b1")
    started = await flow.start("b1", "nlp")
    corr = started.correlation_id
    await flow.outcome("b1", "spellcheck", corr, processed=ids)

    out = await flow.outcome("b1", "nlp", corr, processed=ids[:processed], failed=ids[processed:])

    assert one(out, COMPLETED)["final_status"] == status
    [note_msg] = [m for m in out if m["topic"] == NOTIFY]
    assert note_msg["key"] == "teacher-1"
    note = note_msg["value"]["data"]
    assert note["teacher_id"] == "teacher-1"
    assert note["notification_type"] == "pipeline_completed"
    assert note["category"] == "batch_progress"
    assert note["priority"] == priority
    assert note["action_required"] is action
    assert note["batch_id"] == "b1"
    assert note["correlation_id"] == corr
    assert note["payload"]["run_id"] == started.run_id
    assert note["payload"]["final_status"] == status


async def test_accepted_run_notifies_low_priority(flow: Flow) -> None:
    await flow.ready("b1")

    started = await flow.start("b1", "nlp")

    [note] = datas(started.out, NOTIFY)
    assert note["notification_type"] == "batch_processing_started"
    assert (note["category"], note["priority"], note["action_required"]) == ("batch_progress", "low", False)
    assert note["payload"]["run_id"] == started.run_id


async def test_completion_archives_the_run_and_returns_the_batch_to_ready(flow: Flow) -> None:
    ids = await flow.ready("b1")
    started = await flow.start("b1", "nlp")
    await flow.outcome("b1", "spellcheck", started.correlation_id, processed=ids)
    version = await flow.version("b1")

    await flow.outcome("b1", "nlp", started.correlation_id, processed=ids)

    state = await flow.state("b1")
    assert state.version == version + 1  # one delivery, one commit
    assert state.status.value == "ready_for_pipeline_execution"
    assert state.active_run is None
    [run] = state.history
    assert run.run_id == started.run_id
    assert run.status.value == "completed_successfully"
    assert run.completed_at == flow.rt.clock.now()
    snap = await flow.rt.snapshot("b1")
    assert snap["active_run"] is None
    assert [r["run_id"] for r in snap["history"]] == [started.run_id]


async def test_completion_is_emitted_exactly_once_and_unblocks_the_next_request(flow: Flow) -> None:
    ids = await flow.ready("b1")
    corr = (await flow.start("b1", "nlp")).correlation_id
    await flow.outcome("b1", "spellcheck", corr, processed=ids)
    last = flow.env.outcome("b1", "nlp", corr, processed=ids)
    await flow.rt.deliver(*last)
    await flow.rt.deliver(*last)  # redelivered
    await flow.outcome("b1", "nlp", corr, processed=ids)  # repeated with a fresh event id
    await flow.outcome("b1", "spellcheck", corr, processed=ids)  # late duplicate of an earlier phase

    assert len(flow.rt.bus.messages(COMPLETED)) == 1
    second = await flow.start("b1", "cj_assessment")
    assert (await flow.state("b1")).active_run is not None
    assert second.correlation_id != corr
