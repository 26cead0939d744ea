"""Which run an action targets and the idempotency key it runs under, shared by the store
route and the HTTP route of ``run cancel`` and ``phase retry`` (so both key a repeat alike)."""

from __future__ import annotations

from .exits import ExitCode, OperatorError
from .session import action_event_id

__all__ = ["cancel_key", "cancel_target", "check_active", "retry_key"]


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


def cancel_key(given: str | None, batch_id: str, target: str) -> str:
    """The event id (idempotency key) of cancelling run ``target``."""
    return action_event_id(given, "run-cancel", batch_id, target)


def retry_key(given: str | None, batch_id: str, phase: str, last_finished: str | None) -> str:
    """The event id (idempotency key) of retrying ``phase`` after the run ``last_finished``."""
    return action_event_id(given, "phase-retry", batch_id, phase, last_finished or "-")
