"""The unit of work: one :class:`~pipeline_state.ports.Change` written in one transaction.

:func:`write_change` (and :func:`write_changes`, several changes in order, for
``commit_many``) runs inside a transaction the caller opened and rolls nothing back
itself: any exception leaves the transaction to be rolled back whole. In order, it

1. compare-and-sets the batch row: ``INSERT`` when ``expected_version`` is ``None`` (a
   conflict when the row exists), otherwise ``UPDATE ... WHERE batch_id = :id AND
   version = :read``; when there is no new state it still runs a no-op
   ``UPDATE ... SET version = version WHERE batch_id = :id [AND version = :read]`` (which
   also takes the row lock), so a decision taken on a stale read never commits. An
   unexpected row count raises :class:`~pipeline_state.errors.ConcurrencyConflictError`;
2. records the inbox row (``ON CONFLICT DO NOTHING``; zero rows means the event was
   processed already: :class:`~pipeline_state.errors.DuplicateEventError`);
3. appends the transition log rows, the outbox rows and the runs the change archived
   (``change.archived``, at the positions ``state.past`` counts);
4. keeps a deferred fact in ``waiting`` (``change.waiting``), or removes the waiting fact a
   change re-attempts (``change.resolves``: exactly one row, else another writer resolved
   it first: :class:`~pipeline_state.errors.ConcurrencyConflictError`) and *updates* its
   inbox row instead of inserting one; re-queues the outbox rows of ``change.republish``
   (same row, same event id: unpublished, unparked, attempts reset, due now).

:func:`write_changes` runs the compare-and-sets one per change, in order, then writes the
rows of steps 2 and 3 of all changes with one statement per table (a sequence with a change
of step 4, which is rare, is written change by change).

Statements are ordered so the row lock on the batch is taken first: two writers of the
same batch serialise on it, and the loser sees a changed version.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Insert, Table, bindparam, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from pipeline_state.errors import ConcurrencyConflictError, DuplicateEventError
from pipeline_state.model import BatchState, next_deadline
from pipeline_state.ports import Change

from .codec import encode_run, encode_state
from .outbox import encode_trace_context
from .schema import BATCHES, INBOX, OUTBOX, RUNS, TRANSITIONS, WAITING

__all__ = ["write_change", "write_changes"]

# Statements are built once: building one costs several times what executing it does.
_BY_ID = BATCHES.c.batch_id == bindparam("b_id")
_AT_READ = BATCHES.c.version == bindparam("b_read")
_UPDATE_STATE = update(BATCHES).where(_BY_ID, _AT_READ)
_TOUCH_AT_READ = update(BATCHES).where(_BY_ID, _AT_READ).values(version=BATCHES.c.version)
_TOUCH_ANY = update(BATCHES).where(_BY_ID).values(version=BATCHES.c.version)
_STORED_VERSION = select(BATCHES.c.version).where(_BY_ID)
_INSERT_LOG = insert(TRANSITIONS)
_INSERT_OUTBOX = insert(OUTBOX)
_INSERT_RUNS = insert(RUNS)
_INSERT_WAITING = insert(WAITING)
_DELETE_WAITING = delete(WAITING).where(WAITING.c.event_id == bindparam("e_id"))
_REWAIT = update(WAITING).where(WAITING.c.event_id == bindparam("e_id")).values(waits_for=bindparam("w"))
_UPDATE_INBOX = (
    update(INBOX)
    .where(INBOX.c.event_id == bindparam("e_id"))
    .values(result=bindparam("i_result"), processed_at=bindparam("i_at"))
)
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


@functools.cache
def _insert_ignoring_conflicts(dialect: str, table: Table) -> Insert:
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    raise NotImplementedError(f"unsupported dialect {dialect!r}")


def _stored_version(conn: Connection, batch_id: str) -> int | None:
    return conn.execute(_STORED_VERSION, {"b_id": batch_id}).scalar()


def _state_values(state: BatchState) -> dict[str, Any]:
    return {
        "status": state.status.value,
        "version": state.version,
        "state": encode_state(state),
        "next_deadline_at": next_deadline(state),
        "updated_at": state.updated_at,
    }


def _compare_and_set(conn: Connection, change: Change) -> None:
    batch_id = change.batch_id
    state = change.state
    expected = change.expected_version
    if state is not None and (state.batch_id != batch_id or state.version <= (expected or 0)):
        raise ConcurrencyConflictError(batch_id, expected, _stored_version(conn, batch_id))
    if state is None:
        # Nothing to write, but the decision was taken on a read: verify it with a no-op
        # UPDATE (a write, so SQLite takes the write lock and PostgreSQL the row lock).
        if expected is None:
            touched = conn.execute(_TOUCH_ANY, {"b_id": batch_id}).rowcount
        else:
            touched = conn.execute(_TOUCH_AT_READ, {"b_id": batch_id, "b_read": expected}).rowcount
        if touched != (0 if expected is None else 1):
            raise ConcurrencyConflictError(batch_id, expected, _stored_version(conn, batch_id))
        return
    if expected is None:
        row = {"batch_id": batch_id, "created_at": state.created_at, **_state_values(state)}
        inserted = conn.execute(_insert_ignoring_conflicts(conn.dialect.name, BATCHES), row)
        if inserted.rowcount != 1:
            raise ConcurrencyConflictError(batch_id, None, _stored_version(conn, batch_id))
        return
    params = {"b_id": batch_id, "b_read": expected, **_state_values(state)}
    if conn.execute(_UPDATE_STATE, params).rowcount != 1:
        raise ConcurrencyConflictError(batch_id, expected, _stored_version(conn, batch_id))


def _inbox_row(change: Change) -> dict[str, Any] | None:
    entry = change.inbox
    if entry is None:
        return None
    return {
        "event_id": entry.event_id,
        "topic": entry.topic,
        "batch_id": entry.batch_id,
        "result": entry.result,
        "processed_at": entry.processed_at,
    }


def _record_inbox(conn: Connection, change: Change) -> None:
    row = _inbox_row(change)
    if row is None:
        return
    if row["event_id"] == change.resolves:
        conn.execute(
            _UPDATE_INBOX, {"e_id": row["event_id"], "i_result": row["result"], "i_at": row["processed_at"]}
        )
        return
    if conn.execute(_insert_ignoring_conflicts(conn.dialect.name, INBOX), row).rowcount != 1:
        raise DuplicateEventError(row["event_id"])


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


def _outbox_rows(change: Change) -> list[dict[str, Any]]:
    return [
        {
            "event_id": m.event_id,
            "topic": m.topic,
            "key": m.key,
            "envelope": dict(m.value),
            "created_at": change.at,
            "available_at": change.at,
            "attempts": 0,
            "parked": False,
            "trace_context": encode_trace_context(m.trace_context),
        }
        for m in change.outbox
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


def _insert_rows(conn: Connection, statement: Insert, rows: list[dict[str, Any]]) -> None:
    if rows:
        conn.execute(statement, rows)


def _waiting_rows(conn: Connection, change: Change) -> None:
    """Step 4 of the module doc: the waiting set and re-queued outbox rows."""
    if change.resolves is not None and conn.execute(_DELETE_WAITING, {"e_id": change.resolves}).rowcount != 1:
        raise ConcurrencyConflictError(
            change.batch_id, change.expected_version, _stored_version(conn, change.batch_id)
        )
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


def _special(change: Change) -> bool:
    return (
        change.waiting is not None
        or change.resolves is not None
        or bool(change.rewaits)
        or bool(change.republish)
    )


def write_change(conn: Connection, change: Change) -> None:
    """Write ``change`` on ``conn`` inside the caller's transaction (see the module doc)."""
    _compare_and_set(conn, change)
    _record_inbox(conn, change)
    _insert_rows(conn, _INSERT_LOG, _log_rows(change))
    _insert_rows(conn, _INSERT_OUTBOX, _outbox_rows(change))
    _insert_rows(conn, _INSERT_RUNS, _run_rows(change))
    if _special(change):
        _waiting_rows(conn, change)


