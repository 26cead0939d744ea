"""Rows of earlier stored layouts, made from a row this release wrote (layout 5), for tests
of what a deployment upgraded in place still holds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipeline_state._model import Run, run_key


def as_layout(document: dict[str, Any], layout: int, runs: Sequence[Run]) -> dict[str, Any]:
    """The layout-5 ``document`` of a batch whose archived runs are ``runs`` as a release
    writing ``layout`` (2 or 3) stored it: ``past`` listed the runs' correlation ids and, in
    layout 3, their keys, instead of counting them, and kept no aliases (``answered``,
    ``reported``: those of ``document`` are dropped)."""
    if layout not in (2, 3):
        raise ValueError(f"layout {layout}: only 2 and 3 listed the runs' ids")
    past = document["past"]
    assert document["schema"] == 5
    assert past["count"] == len(runs), (past["count"], len(runs))
    old: dict[str, Any] = {
        "correlations": [run.correlation_id for run in runs],
        "accepted": past["accepted"],
        "recorded": past["recorded"],
    }
    if layout == 3:
        old["runs"] = ",".join(run_key(run.run_id) for run in runs)
    return {**document, "schema": layout, "past": old}
