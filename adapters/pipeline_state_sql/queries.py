"""Read queries: batches, history, runs by time, the transition log and the inbox.

Plain functions on a (synchronous) SQLAlchemy :class:`~sqlalchemy.Connection`, run by
:class:`~pipeline_state_sql.store.SqlStore` through ``run_sync``; each is a single indexed
statement. Stored documents are decoded with :mod:`pipeline_state_sql.codec`, so a
corrupted row raises :class:`~pipeline_state.errors.CorruptStateError` naming its batch.
"""

from __future__ import annotations

from datetime import datetime

import attrs
from sqlalchemy import Connection, bindparam, select

from pipeline_state.lifecycle import BatchStatus
from pipeline_state.model import BatchState, Run
from pipeline_state.ports import InboxEntry, TransitionRecord

from .codec import decode_run, decode_state
from .schema import BATCHES, INBOX, RUNS, TRANSITIONS

__all__ = [
    "ArchivedRun",
    "batch_history",
    "inbox_entry",
    "is_processed",
    "list_states",
    "load_state",
    "overdue_batch_ids",
    "runs_completed_between",
    "transition_log",
]


@attrs.frozen
class ArchivedRun:
    """A finished run with the batch it belongs to and its position in that batch's history."""

    batch_id: str
    seq: int
    run: Run


# The hot statements are built once (building costs more than executing).
_LOAD = select(BATCHES.c.state).where(BATCHES.c.batch_id == bindparam("b_id"))
_SEEN = select(INBOX.c.event_id).where(INBOX.c.event_id == bindparam("e_id"))
_INBOX_ROW = select(INBOX).where(INBOX.c.event_id == bindparam("e_id"))


def load_state(conn: Connection, batch_id: str) -> BatchState | None:
    """The stored state of ``batch_id`` or ``None``."""
    document = conn.execute(_LOAD, {"b_id": batch_id}).scalar()
    return None if document is None else decode_state(batch_id, document)


def list_states(conn: Connection, status: BatchStatus | None, *, limit: int, offset: int) -> list[BatchState]:
    """Batches (only those in ``status`` when given), ordered by batch id."""
    statement = select(BATCHES.c.batch_id, BATCHES.c.state)
    if status is not None:
        statement = statement.where(BATCHES.c.status == status.value)
    statement = statement.order_by(BATCHES.c.batch_id).limit(limit).offset(offset)
    return [decode_state(row.batch_id, row.state) for row in conn.execute(statement)]


def overdue_batch_ids(conn: Connection, now: datetime, limit: int) -> list[str]:
    """Batches whose next phase deadline is at or before ``now``, by batch id."""
    statement = (
        select(BATCHES.c.batch_id)
        .where(BATCHES.c.next_deadline_at <= now)
        .order_by(BATCHES.c.batch_id)
        .limit(limit)
    )
    return list(conn.execute(statement).scalars())


def is_processed(conn: Connection, event_id: str) -> bool:
    """Whether the inbox holds ``event_id``."""
    return conn.execute(_SEEN, {"e_id": event_id}).first() is not None


def inbox_entry(conn: Connection, event_id: str) -> InboxEntry | None:
    """The inbox record of ``event_id``."""
    row = conn.execute(_INBOX_ROW, {"e_id": event_id}).first()
    if row is None:
        return None
    return InboxEntry(row.event_id, row.topic, row.batch_id, row.result, row.processed_at)


def batch_history(conn: Connection, batch_id: str) -> list[Run]:
    """The archived runs of ``batch_id``, oldest first."""
    statement = select(RUNS.c.document).where(RUNS.c.batch_id == batch_id).order_by(RUNS.c.seq)
    return [decode_run(batch_id, doc) for doc in conn.execute(statement).scalars()]


def runs_completed_between(
    conn: Connection, start: datetime, end: datetime, *, limit: int
) -> list[ArchivedRun]:
    """Runs completed in ``[start, end)``, by completion time (then batch and position)."""
    statement = (
        select(RUNS.c.batch_id, RUNS.c.seq, RUNS.c.document)
        .where(RUNS.c.completed_at >= start, RUNS.c.completed_at < end)
        .order_by(RUNS.c.completed_at, RUNS.c.batch_id, RUNS.c.seq)
        .limit(limit)
    )
    return [
        ArchivedRun(row.batch_id, int(row.seq), decode_run(row.batch_id, row.document))
        for row in conn.execute(statement)
    ]


def transition_log(conn: Connection, batch_id: str, *, limit: int) -> list[TransitionRecord]:
    """The transition log of ``batch_id`` in the order it was written."""
    statement = (
        select(TRANSITIONS).where(TRANSITIONS.c.batch_id == batch_id).order_by(TRANSITIONS.c.id).limit(limit)
    )
    return [
        TransitionRecord(
            batch_id=row.batch_id,
            entity=row.entity,
            name=row.name,
            trigger=row.trigger,
            source=row.source,
            dest=row.dest,
            run_id=row.run_id,
            event_id=row.event_id,
            correlation_id=row.correlation_id,
            at=row.at,
        )
        for row in conn.execute(statement)
    ]
