"""The three lifecycles bound to the guards and effects that implement them.

Every move of a batch, run or phase in a decision - its creation included - is made by
firing a trigger on one of :data:`BATCH`, :data:`RUN` or :data:`PHASE`; the allowed moves,
their guards and effects, and the answer to a refused trigger all come from
:mod:`pipeline_state._lifecycle`. (A phase is born in its lifecycle's initial state with its
run; a phase an operator reports done outside the engine is recorded as it was.) This
module binds names to functions and applies batch moves; the concern modules implement the
rest.

Import order: this module imports the concern modules, which refer back to it only as a
module (``from . import machines``) and read :data:`BATCH`, :data:`RUN`, :data:`PHASE` when
they fire. The package's ``__init__`` imports this module first, so any import of the
package binds the machines before a concern module runs.
"""

from __future__ import annotations

from typing import Any, TypeAlias

from pipeline_state._lifecycle import ABSENT, BatchStatus, PhaseStatus, RunStatus
from pipeline_state._machine import BATCH_MACHINE, PHASE_MACHINE, RUN_MACHINE, BoundMachine, Option, Refused
from pipeline_state._model import evolve

from . import admission, completion, intake, progress, run
from .context import BatchCtx, PhaseCtx, RunCtx
from .journal import Move

__all__ = [
    "BATCH",
    "PHASE",
    "RUN",
    "Fired",
    "PhaseOption",
    "Refused",
    "RunOption",
    "fire_batch",
    "require",
]

BatchOption: TypeAlias = Option[BatchCtx]
RunOption: TypeAlias = Option[RunCtx]
PhaseOption: TypeAlias = Option[PhaseCtx]
Fired: TypeAlias = Option[BatchCtx] | Option[RunCtx] | Option[PhaseCtx] | Refused


def _apply_batch(ctx: BatchCtx, option: BatchOption) -> None:
    session = ctx.session
    if option.creates:
        assert ctx.fresh is not None
        fresh = ctx.fresh
        if fresh.status != option.status:
            fresh = evolve(fresh, status=option.status)
        session.state = fresh
        session.journal.move(Move("batch", fresh.batch_id, option.trigger, ABSENT, option.dest))
        return
    session.change(status=option.status)
    session.journal.move(Move("batch", session.batch_id, option.trigger, option.source, option.dest))


def fire_batch(ctx: BatchCtx, trigger: str, *, absent: bool = False) -> Option[BatchCtx] | Refused:
    """Fire a batch ``trigger`` from the batch's status, or from ``ABSENT`` when the batch
    does not exist yet (``absent``, or a registration's fresh state in ``ctx``)."""
    source = ABSENT if absent or ctx.fresh is not None else ctx.session.status.value
    return BATCH.fire(ctx, source, trigger, _apply_batch, ctx.session.profile.state_names)


def require(fired: Option[Any] | Refused, batch_id: str | None) -> None:
    """Raise the :class:`~pipeline_state.errors.IllegalTransitionError` of a trigger that had
    to fire: an operator's command the state does not allow, or an effect's inner trigger
    (refused there only by a bug or a corrupt state)."""
    if isinstance(fired, Refused):
        raise fired.error(batch_id)


BATCH: BoundMachine[BatchCtx] = BATCH_MACHINE.bind(
    guards={
        "items_within_limit": intake.items_within_limit,
        "items_registered": intake.items_registered,
        "no_active_run": admission.no_active_run,
        "fresh_correlation": admission.fresh_correlation,
        "plan_resolved": admission.plan_resolved,
        "admitted": admission.admitted,
    },
    effects={
        "announce_registration": intake.announce_registration,
        "keep_items": intake.keep_items,
        "request_matching": intake.request_matching,
        "attach_prompt": admission.attach_prompt,
        "accept_run": admission.accept_run,
        "cancel_active_run": completion.cancel_active_run,
        "fail_active_run": completion.fail_active_run,
    },
    status=BatchStatus,
)
"""The batch lifecycle, bound."""

RUN: BoundMachine[RunCtx] = RUN_MACHINE.bind(
    guards={
        "all_succeeded": completion.all_succeeded,
        "final_step_done": completion.final_step_done,
        "batch_idle": progress.batch_idle,
        "dependencies_recorded": progress.dependencies_recorded,
    },
    effects={
        "plan_phases": run.plan_phases,
        "announce_pruned": run.announce_pruned,
        "notify_started": run.notify_started,
        "advance": run.advance,
        "cancel_open_phases": run.cancel_open_phases,
        "emit_completion": completion.emit_completion,
        "notify_completion": completion.notify_completion,
        "archive_run": completion.archive_run,
        "release_batch": completion.release_batch,
    },
    status=RunStatus,
)
"""The run lifecycle, bound."""

PHASE: BoundMachine[PhaseCtx] = PHASE_MACHINE.bind(
    guards={
        "inputs_ready": run.inputs_ready,
        "below_parallel_limit": run.below_parallel_limit,
        "has_inputs": run.has_inputs,
        "lacks_inputs": run.lacks_inputs,
        "items_sent": run.items_sent,
        "overdue": run.overdue,
        "resends_left": run.resends_left,
    },
    effects={
        "prepare_command": run.prepare_command,
        "prepare_skip": run.prepare_skip,
        "send_command": run.send_command,
        "resend_command": run.resend_command,
        "announce_skip": run.announce_skip,
        "skip_dependents": run.skip_dependents,
        "advance": run.advance,
    },
    status=PhaseStatus,
)
"""The phase lifecycle, bound."""
