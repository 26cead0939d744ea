"""The pipeline's unit of work: one :class:`~pipeline_state.ports.Change` written in one transaction.

It is an instance of the generic engine (:class:`~pipeline_state_sql.unit_of_work.UnitOfWork`)
on the ``batches`` document table and the ``inbox`` table. :func:`write_change` (and
:func:`write_changes`, several changes in order, for ``commit_many``) runs inside a
transaction the caller opened and rolls nothing back itself: any exception leaves the
transaction to be rolled back whole. In order, it

1. compare-and-sets the batch row: ``INSERT`` when ``expected_version`` is ``None`` (a
   conflict when the row exists), otherwise ``UPDATE ... WHERE batch_id = :id AND
   version = :read``; when there is no new state it still runs a no-op
   ``UPDATE ... SET version = version WHERE batch_id = :id [AND version = :read]`` (which
   also takes the row lock), so a decision taken on a stale read never commits. An
   unexpected row count raises :class:`~pipeline_state.errors.ConcurrencyConflictError`;
2. records the inbox row (``ON CONFLICT DO NOTHING``; zero rows means the event was
   processed already: :class:`~pipeline_state.errors.DuplicateEventError`);
3. appends the outbox rows, the transition log rows and the runs the change archived
   (``change.archived``, at the positions ``state.past`` counts);
4. keeps a deferred fact in ``waiting`` (``change.waiting``), or removes the waiting fact a
   change re-attempts (``change.resolves``: exactly one row, else another writer resolved
   it first: :class:`~pipeline_state.errors.ConcurrencyConflictError`) and *updates* its
   inbox row instead of inserting one; re-queues the outbox rows of ``change.republish``
   (same row, same event id: unpublished, unparked, attempts reset, due now).

:func:`write_changes` runs the compare-and-sets one per change, in order, then writes the
rows of steps 2 and 3 of all changes with one statement per table (a sequence with a change
of step 4, which is rare, is written change by change).

On PostgreSQL, steps 1 to 3 of a change are one statement, and so are those of all the
changes of :func:`write_changes` when each batch's changes follow one another
(:mod:`pipeline_state_sql.one_statement`). :func:`write_alone` sends that statement on a
connection in autocommit (no ``BEGIN``, no ``COMMIT``: the statement is its own
transaction), refusing rather than writing part of it. On SQLite, :func:`write_changes` (one change or
several) then sends the compare-and-sets of all batches as one ``UPDATE``
(:mod:`pipeline_state_sql.sqlite_many`) and the other rows with the ``COMMIT``.

Statements are ordered so the row lock on the batch is taken first: two writers of the
same batch serialise on it, and the loser sees a changed version.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, delete, insert, true, update

from pipeline_state._deadline_index import next_deadline
from pipeline_state._model import BatchState
from pipeline_state.ports import Change

from .codec import encode_run, state_text, stored_status
from .one_statement import Refused
from .outbox import OutboxLease
from .schema import BATCHES, INBOX, OUTBOX, RUNS, TRANSITIONS, WAITING
from .unit_of_work import Rows, UnitOfWork

__all__ = ["PIPELINE", "write_alone", "write_change", "write_changes"]


def _state_columns(state: BatchState, _change: Change) -> dict[str, Any]:
    return {
        "status": stored_status(state.status),
        "version": state.version,
        "state": state_text(state),
        "next_deadline_at": next_deadline(state),
        "updated_at": state.updated_at,
    }


def _created(state: BatchState, _change: Change) -> dict[str, Any]:
    return {"created_at": state.created_at}


def _state(change: Change) -> BatchState | None:
    return change.state


PIPELINE: UnitOfWork[Change, BatchState] = UnitOfWork(
    documents=BATCHES, document=_state, columns=_state_columns, created=_created, inbox=INBOX
)
"""The engine on the pipeline's tables."""

# Statements are built once: building one costs several times what executing it does.
_INSERT_LOG = insert(TRANSITIONS)
_INSERT_RUNS = insert(RUNS)
_INSERT_WAITING = insert(WAITING)
_DELETE_WAITING = delete(WAITING).where(WAITING.c.event_id == bindparam("e_id"))
_REWAIT = update(WAITING).where(WAITING.c.event_id == bindparam("e_id")).values(waits_for=bindparam("w"))
_REQUEUE = (
    update(OUTBOX)
    .where(OUTBOX.c.event_id.in_(bindparam("ids", expanding=True)))
    .values(
        published_at=None,
        parked=False,
        attempts=0,
        last_error=None,
        available_at=bindparam("now"),
        claimed_until=None,
        claimed_by=None,
    )
)

_UNPARK = _REQUEUE.where(OUTBOX.c.parked == true())
"""An operator's republish: only the rows still parked (``Change.unpark``)."""


def _log_rows(change: Change) -> list[dict[str, Any]]:
    return [
        {
            "batch_id": t.batch_id,
            "entity": t.entity,
            "name": t.name,
            "trigger": t.trigger,
            "source": t.source,
            "dest": t.dest,
            "run_id": t.run_id,
            "event_id": t.event_id,
            "correlation_id": t.correlation_id,
            "at": t.at,
            "note": t.note,
            "requested_by": t.requested_by,
        }
        for t in change.transitions
    ]


