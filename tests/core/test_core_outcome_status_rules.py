"""Outcomes whose status and item lists disagree, and steps done without outputs: what is
recorded and what later runs prune (CONTRACT 2, "Completion" and pruning)."""

from __future__ import annotations

from typing import Any

from core_flow import Flow, one

from pipeline_state.errors import PipelineStateError
from pipeline_state.profiles.huleedu.events import Topic

COMPLETED = Topic.PIPELINE_COMPLETED.value


def _counts(done: dict[str, Any]) -> tuple[int, int]:
    return done["successful_essay_count"], done["failed_essay_count"]


async def test_a_success_outcome_naming_failed_essays_is_no_clean_success(flow: Flow) -> None:
    """Was a defect (found by an attack on pipeline DAGs).

    Expected: an outcome ``completed_successfully`` that lists failed essays is either
    refused as contradictory, or recorded as the partial success it is (CONTRACT 5: the
    library closes "partial success was recorded as success"); a run in which an essay
    failed never ends ``completed_successfully``. Actual: the phase is recorded
    ``completed_successfully`` with 1 failed essay, and the run completes
    ``completed_successfully`` with ``failed_essay_count`` 1 (the status is mapped from
    ``phase_status`` alone: ``progress.OUTCOME_TRIGGERS``, ``_decide/progress.py:29``;
    ``items_sent`` checks only which ids are named)."""
    ids = await flow.ready("b1")
    corr = (await flow.start("b1", "nlp")).correlation_id
    try:
        await flow.outcome(
            "b1", "spellcheck", corr, processed=ids[:2], failed=ids[2:], status="completed_successfully"
        )
    except PipelineStateError:
        state = await flow.state("b1")
        assert state.active_run is not None
        assert state.active_run.phase_statuses["spellcheck"] == "dispatch_initiated"
        return  # refused: fine
    out = await flow.outcome("b1", "nlp", corr, processed=ids[:2])
    done = one(out, COMPLETED)
    assert _counts(done) == (2, 1)
    assert done["phase_results"]["spellcheck"]["status"] != "completed_successfully"
    assert done["final_status"] == "completed_with_failures", done["final_status"]


async def test_a_partial_success_that_processed_nothing_is_not_pruned_for_ever(flow: Flow) -> None:
    """Was a defect (found by an attack on pipeline DAGs).

    Expected: a phase whose worker said ``completed_with_failures`` but processed no essay
    produced nothing a later run could reuse: the next request runs it again (CONTRACT 2:
    only completed steps are pruned, their *processed* essays go on; "failed ... steps are
    never pruned"). Actual: it is pruned as ``already_completed`` with no recorded outputs,
    so every later request of the pipeline skips all its other phases with
    ``no_essays_to_process`` and completes ``failed_critically`` at once, reporting 0
    successful and 0 failed essays for a 3-essay batch: the batch can never run the
    pipeline again (``Pipeline.plan`` prunes every name in ``session.recorded()``, which
    keeps a partial success with empty outputs: ``_catalog.py:315``)."""
    ids = await flow.ready("b1")
    corr = (await flow.start("b1", "nlp")).correlation_id
    out = await flow.outcome("b1", "spellcheck", corr, failed=ids, status="completed_with_failures")
    assert one(out, COMPLETED)["final_status"] == "failed_critically"

    started = await flow.start("b1", "nlp")
    spell = [m for m in started.out if m["topic"] == Topic.SPELLCHECK.value]
    done = [m["value"]["data"] for m in started.out if m["topic"] == COMPLETED]
    assert spell, f"spellcheck was not sent again; the run ended at once: {done}"


async def test_a_phase_a_worker_failed_counts_every_item_it_was_given_as_failed(flow: Flow) -> None:
    """Was a defect (found by an attack on pipeline DAGs).

    Expected: a phase that ends ``failed`` passes no essay on, so its ``phase_results``
    say 0 successful and every essay it was given failed - as a timeout and an operator's
    reported failure already do (CHANGELOG: "counts every item the phase was given as
    failed ... ``phase_results`` said the failed phase handled nothing"), and as the run's
    ``failed_essay_count`` (3) says. Actual: for a worker's ``failed_critically`` the
    figures are taken from the outcome's lists as given: naming nothing gives
    ``{"status": "failed", "successful": 0, "failed": 0}``; naming two essays processed
    and one failed gives ``successful: 2, failed: 1`` for a phase from which nothing went
    on (``HuleEduOutbound.completed``, ``pipeline_state/profiles/huleedu/outbound.py:121``;
    ``progress.outcome`` records ``outputs``/``failed_item_ids`` verbatim for ``fail``)."""
    ids = await flow.ready("b1")
    corr = (await flow.start("b1", "nlp")).correlation_id
    out = await flow.outcome("b1", "spellcheck", corr, processed=[], failed=[], status="failed_critically")
    done = one(out, COMPLETED)
    assert done["final_status"] == "failed_critically"
    assert _counts(done) == (0, 3)
    spell = done["phase_results"]["spellcheck"]
    assert spell["status"] == "failed"
    assert (spell["successful"], spell["failed"]) == (0, 3), spell

    ids = await flow.ready("b2")
    corr = (await flow.start("b2", "nlp")).correlation_id
    out = await flow.outcome(
        "b2", "spellcheck", corr, processed=ids[:2], failed=ids[2:], status="failed_critically"
    )
    done = one(out, COMPLETED)
    assert _counts(done) == (0, 3)
    spell = done["phase_results"]["spellcheck"]
    assert (spell["successful"], spell["failed"]) == (0, 3), spell


def test_a_stored_past_listing_a_step_without_outputs_does_not_prune_it() -> None:
    """A state stored before steps done without outputs were left out of ``Past.recorded``
    may still list one: it is not among the recorded outputs that pruning reads."""
    from pipeline_state._model import ItemRef, Past

    ref = ItemRef("e1", "t1")
    past = Past(recorded=(("spellcheck", ()), ("nlp", (ref,))))
    assert past.recorded_outputs() == {"nlp": (ref,)}
