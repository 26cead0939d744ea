"""Phase deadlines: the sweeper fails overdue phases at the injected clock's time.

These tests pin ``max_resends=0`` (a phase fails at its first deadline); re-sending before
failing is in ``test_core_resend.py``."""

from __future__ import annotations

from core_flow import Flow, one, topics

from pipeline_state import Catalog, InMemoryRuntime
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.profile import huleedu_profile
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

CATALOG = Catalog.from_dict(
    {
        "pipelines": {
            "nlp": {
                "steps": [
                    {"name": "spellcheck", "deadline_seconds": 60},
                    {"name": "nlp", "depends_on": ["spellcheck"], "deadline_seconds": 30},
                ]
            }
        }
    }
)


def _flow() -> Flow:
    return Flow(InMemoryRuntime(huleedu_profile(catalog=CATALOG, max_resends=0)), HuleEduEnvelopes())


async def test_nothing_expires_before_the_deadline() -> None:
    flow = _flow()
    await flow.ready("b1")
    await flow.start("b1", "nlp")
    before = await flow.state("b1")

    flow.rt.clock.advance(59.9)

    assert await flow.rt.expire_overdue() == []
    assert await flow.state("b1") == before


async def test_overdue_phase_fails_with_timeout_and_the_run_completes() -> None:
    flow = _flow()
    await flow.ready("b1")
    started = await flow.start("b1", "nlp")

    flow.rt.clock.advance(60)
    out = await flow.rt.expire_overdue()

    assert topics(out) == [
        Topic.PHASE_SKIPPED.value,
        Topic.PIPELINE_COMPLETED.value,
        Topic.TEACHER_NOTIFICATION.value,
    ]
    assert one(out, Topic.PHASE_SKIPPED.value)["phase_name"] == "nlp"
    completed = one(out, Topic.PIPELINE_COMPLETED.value)
    assert completed["final_status"] == "failed_critically"
    assert completed["correlation_id"] == started.correlation_id
    assert completed["processing_duration_seconds"] == 60.0
    assert completed["phase_results"]["spellcheck"] == {
        "status": "failed",
        "successful": 0,
        "failed": 3,
        "duration_seconds": 60.0,
    }
    state = await flow.state("b1")
    assert state.status.value == "ready_for_pipeline_execution"
    spell = state.history[-1].phase("spellcheck")
    assert spell is not None
    assert spell.error == "timeout"
    # The sweep is done: running it again finds nothing.
    assert await flow.rt.expire_overdue() == []


async def test_deadline_counts_from_dispatch_of_each_phase() -> None:
    flow = _flow()
    ids = await flow.ready("b1")
    corr = (await flow.start("b1", "nlp")).correlation_id
    flow.rt.clock.advance(50)
    await flow.outcome("b1", "spellcheck", corr, processed=ids)

    flow.rt.clock.advance(29)
    assert await flow.rt.expire_overdue() == []
    flow.rt.clock.advance(1)
    out = await flow.rt.expire_overdue()

    completed = one(out, Topic.PIPELINE_COMPLETED.value)
    assert completed["completed_phases"] == ["spellcheck"]
    assert completed["phase_results"]["nlp"]["status"] == "failed"


async def test_late_outcome_after_a_timeout_is_ignored() -> None:
    flow = _flow()
    ids = await flow.ready("b1")
    corr = (await flow.start("b1", "nlp")).correlation_id
    flow.rt.clock.advance(61)
    await flow.rt.expire_overdue()
    before = await flow.state("b1")

    assert await flow.outcome("b1", "spellcheck", corr, processed=ids) == []

    assert await flow.state("b1") == before
    assert len(flow.rt.bus.messages(Topic.PIPELINE_COMPLETED.value)) == 1


async def test_only_overdue_phases_fail_and_parallel_branches_go_on() -> None:
    catalog = Catalog.from_dict(
        {
            "pipelines": {
                "comprehensive": {
                    "steps": [
                        {"name": "spellcheck"},
                        {"name": "cj_assessment", "depends_on": ["spellcheck"], "deadline_seconds": 10},
                        {"name": "nlp", "depends_on": ["spellcheck"], "deadline_seconds": 100},
                        {"name": "ai_feedback", "depends_on": ["spellcheck", "nlp"]},
                    ]
                }
            }
        }
    )
    flow = Flow(InMemoryRuntime(huleedu_profile(catalog=catalog, max_resends=0)), HuleEduEnvelopes())
    ids = await flow.ready("b1")
    corr = (await flow.start("b1", "comprehensive")).correlation_id
    await flow.outcome("b1", "spellcheck", corr, processed=ids)

    flow.rt.clock.advance(10)
    assert await flow.rt.expire_overdue() == []  # nothing to emit: cj has no dependents

    run = (await flow.state("b1")).active_run
    assert run is not None
    assert run.phase_statuses["cj_assessment"] == "failed"
    assert run.phase_statuses["nlp"] == "dispatch_initiated"
    out = await flow.outcome("b1", "nlp", corr, processed=ids)
    assert topics(out) == [Topic.AI_FEEDBACK.value]
    out = await flow.outcome("b1", "ai_feedback", corr, processed=ids)
    assert one(out, Topic.PIPELINE_COMPLETED.value)["final_status"] == "completed_with_failures"
