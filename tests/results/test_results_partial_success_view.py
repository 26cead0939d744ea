"""The read model shows an outcome as the engine applies it: a ``completed_successfully``
outcome that names failed items is a partial success."""

from __future__ import annotations

from typing import Any

import pytest

from tests.results_platform import ResultsPlatform

pytestmark = pytest.mark.timeout(60)


async def test_a_success_naming_failed_items_shows_as_the_partial_success_the_engine_applied() -> None:
    """Was a defect (found by a review of the engine's rule for such outcomes).

    Expected (results/model.py: "the read model shows what the engine decided ... an
    outcome is shown (``in_progress``) only for a dispatched phase, as the engine applies
    it"): while ``cj_assessment`` runs, spellcheck's outcome ``completed_successfully`` that
    names two of three essays failed is shown with the status the engine gave the phase,
    ``completed_with_partial_success``.

    Actual: the engine records ``completed_with_partial_success``
    (pipeline_state/_decide/progress.py:68-71), while the projection maps the worker's
    ``phase_status`` as is (pipeline_state/profiles/huleedu/results/projection.py:181,
    ``OUTCOME_STATUS[payload.phase_status]``): the batch view (``phases`` and
    ``in_progress``) shows spellcheck ``completed_successfully`` with two failed essays
    until the run completes. Fix: in ``fact_from_message``, a ``completed_successfully``
    outcome naming failed items is a ``COMPLETED_WITH_PARTIAL_SUCCESS`` outcome (and a
    ``failed_critically`` one's figures are 0 successful, as the engine counts them)."""
    p = ResultsPlatform()
    ids = await p.ready_batch("b1")
    assert len(ids) >= 2
    corr = await p.start("b1", "cj_assessment")
    p.rt.clock.advance(2)
    await p.outcome(
        "b1", "spellcheck", corr, processed=ids[:1], failed=ids[1:], status="completed_successfully"
    )
    snap: dict[str, Any] = await p.rt.snapshot("b1")
    engine = snap["active_run"]["phases"]["spellcheck"]
    assert engine == "completed_with_partial_success", snap
    view = await p.queries.batch_json("b1")
    assert view is not None
    assert view["status"] == "processing"
    shown = (view["phases"]["spellcheck"]["status"], [o["status"] for o in view["in_progress"]])
    assert shown == (engine, [engine]), shown
