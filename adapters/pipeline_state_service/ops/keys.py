"""Which run an action targets and the idempotency key it runs under, shared by the store
route and the HTTP route of ``run cancel`` and ``phase retry`` (so both key a repeat alike).

A key given with ``--event-id`` is scoped to the action and what its command line names (see
:func:`~pipeline_state_service.ops.session.action_event_id`): the same ticket number given
for two batches, or for a cancel and a retry, names two actions.
"""

from __future__ import annotations

from pipeline_state._lifecycle import BatchStatus

from .exits import ExitCode, OperatorError
from .session import action_event_id

__all__ = ["cancel_key", "cancel_target", "check_active", "retry_key", "retry_stage"]


def cancel_target(batch_id: str, given: str | None, latest: str | None) -> str:
    """The run a cancel names: ``--run``, else the batch's latest run (the active one, else
    the last finished: a repeat after the cancel names the run it cancelled)."""
    target = given or latest
    if target is None:
        raise OperatorError(ExitCode.REFUSED, f"batch {batch_id} has no run to cancel")
    return target


def check_active(batch_id: str, target: str, active: str | None) -> None:
    """Refuse a cancel whose run is not the batch's active run (exit 1 without an active
    run, 3 when another run is active)."""
    if active is None:
        raise OperatorError(ExitCode.REFUSED, f"batch {batch_id} has no active run")
    if active != target:
        raise OperatorError(
            ExitCode.NOT_FOUND, f"run {target} is not the active run of batch {batch_id} (active: {active})"
        )


def cancel_key(given: str | None, batch_id: str, run: str | None, target: str) -> str:
    """The event id (idempotency key) of cancelling run ``target`` (``run``: ``--run``, when
    given). A given key is scoped to the batch and ``--run``."""
    return action_event_id(given, "run-cancel", (batch_id, run or "-"), (batch_id, target))


_OPEN = frozenset({BatchStatus.READY_FOR_PIPELINE_EXECUTION.value, BatchStatus.PROCESSING_PIPELINES.value})
"""The batch statuses in which a retry is decided on the runs alone: ready, or running one."""


def retry_stage(status: str) -> str | None:
    """What a retry's key takes from the batch's status (the engine's name of it): nothing
    while the batch is ready or running a run (the last finished run tells those states
    apart), else the status. A retry denied before the batch was ready is then asked again,
    not repeated, once it is; a repeat in the same status stays a duplicate."""
    return None if status in _OPEN else status


def retry_key(
    given: str | None, batch_id: str, phase: str, last_finished: str | None, stage: str | None = None
) -> str:
    """The event id (idempotency key) of retrying ``phase`` after the run ``last_finished``
    at ``stage`` (:func:`retry_stage`). A given key is scoped to the batch and the phase."""
    derived = (batch_id, phase, last_finished or "-", *(() if stage is None else (stage,)))
    return action_event_id(given, "phase-retry", (batch_id, phase), derived)
