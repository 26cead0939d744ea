"""Operator commands: cancel a run, retry a phase, archive and cancel a batch."""

from __future__ import annotations

import pytest
from core_flow import Flow, datas, new_id, one, refs, topics

from pipeline_state import (
    ArchiveBatch,
    CancelBatch,
    CancelRun,
    IllegalTransitionError,
    InMemoryRuntime,
    RateLimitGuard,
    RetryPhase,
)
from pipeline_state._catalog import Catalog
from pipeline_state._commands import RecordPhaseCompletion
from pipeline_state.errors import CatalogError
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.profile import huleedu_profile
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

COMPLETED = Topic.PIPELINE_COMPLETED.value
DENIED = Topic.PIPELINE_DENIED.value
SPELL = Topic.SPELLCHECK.value


async def test_cancel_run_cancels_open_phases_and_completes_the_run(flow: Flow) -> None:
    ids = await flow.ready("b1")
    started = await flow.start("b1", "comprehensive")
    await flow.outcome("b1", "spellcheck", started.correlation_id, processed=ids)

    out = await flow.rt.execute(CancelRun("b1", user_id="teacher-1", reason="changed my mind"))

    completed = one(out, COMPLETED)
    assert completed["final_status"] == "cancelled"
    assert completed["completed_phases"] == ["spellcheck"]
    assert completed["correlation_id"] == started.correlation_id
    note = one(out, Topic.TEACHER_NOTIFICATION.value)
    assert (note["priority"], note["action_required"]) == ("immediate", True)
    state = await flow.state("b1")
    assert state.status.value == "ready_for_pipeline_execution"
    assert state.active_run is None
    assert state.history[-1].status.value == "cancelled"
    assert state.history[-1].phase_statuses == {
        "spellcheck": "completed_successfully",
        "cj_assessment": "cancelled",
        "nlp": "cancelled",
        "ai_feedback": "cancelled",
    }
    # A late outcome of the cancelled run changes nothing; a new request is accepted.
    assert await flow.outcome("b1", "nlp", started.correlation_id, processed=ids) == []
    await flow.start("b1", "nlp")


async def test_cancel_without_an_active_run_is_an_illegal_transition(flow: Flow) -> None:
    await flow.ready("b1")
    before = await flow.state("b1")

    with pytest.raises(IllegalTransitionError) as caught:
        await flow.rt.execute(CancelRun("b1"))

    assert caught.value.batch_id == "b1"
    assert caught.value.state == "ready_for_pipeline_execution"
    assert caught.value.trigger == "cancel"
    assert await flow.state("b1") == before


async def test_retry_phase_runs_a_completed_phase_again(flow: Flow) -> None:
    ids = await flow.ready("b1")
    corr = (await flow.start("b1", "nlp")).correlation_id
    await flow.outcome("b1", "spellcheck", corr, processed=ids, suffix="spell")
    await flow.outcome("b1", "nlp", corr, processed=ids)
    retry_corr = new_id()

    out = await flow.rt.execute(
        RetryPhase("b1", "nlp", "teacher-1", retry_reason="model updated"), correlation_id=retry_corr
    )

    # nlp runs again on spellcheck's recorded outputs, although it completed before.
    assert refs(out, Topic.NLP.value) == [(e, f"{e}-spell") for e in ids]
    state = await flow.state("b1")
    run = state.active_run
    assert run is not None
    assert run.is_retry
    assert run.retry_reason == "model updated"
    assert run.correlation_id == retry_corr
    assert [p.name for p in run.phases] == ["nlp"]
    out = await flow.outcome("b1", "nlp", retry_corr, processed=ids[:1], failed=ids[1:])
    assert one(out, COMPLETED)["final_status"] == "completed_with_failures"


async def test_retry_of_a_phase_with_several_dependencies_uses_their_recorded_outputs(flow: Flow) -> None:
    ids = await flow.ready("b1", items=4)
    corr = (await flow.start("b1", "ai_feedback")).correlation_id
    await flow.outcome("b1", "spellcheck", corr, processed=ids[:3], failed=ids[3:], suffix="spell")
    await flow.outcome("b1", "nlp", corr, processed=ids[1:3], failed=ids[:1], suffix="nlp")
    await flow.outcome("b1", "ai_feedback", corr, processed=ids[1:3])

    out = await flow.rt.execute(RetryPhase("b1", "ai_feedback", "teacher-1"))

    assert refs(out, Topic.AI_FEEDBACK.value) == [(e, f"{e}-nlp") for e in ids[1:3]]
    run = (await flow.state("b1")).active_run
    assert run is not None
    assert run.final_step == "ai_feedback"
    assert [p.name for p in run.phases] == ["ai_feedback"]


async def test_retry_phase_is_denied_while_a_run_is_active(flow: Flow) -> None:
    await flow.ready("b1")
    await flow.start("b1", "nlp")
    before = await flow.state("b1")

    out = await flow.rt.execute(RetryPhase("b1", "spellcheck", "teacher-1"))

    assert topics(out) == [DENIED, Topic.TEACHER_NOTIFICATION.value]
    assert one(out, DENIED)["denial_reason"] == "pipeline_already_active"
    assert await flow.state("b1") == before


async def test_retry_of_a_phase_whose_dependencies_never_completed_is_denied(flow: Flow) -> None:
    await flow.ready("b1")
    before = await flow.state("b1")

    out = await flow.rt.execute(RetryPhase("b1", "nlp", "teacher-1"))

    assert one(out, DENIED)["denial_reason"] == "dependencies_not_completed"
    assert await flow.state("b1") == before


