"""Dispatch: parallel by default, strictly sequential with ``max_parallel=1``, forwarded essay
refs, and the request's correlation id on everything a run emits."""

from __future__ import annotations

from core_flow import Flow, Message, datas, new_id, one, refs, topics

from pipeline_state import InMemoryRuntime, RetryPhase
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.profile import huleedu_profile
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

SPELL = Topic.SPELLCHECK.value
CJ = Topic.CJ_ASSESSMENT.value
NLP = Topic.NLP.value
AIF = Topic.AI_FEEDBACK.value
COMMANDS = {SPELL, CJ, NLP, AIF}
SKIPPED = Topic.PHASE_SKIPPED.value
NOTIFY = Topic.TEACHER_NOTIFICATION.value
COMPLETED = Topic.PIPELINE_COMPLETED.value


def commands(out: list[Message]) -> list[str]:
    return [t for t in topics(out) if t in COMMANDS]


async def test_roots_get_the_batch_essays(flow: Flow) -> None:
    await flow.ready("b1")

    started = await flow.start("b1", "comprehensive")

    assert commands(started.out) == [SPELL]
    assert refs(started.out, SPELL) == [(f"b1-e{i}", f"b1-e{i}-text") for i in range(3)]
    assert one(started.out, SPELL)["language"] == "en"
    state = await flow.state("b1")
    assert state.status.value == "processing_pipelines"
    assert state.active_run is not None
    assert state.active_run.phase_statuses == {
        "spellcheck": "dispatch_initiated",
        "cj_assessment": "pending_dependencies",
        "nlp": "pending_dependencies",
        "ai_feedback": "pending_dependencies",
    }


async def test_independent_steps_are_dispatched_in_parallel(flow: Flow) -> None:
    ids = await flow.ready("b1")
    started = await flow.start("b1", "comprehensive")

    out = await flow.outcome("b1", "spellcheck", started.correlation_id, processed=ids)

    assert commands(out) == [CJ, NLP]
    state = await flow.state("b1")
    assert state.active_run is not None
    assert state.active_run.phase_statuses["cj_assessment"] == "dispatch_initiated"
    assert state.active_run.phase_statuses["nlp"] == "dispatch_initiated"


async def test_max_parallel_one_is_strictly_sequential() -> None:
    flow = Flow(InMemoryRuntime(huleedu_profile(max_parallel=1)), HuleEduEnvelopes())
    ids = await flow.ready("b1")
    started = await flow.start("b1", "comprehensive")
    corr = started.correlation_id
    assert commands(started.out) == [SPELL]

    sequence = []
    for phase in ("spellcheck", "cj_assessment", "nlp", "ai_feedback"):
        out = await flow.outcome("b1", phase, corr, processed=ids)
        sequence.append(commands(out))
        state = await flow.state("b1")
        running = [] if state.active_run is None else [p for p in state.active_run.phases if p.is_active]
        assert len(running) <= 1

    assert sequence == [[CJ], [NLP], [AIF], []]
    assert (await flow.state("b1")).history[-1].status.value == "completed_successfully"


async def test_dependent_receives_only_the_successful_outputs_of_its_dependency(flow: Flow) -> None:
    ids = await flow.ready("b1", items=4)
    started = await flow.start("b1", "nlp")

    out = await flow.outcome(
        "b1", "spellcheck", started.correlation_id, processed=ids[:3], failed=ids[3:], suffix="fixed"
    )

    assert refs(out, NLP) == [(e, f"{e}-fixed") for e in ids[:3]]


async def test_several_dependencies_intersect_with_refs_of_the_last_in_plan_order(flow: Flow) -> None:
    # Within one run nlp only gets what spellcheck processed, and an outcome may only name
    # essays sent to its phase (issue 10.3), so the dependencies' outputs can differ only
    # across runs: spellcheck is retried after nlp, and ai_feedback gets both recorded.
    ids = await flow.ready("b1", items=4)
    first = (await flow.start("b1", "nlp")).correlation_id
    await flow.outcome("b1", "spellcheck", first, processed=ids[:3], failed=ids[3:], suffix="spell")
    await flow.outcome("b1", "nlp", first, processed=ids[1:3], failed=ids[:1], suffix="nlp")
    retry = new_id()
    await flow.rt.execute(RetryPhase("b1", "spellcheck", "teacher-1"), correlation_id=retry)
    # The retried spellcheck keeps e2 and e3 only: e1 passed nlp but no longer spellcheck.
    await flow.outcome("b1", "spellcheck", retry, processed=ids[2:], failed=ids[:2], suffix="spell2")

    out = await flow.request("b1", "ai_feedback")

    # Essays that succeeded in both (e2), with the refs of nlp, the last in plan order.
    assert refs(out, AIF) == [(ids[2], f"{ids[2]}-nlp")]


async def test_correlation_id_flows_to_everything_the_run_emits(flow: Flow) -> None:
    ids = await flow.ready("b1")
    first = await flow.start("b1", "cj_assessment")
    await flow.outcome("b1", "spellcheck", first.correlation_id, processed=ids)
    await flow.outcome("b1", "cj_assessment", first.correlation_id, processed=ids)

    corr = new_id()
    out: list[Message] = []
    started = await flow.start("b1", "ai_feedback", correlation_id=corr)
    out += started.out
    out += await flow.outcome("b1", "nlp", corr, failed=ids)

    # Pruned spellcheck, started notice, nlp command, dependency skip, completion, final notice.
    assert topics(out) == [SKIPPED, NOTIFY, NLP, SKIPPED, COMPLETED, NOTIFY]
    assert started.correlation_id == corr
    for message in out:
        value = message["value"]
        assert value["correlation_id"] == corr, message["topic"]
        if "correlation_id" in value["data"]:
            assert value["data"]["correlation_id"] == corr, message["topic"]


async def test_a_root_phase_with_no_essays_is_skipped_not_sent_empty(flow: Flow) -> None:
    # Content provisioning may name no essays at all (every upload failed): no worker gets
    # an empty command; the root is skipped like any phase left without items.
    await flow.register("b1", items=2)
    await flow.rt.deliver(*flow.env.provisioned("b1", []))
    assert (await flow.state("b1")).status.value == "ready_for_pipeline_execution"

    started = await flow.start("b1", "nlp")

    assert commands(started.out) == []
    skipped = [(m["phase_name"], m["skip_reason"]) for m in datas(started.out, SKIPPED)]
    assert skipped == [("spellcheck", "no_essays_to_process"), ("nlp", "dependency_failed")]
    assert one(started.out, COMPLETED)["successful_essay_count"] == 0
    state = await flow.state("b1")
    assert state.status.value == "ready_for_pipeline_execution"
    assert state.active_run is None
