"""The time a store files a batch under for the deadline sweep (``overdue_batches``)."""

from __future__ import annotations

from datetime import datetime, timedelta

from ._model import BatchState
from .ports import CLOCK_STEP_HORIZON_SECONDS

__all__ = ["next_deadline"]


def next_deadline(state: BatchState) -> datetime | None:
    """The earliest deadline among the active phases of the active run, if any.

    A deadline further ahead of the state's ``updated_at`` (the writer's clock) than the
    phase's own span (once more per re-send: a re-send is no progress, so it leaves
    ``updated_at`` where it was and sets the deadline a span after the sweep that re-sent)
    and :data:`~pipeline_state.ports.CLOCK_STEP_HORIZON_SECONDS` allow is filed at
    ``updated_at`` plus that allowance instead. Either a process whose clock was
    ahead set it (the ``overdue`` guard then counts it as passed once a true clock reaches
    the filed time: filed at the far time, the run would block its batch until then, as the
    sweep's other way to such runs, a state changed ahead of the reader's clock, no longer
    finds it after a true-clock write), or this writer's clock is behind by more than the
    horizon (the sweep then finds the batch before its true deadline, for at most as long
    as that clock was behind, and leaves it until the deadline passes)."""
    run = state.active_run
    if run is None:
        return None
    due: datetime | None = None
    for phase in run.phases:
        at = phase.deadline_at
        if at is None or not phase.is_active:
            continue
        allowed = state.updated_at + timedelta(
            seconds=(phase.deadline_seconds or 0) * (1 + phase.resends) + CLOCK_STEP_HORIZON_SECONDS
        )
        if at > allowed:
            at = allowed
        if due is None or at < due:
            due = at
    return due
