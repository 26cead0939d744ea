"""Purging the bookkeeping rows past their retention (:class:`~pipeline_state.ports.PurgingStore`).

Each kind goes in one ``DELETE ... WHERE key IN (SELECT key ... ORDER BY ... LIMIT :n)``, the
oldest first, so a round touches at most ``n`` rows of each and never holds the store for
long. The rows kept on purpose:

* published outbox rows of a batch whose active run has a phase deadline pending (a re-send
  puts the command's row back in the queue, phase commands are keyed by their batch);
* inbox entries of facts still waiting (the waiting row and the inbox entry go together).

The inbox is scanned through ``ix_inbox_processed_at``; the outbox and the transition log in
id order, which is their order of writing.

On PostgreSQL the rows a round picks are locked as they are picked, skipping those another
transaction holds (``FOR UPDATE SKIP LOCKED``): purgers running at once share the rows out
instead of queueing on each other's, and two sessions that plan the ``DELETE`` differently can
no longer lock the same rows in opposite orders and deadlock. SQLite writes one at a time and
needs no row locks (the clause is not rendered there).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, Connection, delete, select

from pipeline_state.ports import PurgeCutoffs, Purged

from .schema import BATCHES, INBOX, OUTBOX, TRANSITIONS, WAITING

__all__ = ["purge", "purgeable_published"]


def purgeable_published(before: datetime) -> ColumnElement[bool]:
    """Outbox rows published before ``before`` but those of batches with a phase deadline pending."""
    pending_deadline = (
        select(BATCHES.c.batch_id)
        .where(BATCHES.c.batch_id == OUTBOX.c.key, BATCHES.c.next_deadline_at.is_not(None))
        .exists()
    )
    return OUTBOX.c.published_at.is_not(None) & (OUTBOX.c.published_at < before) & ~pending_deadline


def _outbox(conn: Connection, before: datetime, limit: int) -> int:
    oldest = (
        select(OUTBOX.c.id)
        .where(purgeable_published(before))
        .order_by(OUTBOX.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True, of=OUTBOX)
    )
    return int(conn.execute(delete(OUTBOX).where(OUTBOX.c.id.in_(oldest.scalar_subquery()))).rowcount)


def _inbox(conn: Connection, before: datetime, limit: int) -> int:
    waiting = select(WAITING.c.event_id).where(WAITING.c.event_id == INBOX.c.event_id).exists()
    oldest = (
        select(INBOX.c.event_id)
        .where(INBOX.c.processed_at < before, ~waiting)
        .order_by(INBOX.c.processed_at)
        .limit(limit)
        .with_for_update(skip_locked=True, of=INBOX)
    )
    return int(conn.execute(delete(INBOX).where(INBOX.c.event_id.in_(oldest.scalar_subquery()))).rowcount)


def _log(conn: Connection, before: datetime, limit: int) -> int:
    oldest = (
        select(TRANSITIONS.c.id)
        .where(TRANSITIONS.c.at < before)
        .order_by(TRANSITIONS.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True, of=TRANSITIONS)
    )
    statement = delete(TRANSITIONS).where(TRANSITIONS.c.id.in_(oldest.scalar_subquery()))
    return int(conn.execute(statement).rowcount)


def purge(conn: Connection, cutoffs: PurgeCutoffs, limit: int) -> Purged:
    """Delete at most ``limit`` rows of each kind older than its cutoff (one transaction: the
    caller's)."""
    return Purged(
        outbox=0 if cutoffs.published_before is None else _outbox(conn, cutoffs.published_before, limit),
        inbox=0 if cutoffs.processed_before is None else _inbox(conn, cutoffs.processed_before, limit),
        transitions=0 if cutoffs.logged_before is None else _log(conn, cutoffs.logged_before, limit),
    )