async def test_archive_a_ready_batch(flow: Flow) -> None:
    await flow.ready("b1")

    assert await flow.rt.execute(ArchiveBatch("b1")) == []

    assert (await flow.state("b1")).status.value == "archived"
    out = await flow.request("b1", "nlp")
    assert one(out, DENIED)["denial_reason"] == "batch_not_ready"


async def test_archive_while_processing_is_an_illegal_transition(flow: Flow) -> None:
    await flow.ready("b1")
    await flow.start("b1", "nlp")
    before = await flow.state("b1")

    with pytest.raises(IllegalTransitionError) as caught:
        await flow.rt.execute(ArchiveBatch("b1"))

    assert (caught.value.batch_id, caught.value.state, caught.value.trigger) == (
        "b1",
        "processing_pipelines",
        "archive",
    )
    assert await flow.state("b1") == before


async def test_cancel_batch_without_a_run(flow: Flow) -> None:
    await flow.register("b1")

    assert await flow.rt.execute(CancelBatch("b1", reason="wrong upload")) == []

    assert (await flow.state("b1")).status.value == "cancelled"
    with pytest.raises(IllegalTransitionError):
        await flow.rt.execute(CancelBatch("b1"))


async def test_cancel_batch_cancels_its_active_run(flow: Flow) -> None:
    await flow.ready("b1")
    started = await flow.start("b1", "nlp")

    out = await flow.rt.execute(CancelBatch("b1"))

    [completed] = datas(out, COMPLETED)
    assert completed["final_status"] == "cancelled"
    assert completed["run_id"] == started.run_id
    state = await flow.state("b1")
    assert state.status.value == "cancelled"
    assert state.active_run is None
    assert state.history[-1].status.value == "cancelled"


async def test_a_recorded_completion_takes_the_items_every_dependency_completed(flow: Flow) -> None:
    # Found by the path generator: the record took its last dependency's outputs even where an
    # earlier dependency's latest execution had lost an item; a run's fan-in takes the items
    # that succeeded in every dependency (refs from the last), and so does a record now.
    ids = await flow.ready("b1", items=2)
    for phase in ("spellcheck", "nlp"):
        await flow.rt.execute(RecordPhaseCompletion("b1", phase, success=True))
    retried = await flow.rt.execute(RetryPhase("b1", "spellcheck", user_id="u1"))
    assert retried
    corr = (await flow.state("b1")).active_run.correlation_id  # type: ignore[union-attr]
    await flow.outcome("b1", "spellcheck", corr, processed=ids[:1], failed=ids[1:])

    await flow.rt.execute(RecordPhaseCompletion("b1", "ai_feedback", success=True))

    recorded = (await flow.state("b1")).history[-1]
    assert recorded.pipeline_name == "manual:ai_feedback"
    (phase,) = recorded.phases
    assert [e.item_id for e in phase.outputs] == ids[:1]
    assert [e.item_id for e in phase.inputs] == ids[:1]


async def test_an_operator_reported_failure_counts_every_item_the_phase_was_given(flow: Flow) -> None:
    # Found by an attack: the failure recorded no failed items, so the completion event's
    # phase_results said nlp handled nothing (0 successful, 0 failed) while the run's own
    # figure counted the three essays sent to it as failed; a timeout counts them.
    ids = await flow.ready("b1")
    started = await flow.start("b1", "nlp")
    await flow.outcome("b1", "spellcheck", started.correlation_id, processed=ids)
    nlp_inputs = (await flow.state("b1")).active_run.phase("nlp").inputs  # type: ignore[union-attr]
    assert [e.item_id for e in nlp_inputs] == ids

    out = await flow.rt.execute(RecordPhaseCompletion("b1", "nlp", success=False))

    completed = one(out, COMPLETED)
    assert (completed["successful_essay_count"], completed["failed_essay_count"]) == (0, 3)
    nlp = completed["phase_results"]["nlp"]
    assert (nlp["status"], nlp["successful"], nlp["failed"]) == ("failed", 0, 3)
    assert (await flow.state("b1")).history[-1].phase("nlp").failed_item_ids == tuple(ids)  # type: ignore[union-attr]


async def test_a_recorded_completion_is_no_request_for_the_rate_limit() -> None:
    # Found by an attack: the run that records an operator's report was counted as an
    # accepted request, so the teacher's first request of the window was denied
    # ``rate_limit_exceeded`` (with an action-required notification).
    profile = huleedu_profile(extra_guards=[RateLimitGuard(max_runs=1, window_seconds=3600)])
    flow = Flow(InMemoryRuntime(profile), HuleEduEnvelopes())
    await flow.ready("b1")
    await flow.rt.execute(RecordPhaseCompletion("b1", "spellcheck", success=True))
    recorded = (await flow.state("b1")).history[-1]

    first = await flow.request("b1", "nlp")
    assert [m["value"]["data"]["denial_reason"] for m in first if m["topic"] == DENIED] == []
    assert recorded.pipeline_name == "manual:spellcheck"
    assert recorded.recorded
    corr = (await flow.state("b1")).active_run.correlation_id  # type: ignore[union-attr]
    ids = [e.item_id for e in (await flow.state("b1")).items]
    await flow.outcome("b1", "nlp", corr, processed=ids)
    # The limit still counts the requests: a second one in the window is denied.
    second = await flow.request("b1", "nlp")
    assert [m["value"]["data"]["denial_reason"] for m in second if m["topic"] == DENIED] == [
        "rate_limit_exceeded"
    ]


def test_no_catalog_pipeline_may_take_the_recorded_runs_prefix() -> None:
    with pytest.raises(CatalogError, match="manual:"):
        Catalog.from_dict({"pipelines": {"manual:x": {"steps": [{"name": "a"}]}}})
