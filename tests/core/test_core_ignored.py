"""Duplicate, stale, early and impossible outcomes: ignored with a reason or rejected, and in
every case nothing changes and nothing is emitted."""

from __future__ import annotations

import pytest
from core_flow import Flow, new_id, one

from pipeline_state import CancelBatch, CancelRun
from pipeline_state.errors import UnknownPipelineError
from pipeline_state.profiles.huleedu.events import Topic


async def _nlp_run(flow: Flow) -> tuple[list[str], str]:
    ids = await flow.ready("b1")
    started = await flow.start("b1", "nlp")
    return ids, started.correlation_id


async def test_redelivered_outcome_has_no_effect(flow: Flow) -> None:
    ids, corr = await _nlp_run(flow)
    topic, value = flow.env.outcome("b1", "spellcheck", corr, processed=ids)
    assert await flow.rt.deliver(topic, value) != []
    before = await flow.state("b1")
    pending = await flow.rt.store.pending_count()
    published = len(flow.rt.bus.messages())

    assert await flow.rt.deliver(topic, value) == []

    assert await flow.state("b1") == before
    assert await flow.rt.store.pending_count() == pending
    assert len(flow.rt.bus.messages()) == published


async def test_repeat_of_an_applied_outcome_with_a_fresh_event_id_is_ignored(flow: Flow) -> None:
    ids, corr = await _nlp_run(flow)
    await flow.outcome("b1", "spellcheck", corr, processed=ids)
    before = await flow.state("b1")
    topic, value = flow.env.outcome("b1", "spellcheck", corr, processed=ids)

    assert await flow.rt.deliver(topic, value) == []

    assert await flow.state("b1") == before
    assert await flow.inbox_result(value["event_id"]) == "ignored:duplicate_outcome"


async def test_repeat_of_the_final_outcome_does_not_complete_twice(flow: Flow) -> None:
    ids, corr = await _nlp_run(flow)
    await flow.outcome("b1", "spellcheck", corr, processed=ids)
    out = await flow.outcome("b1", "nlp", corr, processed=ids)
    one(out, Topic.PIPELINE_COMPLETED.value)
    before = await flow.state("b1")
    topic, value = flow.env.outcome("b1", "nlp", corr, processed=ids)

    assert await flow.rt.deliver(topic, value) == []

    assert await flow.state("b1") == before
    assert await flow.inbox_result(value["event_id"]) == "ignored:no_active_run"
    assert len(flow.rt.bus.messages(Topic.PIPELINE_COMPLETED.value)) == 1


async def test_outcome_of_an_older_run_is_ignored_as_stale(flow: Flow) -> None:
    ids, old = await _nlp_run(flow)
    await flow.rt.execute(CancelRun("b1"))
    new = (await flow.start("b1", "nlp")).correlation_id
    assert new != old
    before = await flow.state("b1")
    topic, value = flow.env.outcome("b1", "spellcheck", old, processed=ids)

    assert await flow.rt.deliver(topic, value) == []

    assert await flow.state("b1") == before
    assert await flow.inbox_result(value["event_id"]) == "ignored:stale_run"
    # The current run still takes its own outcome.
    out = await flow.outcome("b1", "spellcheck", new, processed=ids)
    assert one(out, Topic.NLP.value)["batch_id"] == "b1"


@pytest.mark.parametrize(
    ("phase", "reason"),
    [
        pytest.param("cj_assessment", "phase_not_in_run", id="phase-not-in-run"),
        # An outcome for a phase not dispatched yet waits for the dispatch instead (issue 11):
        # tests/core/test_core_waiting.py.
    ],
)
async def test_outcome_for_a_phase_that_is_not_active_is_ignored(flow: Flow, phase: str, reason: str) -> None:
    ids, corr = await _nlp_run(flow)
    before = await flow.state("b1")
    topic, value = flow.env.outcome("b1", phase, corr, processed=ids)

    assert await flow.rt.deliver(topic, value) == []

    assert await flow.state("b1") == before
    assert await flow.inbox_result(value["event_id"]) == f"ignored:{reason}"


async def test_outcome_for_a_batch_that_can_never_run_again_is_ignored(flow: Flow) -> None:
    # A ready batch could still start the outcome's run (it waits: test_core_waiting);
    # a cancelled one never will.
    ids = await flow.ready("b1")
    await flow.rt.execute(CancelBatch("b1"))
    before = await flow.state("b1")
    topic, value = flow.env.outcome("b1", "spellcheck", new_id(), processed=ids)

    assert await flow.rt.deliver(topic, value) == []

    assert await flow.state("b1") == before
    assert await flow.inbox_result(value["event_id"]) == "ignored:no_active_run"


async def test_outcome_for_an_unknown_phase_raises_and_changes_nothing(flow: Flow) -> None:
    ids, corr = await _nlp_run(flow)
    before = await flow.state("b1")
    pending = await flow.rt.store.pending_count()
    topic, value = flow.env.outcome("b1", "astrology", corr, processed=ids)

    with pytest.raises(UnknownPipelineError) as caught:
        await flow.rt.deliver(topic, value)

    assert caught.value.name == "astrology"
    assert caught.value.kind == "phase"
    assert caught.value.batch_id == "b1"
    assert await flow.state("b1") == before
    assert await flow.rt.store.pending_count() == pending
    assert await flow.inbox_result(value["event_id"]) is None


async def test_outcome_for_an_unknown_batch_waits_and_creates_nothing(flow: Flow) -> None:
    # Issue 11: an outcome for a batch not registered yet waits (it used to raise).
    topic, value = flow.env.outcome("ghost", "spellcheck", new_id(), processed=["e1"])

    assert await flow.rt.deliver(topic, value) == []

    assert flow.rt.store.batch_count() == 0
    assert await flow.rt.store.pending_count() == 0
    assert await flow.inbox_result(value["event_id"]) == "deferred:batch_registration"
