"""The value objects' compiled evolvers build exactly what ``attrs.evolve`` builds."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import attrs
import pytest

from pipeline_state._lifecycle import BatchStatus, PhaseStatus, RunStatus
from pipeline_state._model import BatchState, ItemRef, Past, PhaseRun, Run, evolve, evolver

NOW = datetime(2025, 1, 1, tzinfo=UTC)
PHASE = PhaseRun(
    "spellcheck", (), PhaseStatus.DISPATCH_INITIATED, 60.0, NOW, NOW, inputs=(ItemRef("e1", "r1"),)
)
RUN = Run("r1", "p", "c1", "u1", NOW, "spellcheck", (PHASE,))
STATE = BatchState(
    "b1", BatchStatus.PROCESSING_PIPELINES, 3, "u1", "ENG5", 1, ("e1",), NOW, NOW, active_run=RUN
)

CASES: list[tuple[Any, dict[str, Any]]] = [
    (PHASE, {"status": PhaseStatus.COMPLETED_SUCCESSFULLY, "finished_at": NOW, "outputs": (ItemRef("e1"),)}),
    (PHASE, {}),
    (RUN, {"status": RunStatus.CANCELLED, "phases": (), "completed_at": NOW}),
    (STATE, {"status": BatchStatus.READY_FOR_PIPELINE_EXECUTION, "active_run": None, "version": 4}),
]


@pytest.mark.parametrize(("inst", "changes"), CASES)
def test_evolver_builds_what_attrs_evolve_builds(inst: Any, changes: dict[str, Any]) -> None:
    expected = attrs.evolve(inst, **changes)
    for built in (evolver(type(inst))(inst, **changes), evolve(inst, **changes)):
        assert built == expected
        assert built is not inst
        assert all(getattr(built, f.name) is getattr(expected, f.name) for f in attrs.fields(type(inst)))


def test_evolver_refuses_an_unknown_field() -> None:
    with pytest.raises(TypeError):
        evolver(PhaseRun)(PHASE, no_such_field=1)


def _run(n: int) -> Run:
    at = datetime(2025, 1, 1, n, tzinfo=UTC)
    return Run(
        f"b1-run-{n}", "nlp", f"corr-{n}", "t1", at, "nlp", (), status=RunStatus.COMPLETED_SUCCESSFULLY
    )


def test_a_summary_counts_its_runs_and_lists_their_ids_while_it_knows_them() -> None:
    full = Past.of((_run(0), _run(1)))
    assert (full.count, full.correlations, full.runs) == (2, ("corr-0", "corr-1"), ("b1run0", "b1run1"))
    assert full.known
    assert full.is_archived("corr-1")
    assert full.started("b1-run-0")
    # As a store that does not keep the ids hands it out: the count, no ids; equal all the same.
    counted = attrs.evolve(full, correlations=(), runs=())
    assert counted == full
    assert not counted.known
    assert not counted.is_archived("corr-1")
    # A run archived since: listed, counted, still not known in full.
    later = counted.after(_run(2))
    assert (later.count, later.correlations) == (3, ("corr-2",))
    assert not later.known


def test_knowing_lists_the_stored_runs_then_those_archived_since() -> None:
    later = attrs.evolve(Past.of((_run(0), _run(1))), correlations=(), runs=()).after(_run(2))
    # The store read before run 2 was archived (earlier in the same group commit) lacks it.
    known = later.knowing([("b1-run-0", "corr-0"), ("b1-run-1", "corr-1")])
    assert known.correlations == ("corr-0", "corr-1", "corr-2")
    assert known.runs == ("b1run0", "b1run1", "b1run2")
    assert known.known
    # Read after: no run listed twice.
    again = known.knowing([("b1-run-0", "corr-0"), ("b1-run-1", "corr-1"), ("b1-run-2", "corr-2")])
    assert (again.correlations, again.runs) == (known.correlations, known.runs)