def _run_rows(change: Change) -> list[dict[str, Any]]:
    state = change.state
    if state is None or not change.archived:
        return []
    first = state.past.count - len(change.archived)  # the runs archived before this change
    return [
        {
            "batch_id": state.batch_id,
            "seq": first + offset,
            "run_id": run.run_id,
            "pipeline_name": run.pipeline_name,
            "final_status": run.status.value,
            "correlation_id": run.correlation_id,
            "accepted_at": run.accepted_at,
            "completed_at": run.completed_at,
            "document": encode_run(run),
        }
        for offset, run in enumerate(change.archived)
    ]


def _change_rows(change: Change) -> Rows:
    """The rows of step 3 beyond the outbox's."""
    return ((_INSERT_LOG, _log_rows(change)), (_INSERT_RUNS, _run_rows(change)))


def _rows(_conn: Connection, change: Change) -> Rows:
    return _change_rows(change)


def _waiting_rows(conn: Connection, change: Change) -> None:
    """Step 4 of the module doc: the waiting set and re-queued outbox rows."""
    if change.resolves is not None and conn.execute(_DELETE_WAITING, {"e_id": change.resolves}).rowcount != 1:
        raise PIPELINE.conflict(conn, change)
    fact = change.waiting
    if fact is not None:
        row = {
            "event_id": fact.event_id,
            "topic": fact.topic,
            "batch_id": fact.batch_id,
            "raw": fact.raw,
            "waits_for": fact.waits_for,
            "arrived_at": fact.arrived_at,
        }
        conn.execute(_INSERT_WAITING, row)
    if change.rewaits:
        conn.execute(_REWAIT, [{"e_id": event_id, "w": waits_for} for event_id, waits_for in change.rewaits])
    if change.republish:
        conn.execute(_REQUEUE, {"ids": list(change.republish), "now": change.at})
    if change.unpark:
        conn.execute(_UNPARK, {"ids": list(change.unpark), "now": change.at})


def _special(change: Change) -> bool:
    return (
        change.waiting is not None
        or change.resolves is not None
        or bool(change.rewaits)
        or bool(change.republish)
        or bool(change.unpark)
    )


def write_change(conn: Connection, change: Change, lease: OutboxLease | None = None) -> None:
    """Write ``change`` on ``conn`` inside the caller's transaction (see the module doc):
    one statement on PostgreSQL unless it has a step 4
    (:meth:`~pipeline_state_sql.unit_of_work.UnitOfWork.write_rows`); ``lease``: its
    outbox rows are written for the relay of this process (hand-off)."""
    if not _special(change):
        PIPELINE.write_rows(conn, change, list(_rows(conn, change)), lease)
        return

    def then(conn: Connection, change: Change) -> None:
        for statement, rows in _rows(conn, change):
            if rows:
                conn.execute(statement, rows)
        if _special(change):
            _waiting_rows(conn, change)

    PIPELINE.write(conn, change, then, replaces=change.resolves, lease=lease)


def write_changes(conn: Connection, changes: Sequence[Change], lease: OutboxLease | None = None) -> None:
    """Write ``changes`` in order on ``conn`` inside the caller's one transaction, with
    :meth:`~pipeline_state_sql.unit_of_work.UnitOfWork.write_many` (one statement per
    table; the error raised is the one :func:`write_change` would have raised first,
    change after change), or change by change when one has a step 4."""
    # One change: PostgreSQL writes it in one statement (write_change); SQLite as many.
    if (len(changes) == 1 and conn.dialect.name != "sqlite") or any(_special(c) for c in changes):
        for change in changes:
            write_change(conn, change, lease)
        return
    PIPELINE.write_many_rows(conn, changes, _change_rows, lease)


def write_alone(conn: Connection, changes: Sequence[Change], lease: OutboxLease | None = None) -> bool:
    """Write ``changes`` on PostgreSQL as one statement that is its own transaction (``conn``
    in autocommit, see :func:`pipeline_state_sql.lanes.alone`): ``True`` when it wrote them
    all; ``False`` when nothing was written: they do not fit one statement (a change of
    step 4, an event twice, changes of a batch that do not follow one another), or the
    database refused the statement (a compare-and-set lost, an event already processed:
    :class:`~pipeline_state_sql.one_statement.Refused`). After ``False``,
    :func:`write_changes` in a transaction writes them or raises the exact error.
    With a ``lease``, leased rows that an older row of their key holds back are released by
    a second statement after the first committed; should that one fail, they wait for the
    lease to expire and are claimed then, as after a crash."""
    if any(_special(c) for c in changes):
        return False
    try:
        if len(changes) == 1:
            PIPELINE.write_rows(conn, changes[0], list(_change_rows(changes[0])), lease, alone=True)
            return True
        return PIPELINE.write_many_alone(conn, changes, _change_rows, lease)
    except Refused:
        return False