def _one_by_one(conn: Connection, changes: Sequence[Change]) -> None:
    """``changes`` written in order with :func:`write_change`."""
    for change in changes:
        write_change(conn, change)


def _first_duplicate(conn: Connection, inbox: list[tuple[int, dict[str, Any]]]) -> tuple[int, str] | None:
    """Insert the ``inbox`` rows in one statement; the first (position, id) not inserted."""
    if not inbox:
        return None
    statement = _insert_ignoring_conflicts(conn.dialect.name, INBOX).returning(INBOX.c.event_id)
    inserted = set(conn.execute(statement, [row for _, row in inbox]).scalars())
    for position, row in inbox:
        if row["event_id"] not in inserted:
            return position, row["event_id"]
    return None


def _earliest(*found: tuple[int, str] | None) -> tuple[int, str] | None:
    return min((f for f in found if f is not None), default=None)


def write_changes(conn: Connection, changes: Sequence[Change]) -> None:
    """Write ``changes`` in order on ``conn`` inside the caller's one transaction.

    The compare-and-sets run one per change, in order, so a later change of the same batch
    is checked against the version an earlier one wrote. The inbox, transition log,
    outbox and run rows of all changes are then written with one statement per table, in
    the order of the changes (outbox ids follow that order). The error raised is the one
    :func:`write_change` would have raised first, change after change: a conflict of
    change ``k`` wins unless an earlier change's inbox id (or one repeated earlier in the
    sequence) was processed already.
    """
    if len(changes) == 1 or any(_special(c) for c in changes):
        _one_by_one(conn, changes)
        return
    inbox: list[tuple[int, dict[str, Any]]] = []
    seen: set[str] = set()
    repeated: tuple[int, str] | None = None
    log: list[dict[str, Any]] = []
    outbox: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    for position, change in enumerate(changes):
        try:
            _compare_and_set(conn, change)
        except ConcurrencyConflictError:
            duplicate = _earliest(_first_duplicate(conn, inbox), repeated)
            if duplicate is not None:
                raise DuplicateEventError(duplicate[1]) from None
            raise
        row = _inbox_row(change)
        if row is not None:
            if row["event_id"] in seen:
                repeated = repeated or (position, row["event_id"])
            else:
                seen.add(row["event_id"])
                inbox.append((position, row))
        log.extend(_log_rows(change))
        outbox.extend(_outbox_rows(change))
        runs.extend(_run_rows(change))
    duplicate = _earliest(_first_duplicate(conn, inbox), repeated)
    if duplicate is not None:
        raise DuplicateEventError(duplicate[1])
    _insert_rows(conn, _INSERT_LOG, log)
    _insert_rows(conn, _INSERT_OUTBOX, outbox)
    _insert_rows(conn, _INSERT_RUNS, runs)
