"""The value objects' compiled evolvers build exactly what ``attrs.evolve`` builds."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import attrs
import pytest

from pipeline_state._lifecycle import BatchStatus, PhaseStatus, RunStatus
from pipeline_state._model import BatchState, ItemRef, PhaseRun, Run, evolve, evolver

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
