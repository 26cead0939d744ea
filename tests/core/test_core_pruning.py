"""Pruning: phases completed by an earlier run are skipped and their recorded outputs forwarded;
failed, cancelled and skipped phases are never pruned."""

from __future__ import annotations

import pytest
from core_flow import Flow, datas, one, refs, topics

from pipeline_state import CancelRun
from pipeline_state.profiles.huleedu.events import Topic

SPELL = Topic.SPELLCHECK.value
NLP = Topic.NLP.value
SKIPPED = Topic.PHASE_SKIPPED.value
COMPLETED = Topic.PIPELINE_COMPLETED.value


async def _cj_done(flow: Flow, ids: list[str], *, spell_ok: int) -> None:
    corr = (await flow.start("b1", "cj_assessment")).correlation_id
    await flow.outcome(
        "b1", "spellcheck", corr, processed=ids[:spell_ok], failed=ids[spell_ok:], suffix="spell"
    )
    await flow.outcome("b1", "cj_assessment", corr, processed=ids[:spell_ok])


async def test_completed_phase_is_pruned_and_its_outputs_forwarded(flow: Flow) -> None:
    ids = await flow.ready("b1", items=3)
    await _cj_done(flow, ids, spell_ok=2)

    started = await flow.start("b1", "nlp")

    skip = one(started.out, SKIPPED)
    assert skip == {
        "batch_id": "b1",
        "phase_name": "spellcheck",
        "skip_reason": "already_completed",
        "correlation_id": started.correlation_id,
        "run_id": started.run_id,
    }
    assert SPELL not in topics(started.out)
    # nlp gets the processed refs of the earlier spellcheck, not the original content.
    assert refs(started.out, NLP) == [(e, f"{e}-spell") for e in ids[:2]]
    out = await flow.outcome("b1", "nlp", started.correlation_id, processed=ids[:2])
    completed = one(out, COMPLETED)
    assert completed["completed_phases"] == ["nlp"]
    assert completed["skipped_phases"] == ["spellcheck"]
    assert completed["final_status"] == "completed_successfully"


async def test_request_whose_steps_are_all_done_completes_at_once(flow: Flow) -> None:
    ids = await flow.ready("b1")
    await _cj_done(flow, ids, spell_ok=3)

    started = await flow.start("b1", "cj_assessment")

    assert [s["phase_name"] for s in datas(started.out, SKIPPED)] == ["spellcheck", "cj_assessment"]
    completed = one(started.out, COMPLETED)
    assert completed["completed_phases"] == []
    assert completed["skipped_phases"] == ["spellcheck", "cj_assessment"]
    assert completed["run_id"] == started.run_id
    assert completed["processing_duration_seconds"] == 0.0
    state = await flow.state("b1")
    assert state.status.value == "ready_for_pipeline_execution"
    assert state.active_run is None
    assert len(state.history) == 2


async def test_failed_phase_is_never_pruned(flow: Flow) -> None:
    ids = await flow.ready("b1")
    corr = (await flow.start("b1", "nlp")).correlation_id
    await flow.outcome("b1", "spellcheck", corr, failed=ids)

    started = await flow.start("b1", "nlp")

    assert SKIPPED not in topics(started.out)
    assert refs(started.out, SPELL) == [(e, f"{e}-text") for e in ids]


async def test_cancelled_phase_is_never_pruned(flow: Flow) -> None:
    ids = await flow.ready("b1")
    await flow.start("b1", "nlp")
    await flow.rt.execute(CancelRun("b1"))

    started = await flow.start("b1", "nlp")

    assert SKIPPED not in topics(started.out)
    assert [e for e, _ in refs(started.out, SPELL)] == ids


async def test_skipped_phase_is_never_pruned(flow: Flow) -> None:
    ids = await flow.ready("b1")
    corr = (await flow.start("b1", "ai_feedback")).correlation_id
    await flow.outcome("b1", "spellcheck", corr, processed=ids)
    await flow.outcome("b1", "nlp", corr, failed=ids)  # ai_feedback skipped
    assert (await flow.state("b1")).history[-1].phase_statuses["ai_feedback"] == (
        "skipped_due_to_dependency_failure"
    )

    started = await flow.start("b1", "ai_feedback")

    # spellcheck pruned (completed); nlp failed and ai_feedback skipped: both run again.
    assert [s["phase_name"] for s in datas(started.out, SKIPPED)] == ["spellcheck"]
    run = (await flow.state("b1")).active_run
    assert run is not None
    assert [p.name for p in run.phases] == ["nlp", "ai_feedback"]


@pytest.mark.parametrize("status", ["completed_successfully", "completed_with_failures"])
async def test_partial_success_counts_as_completed_for_pruning(flow: Flow, status: str) -> None:
    ids = await flow.ready("b1")
    processed = ids if status == "completed_successfully" else ids[:1]
    corr = (await flow.start("b1", "cj_assessment")).correlation_id
    await flow.outcome(
        "b1", "spellcheck", corr, processed=processed, failed=ids[len(processed) :], status=status
    )
    await flow.outcome("b1", "cj_assessment", corr, processed=processed)

    started = await flow.start("b1", "nlp")

    assert one(started.out, SKIPPED)["phase_name"] == "spellcheck"
    assert [e for e, _ in refs(started.out, NLP)] == processed
