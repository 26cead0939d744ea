"""Phase outcomes: status mapping, real counts, failure propagation and final status."""

from __future__ import annotations

import pytest
from core_flow import Flow, datas, one, topics

from pipeline_state.profiles.huleedu.events import Topic

SKIPPED = Topic.PHASE_SKIPPED.value
COMPLETED = Topic.PIPELINE_COMPLETED.value


@pytest.mark.parametrize(
    ("wire_status", "processed", "failed", "phase_status"),
    [
        pytest.param("completed_successfully", 3, 0, "completed_successfully", id="success"),
        pytest.param("completed_with_failures", 2, 1, "completed_with_partial_success", id="partial"),
        pytest.param("failed_critically", 0, 3, "failed", id="failed"),
    ],
)
async def test_outcome_status_maps_and_real_counts_are_recorded(
    flow: Flow, wire_status: str, processed: int, failed: int, phase_status: str
) -> None:
    ids = await flow.ready("b1")
    started = await flow.start("b1", "nlp")
    flow.rt.clock.advance(7)

    await flow.outcome(
        "b1",
        "spellcheck",
        started.correlation_id,
        processed=ids[:processed],
        failed=ids[processed:],
        status=wire_status,
    )

    state = await flow.state("b1")
    run = state.active_run or state.history[-1]
    spell = run.phase("spellcheck")
    assert spell is not None
    assert spell.status.value == phase_status
    assert [e.item_id for e in spell.outputs] == ids[:processed]
    assert spell.failed_item_ids == tuple(ids[processed:])
    assert len(spell.failed_item_ids) == failed
    assert spell.duration_seconds == 7.0


async def test_partial_success_forwards_only_processed_essays_and_counts_them(flow: Flow) -> None:
    ids = await flow.ready("b1", items=4)
    started = await flow.start("b1", "nlp")
    corr = started.correlation_id

    out = await flow.outcome("b1", "spellcheck", corr, processed=ids[:3], failed=ids[3:])
    assert [e["essay_id"] for e in one(out, Topic.NLP.value)["essays_to_process"]] == ids[:3]
    out = await flow.outcome("b1", "nlp", corr, processed=ids[:2], failed=ids[2:3])

    completed = one(out, COMPLETED)
    assert completed["final_status"] == "completed_with_failures"
    assert completed["successful_essay_count"] == 2
    assert completed["failed_essay_count"] == 2
    results = completed["phase_results"]
    assert results["spellcheck"]["status"] == "completed_with_partial_success"
    assert (results["spellcheck"]["successful"], results["spellcheck"]["failed"]) == (3, 1)
    assert results["nlp"]["status"] == "completed_with_partial_success"
    assert (results["nlp"]["successful"], results["nlp"]["failed"]) == (2, 1)


async def test_failure_skips_every_transitive_dependent(flow: Flow) -> None:
    ids = await flow.ready("b1")
    started = await flow.start("b1", "ai_feedback")

    out = await flow.outcome("b1", "spellcheck", started.correlation_id, failed=ids)

    skips = datas(out, SKIPPED)
    assert [s["phase_name"] for s in skips] == ["nlp", "ai_feedback"]
    assert {s["skip_reason"] for s in skips} == {"dependency_failed"}
    assert {s["run_id"] for s in skips} == {started.run_id}
    completed = one(out, COMPLETED)
    assert completed["final_status"] == "failed_critically"
    assert completed["skipped_phases"] == ["nlp", "ai_feedback"]
    run = (await flow.state("b1")).history[-1]
    assert run.phase_statuses == {
        "spellcheck": "failed",
        "nlp": "skipped_due_to_dependency_failure",
        "ai_feedback": "skipped_due_to_dependency_failure",
    }


async def test_independent_branches_go_on_after_a_failure(flow: Flow) -> None:
    ids = await flow.ready("b1")
    corr = (await flow.start("b1", "comprehensive")).correlation_id
    await flow.outcome("b1", "spellcheck", corr, processed=ids)

    out = await flow.outcome("b1", "cj_assessment", corr, failed=ids)
    assert topics(out) == []  # nothing depends on cj_assessment; nlp is still running
    out = await flow.outcome("b1", "nlp", corr, processed=ids)
    assert [m["topic"] for m in out] == [Topic.AI_FEEDBACK.value]
    out = await flow.outcome("b1", "ai_feedback", corr, processed=ids)

    completed = one(out, COMPLETED)
    assert completed["completed_phases"] == ["spellcheck", "nlp", "ai_feedback"]
    assert completed["phase_results"]["cj_assessment"]["status"] == "failed"
    # The final step (ai_feedback) completed, so the run is not failed_critically.
    assert completed["final_status"] == "completed_with_failures"


async def test_dependent_with_no_essays_left_is_skipped_and_announced(flow: Flow) -> None:
    ids = await flow.ready("b1")
    corr = (await flow.start("b1", "comprehensive")).correlation_id

    # A "partial" outcome in which no essay came through: nothing can go forward.
    out = await flow.outcome(
        "b1", "spellcheck", corr, processed=[], failed=ids, status="completed_with_failures"
    )

    skips = {s["phase_name"]: s["skip_reason"] for s in datas(out, SKIPPED)}
    assert skips == {
        "cj_assessment": "no_essays_to_process",
        "nlp": "no_essays_to_process",
        "ai_feedback": "dependency_failed",
    }
    completed = one(out, COMPLETED)
    assert completed["final_status"] == "failed_critically"
    assert completed["successful_essay_count"] == 0
    assert completed["failed_essay_count"] == 3
    assert (await flow.state("b1")).status.value == "ready_for_pipeline_execution"


@pytest.mark.parametrize(
    ("nlp_processed", "expected"),
    [
        pytest.param(3, "completed_successfully", id="all-clean"),
        pytest.param(2, "completed_with_failures", id="final-step-partial"),
        pytest.param(0, "failed_critically", id="final-step-failed"),
    ],
)
async def test_final_status_rules(flow: Flow, nlp_processed: int, expected: str) -> None:
    ids = await flow.ready("b1")
    corr = (await flow.start("b1", "nlp")).correlation_id
    await flow.outcome("b1", "spellcheck", corr, processed=ids)

    out = await flow.outcome("b1", "nlp", corr, processed=ids[:nlp_processed], failed=ids[nlp_processed:])

    assert one(out, COMPLETED)["final_status"] == expected
    assert (await flow.state("b1")).history[-1].status.value == expected


async def test_partial_success_upstream_with_clean_final_step_is_completed_with_failures(flow: Flow) -> None:
    ids = await flow.ready("b1")
    corr = (await flow.start("b1", "nlp")).correlation_id
    await flow.outcome("b1", "spellcheck", corr, processed=ids[:2], failed=ids[2:])

    out = await flow.outcome("b1", "nlp", corr, processed=ids[:2])

    completed = one(out, COMPLETED)
    assert completed["final_status"] == "completed_with_failures"
    assert completed["failed_essay_count"] == 1
