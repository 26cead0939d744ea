"""Answers rebuilt from what the core stored, for requests repeated with an Idempotency-Key.

A repeated key and body reach the same inbox entry, so the core does nothing the second
time and returns a duplicate result. The original answer is then rebuilt from stored
facts: the inbox entry's result (``applied``, ``ignored:<why>``, ``denied:<reason>``) and
the run the request moved and the correlation id it was handled with, which the batch's
transition log names by the request's event id; without a log, the run whose id is derived from the event id
(``derive_id(event_id, "run")``) for accepted requests, or found by its completion time for a
cancellation.
"""

from __future__ import annotations

import inspect
from datetime import UTC, datetime
from typing import Any

from pipeline_state._decide import Decision, derive_id
from pipeline_state._lifecycle import RunStatus
from pipeline_state._model import BatchState, Run
from pipeline_state.ports import InboxEntry

from .errors import PipelineDeniedError

__all__ = [
    "decided_run",
    "denial_of",
    "find_run",
    "logged_correlation",
    "logged_run",
    "logged_run_id",
    "run_of_cancellation",
    "run_of_event",
]


def find_run(state: BatchState | None, run_id: str | None) -> Run | None:
    """The active or archived run called ``run_id``."""
    if state is None or run_id is None:
        return None
    return next((run for run in state.runs() if run.run_id == run_id), None)


def decided_run(decision: Decision) -> Run | None:
    """The run a decision accepted or affected: still active, or archived by the decision
    itself (a run pruned whole completes at once)."""
    archived = (run for run in decision.archived if run.run_id == decision.run_id)
    return find_run(decision.state, decision.run_id) or next(archived, None)


def run_of_event(state: BatchState | None, event_id: str) -> Run | None:
    """The run an accepted request (pipeline, retry, recorded completion) started."""
    return find_run(state, derive_id(event_id, "run"))


async def logged_run_id(store: object, batch_id: str, event_id: str) -> str | None:
    """The run ``event_id`` moved, as the first row of the batch's transition log that names
    both says; ``None`` when the store keeps no log or no row names a run."""
    run_id, _ = await logged_run(store, batch_id, event_id, "")
    return run_id


async def logged_run(
    store: object, batch_id: str, event_id: str, correlation_id: str
) -> tuple[str | None, str]:
    """The run ``event_id`` moved and the correlation id it was handled with, as the first
    row of the batch's transition log that names both says; ``(None, correlation_id)`` when
    the store keeps no log or no row names a run."""
    for row in await _log(store, batch_id, event_id):
        if row.event_id == event_id and row.run_id is not None:
            return str(row.run_id), str(row.correlation_id)
    return None, correlation_id


async def logged_correlation(store: object, batch_id: str, event_id: str, correlation_id: str) -> str:
    """The correlation id ``event_id`` was handled with, as the first row of the batch's
    transition log it moved says (a registration moves no run, so :func:`logged_run` finds
    none); ``correlation_id`` when the store keeps no log or the event moved nothing."""
    for row in await _log(store, batch_id, event_id):
        if row.event_id == event_id:
            return str(row.correlation_id)
    return correlation_id


async def _log(store: object, batch_id: str, event_id: str) -> list[Any]:
    """The batch's transition log rows that ``event_id`` wrote (all of them, for a store
    whose ``transitions`` cannot select by event); empty when the store keeps no log. By
    event: a store lists at most so many rows of a batch, the oldest, so a long log would
    hide a recent event's rows."""
    transitions = getattr(store, "transitions", None)
    if transitions is None:
        return []
    by_event = "event_id" in inspect.signature(transitions).parameters
    # the memory store answers at once, the SQL store awaits
    rows = transitions(batch_id, event_id=event_id) if by_event else transitions(batch_id)
    if inspect.isawaitable(rows):
        rows = await rows
    return list(rows)


def denial_of(entry: InboxEntry) -> PipelineDeniedError | None:
    """The denial an inbox entry recorded, if it recorded one."""
    if not entry.result.startswith("denied:"):
        return None
    reason = entry.result.removeprefix("denied:")
    detail = f"this request was denied when first made ({reason})"
    return PipelineDeniedError(reason, detail, batch_id=entry.batch_id)


def run_of_cancellation(state: BatchState | None, at: datetime) -> Run | None:
    """The cancelled run whose completion time is nearest to ``at`` (when the cancellation
    was processed: the core stamps both with the same clock reading)."""
    if state is None:
        return None
    cancelled = [r for r in state.history if r.status is RunStatus.CANCELLED and r.completed_at is not None]
    if not cancelled:
        return None
    target = _aware(at)
    return min(
        reversed(cancelled), key=lambda r: abs((_aware(r.completed_at or at) - target).total_seconds())
    )


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
