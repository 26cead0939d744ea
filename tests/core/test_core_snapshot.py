"""The runtime's snapshot: the shape of issue 2 point 7, JSON-serialisable, not-found errors."""

from __future__ import annotations

import json

import pytest
from core_flow import Flow

from pipeline_state import InMemoryRuntime
from pipeline_state.errors import BatchNotFoundError

TOP = {"batch_id", "status", "version", "active_run", "history"}
ACTIVE = {"run_id", "pipeline_name", "correlation_id", "phases"}
ARCHIVED = {"run_id", "pipeline_name", "final_status", "completed_phases", "skipped_phases", "phases"}


def _round_trip(snap: dict[str, object]) -> dict[str, object]:
    restored = json.loads(json.dumps(snap))
    assert restored == snap
    return restored


async def test_snapshot_of_a_ready_batch(flow: Flow) -> None:
    await flow.ready("b1")

    snap = _round_trip(await flow.rt.snapshot("b1"))

    assert set(snap) >= TOP
    assert snap["batch_id"] == "b1"
    assert snap["status"] == "ready_for_pipeline_execution"
    assert snap["version"] == 2
    assert snap["active_run"] is None
    assert snap["history"] == []


async def test_snapshot_with_an_active_run_and_history(flow: Flow) -> None:
    ids = await flow.ready("b1")
    first = await flow.start("b1", "cj_assessment")
    await flow.outcome("b1", "spellcheck", first.correlation_id, processed=ids)
    await flow.outcome("b1", "cj_assessment", first.correlation_id, failed=ids)
    second = await flow.start("b1", "nlp")
    await flow.outcome("b1", "nlp", second.correlation_id, processed=ids)
    third = await flow.start("b1", "comprehensive")

    snap = _round_trip(await flow.rt.snapshot("b1"))

    assert snap["status"] == "processing_pipelines"
    assert snap["version"] == (await flow.state("b1")).version
    active = snap["active_run"]
    assert isinstance(active, dict)
    assert set(active) >= ACTIVE
    assert active["run_id"] == third.run_id
    assert active["pipeline_name"] == "comprehensive"
    assert active["correlation_id"] == third.correlation_id
    # spellcheck and nlp are pruned; cj_assessment failed before, so it runs again.
    assert active["phases"] == {"cj_assessment": "dispatch_initiated", "ai_feedback": "dispatch_initiated"}
    history = snap["history"]
    assert isinstance(history, list)
    for run in history:
        assert set(run) >= ARCHIVED
    assert [(r["run_id"], r["pipeline_name"], r["final_status"]) for r in history] == [
        (first.run_id, "cj_assessment", "failed_critically"),
        (second.run_id, "nlp", "completed_successfully"),
    ]
    assert history[0]["completed_phases"] == ["spellcheck"]
    assert history[0]["skipped_phases"] == []
    assert history[0]["phases"] == {"spellcheck": "completed_successfully", "cj_assessment": "failed"}
    assert history[1]["completed_phases"] == ["nlp"]
    assert history[1]["skipped_phases"] == ["spellcheck"]
    assert history[1]["phases"] == {"nlp": "completed_successfully"}


async def test_snapshot_of_an_unknown_batch_raises_not_found(rt: InMemoryRuntime) -> None:
    with pytest.raises(BatchNotFoundError) as caught:
        await rt.snapshot("ghost")

    assert caught.value.batch_id == "ghost"
