"""The diagrams of one batch, drawn from its state with the core's Mermaid generators.

``batch``: the batch lifecycle with the current status highlighted; ``run``: the run
lifecycle with the shown run's status highlighted; ``phases``: the shown run's step DAG
with each phase's status (steps pruned from it appear as ``already_completed``). The
shown run is the active one, else the latest archived one.

Text that comes from a request (the batch id, names) is written through :func:`mermaid_text`:
every character but letters, digits and plain punctuation becomes a Mermaid entity code
(``#60;`` for ``<``), so it can neither open a Mermaid directive (``%%{...}%%``) nor carry
markup into a page that renders the diagram.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import attrs

from pipeline_state._catalog import Catalog
from pipeline_state._diagrams import StepLike, lifecycle_mermaid, pipeline_mermaid
from pipeline_state._lifecycle import BATCH_LIFECYCLE, RUN_LIFECYCLE
from pipeline_state._model import BatchState, Run
from pipeline_state._names import NO_RENAMES, StateNames
from pipeline_state.errors import UnknownPipelineError

__all__ = ["PRUNED", "DiagramView", "RunDag", "batch_mermaid", "mermaid_text", "run_dag", "shown_run"]

DiagramView = Literal["all", "batch", "run", "phases"]
PRUNED = "already_completed"

_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _.,:-+@()")


def mermaid_text(text: str) -> str:
    """``text`` with whitespace runs as one space and every character outside letters,
    digits and ``_.,:-+@()`` as a Mermaid entity code (``#<decimal>;``)."""
    return "".join(c if c in _PLAIN else f"#{ord(c)};" for c in " ".join(text.split()))


@attrs.frozen
class _Step:
    name: str
    depends_on: tuple[str, ...]


@attrs.frozen
class RunDag:
    """A run's steps (pruned ones first, then the planned ones) and each step's status."""

    name: str
    steps: Sequence[StepLike]
    statuses: dict[str, str]


def shown_run(state: BatchState) -> Run | None:
    """The active run, else the most recent archived run."""
    if state.active_run is not None:
        return state.active_run
    return state.history[-1] if state.history else None


def run_dag(run: Run, catalog: Catalog) -> RunDag:
    """The step DAG of ``run`` with statuses, pruned steps included."""
    steps: list[StepLike] = []
    statuses: dict[str, str] = {}
    for name in run.pruned:
        try:
            depends_on = tuple(catalog.step_definition(name).depends_on)
        except UnknownPipelineError:
            depends_on = ()
        steps.append(_Step(name, depends_on))
        statuses[name] = PRUNED
    for phase in run.phases:
        steps.append(_Step(phase.name, phase.depends_on))
        statuses[phase.name] = phase.status.value
    known = {step.name for step in steps}
    trimmed = [_Step(s.name, tuple(d for d in s.depends_on if d in known)) for s in steps]
    return RunDag(run.pipeline_name, trimmed, statuses)


def batch_mermaid(
    state: BatchState, catalog: Catalog, view: DiagramView = "all", state_names: StateNames = NO_RENAMES
) -> str:
    """Mermaid text of the requested view(s); with ``all``, each diagram follows a ``%%``
    comment line naming it. Batch statuses show under the profile's ``state_names``."""
    parts: list[tuple[str, str]] = []
    if view in ("all", "batch"):
        status = state.status.value
        title = f"batch {state.batch_id}: {state_names.show(status)}"
        diagram = lifecycle_mermaid(BATCH_LIFECYCLE, highlight=[status], show=state_names.show)
        parts.append((title, diagram))
    run = shown_run(state)
    if run is not None and view in ("all", "run"):
        title = f"run {run.run_id} ({run.pipeline_name}): {run.status.value}"
        parts.append((title, lifecycle_mermaid(RUN_LIFECYCLE, highlight=[run.status.value])))
    if run is not None and view in ("all", "phases"):
        dag = run_dag(run, catalog)
        parts.append((f"phases of run {run.run_id}", pipeline_mermaid(dag, statuses=dag.statuses)))
    if view != "all":
        return parts[0][1] if parts else f"%% batch {mermaid_text(state.batch_id)} has no run yet\n"
    return "\n".join(f"%% {mermaid_text(title)}\n{text}" for title, text in parts)
