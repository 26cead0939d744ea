"""The outbox side in SQL: claiming due rows in order per key, and delivery bookkeeping.

A claim is one statement: ``UPDATE outbox SET claimed_until = :lease_end ... WHERE id IN
(SELECT id ... ORDER BY id LIMIT :n [FOR UPDATE SKIP LOCKED]) RETURNING ...``. A row is
claimable when it is unpublished, not parked, due (``available_at <= now``), not under
another relay's unexpired lease, and no older unpublished, unparked row with the same key
exists (claimed, backing off or not yet due, an older row holds the newer ones back, so a
key's rows go out in order). On PostgreSQL, ``SKIP LOCKED`` lets concurrent relays claim
disjoint rows without waiting; on SQLite the claim runs under ``BEGIN IMMEDIATE``, which
serialises writers. There is no "id greater than last seen" cursor: every pass re-reads
all pending rows, so a row whose transaction committed late is still published.

A relay that dies holding a lease loses it when the lease expires; its rows are then
claimed again (at-least-once delivery, with the original ``event_id`` for deduplication).

**Hand-off** (:class:`OutboxLease`): a unit of work of a process whose relay takes rows in
memory writes its outbox rows already leased to that relay (``claimed_by``, ``claimed_until``)
with ``INSERT ... RETURNING id, event_id, <blocked>``, where ``<blocked>`` says whether the
newest older pending row of the same key is *not* under this relay's unexpired lease (a row
of another process, one backing off after a failure, one whose lease ran out, or one left
to the claim for one of these reasons); on PostgreSQL a single change's unit of work writes
them in its one statement, which returns the same (:mod:`.one_statement`). Such rows, and
rows without a key, are released again in the same transaction (:func:`release_rows`): they
go through the claim, which keeps their key's order. The others are handed to the relay
after the commit, with no claim statement; if the process dies first, their lease expires
and any relay claims them (same ``event_id``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import attrs
from sqlalchemy import (
    Boolean,
    Connection,
    Insert,
    Row,
    and_,
    bindparam,
    delete,
    exists,
    false,
    func,
    insert,
    literal_column,
    or_,
    select,
    true,
    update,
)

from pipeline_state.errors import StoreError
from pipeline_state.ports import CLOCK_STEP_HORIZON_SECONDS, OutboxMessage, OutboxRow

from .columns import UtcDateTime
from .listed import one_of
from .retention import purgeable_published
from .schema import OUTBOX

__all__ = [
    "ROW_COLUMNS",
    "OutboxLease",
    "blocked_sql",
    "claim_rows",
    "count_pending",
    "decode_trace_context",
    "encode_trace_context",
    "held_back_sql",
    "insert_leased",
    "leased_insert",
    "mark_failed",
    "mark_published",
    "parked_rows",
    "purge_published",
    "release_rows",
    "row_to_outbox",
    "rows_by_event_id",
    "take_leased",
]

ROW_COLUMNS = (
    OUTBOX.c.id,
    OUTBOX.c.event_id,
    OUTBOX.c.topic,
    OUTBOX.c.key,
    OUTBOX.c.envelope,
    OUTBOX.c.created_at,
    OUTBOX.c.attempts,
    OUTBOX.c.last_error,
    OUTBOX.c.parked,
    OUTBOX.c.published_at,
    OUTBOX.c.trace_context,
    OUTBOX.c.claimed_until,
)


def encode_trace_context(context: tuple[tuple[str, str], ...]) -> str | None:
    """The ``trace_context`` column of a message's trace-context headers (``NULL``: none)."""
    return json.dumps(dict(context), separators=(",", ":")) if context else None


def decode_trace_context(text: str | None) -> tuple[tuple[str, str], ...]:
    """The headers stored by :func:`encode_trace_context`; anything unreadable is no context
    (a trace is never a reason to hold a message back)."""
    if not text:
        return ()
    try:
        decoded = json.loads(text)
    except ValueError:
        return ()
    if not isinstance(decoded, dict):
        return ()
    return tuple((k, v) for k, v in decoded.items() if isinstance(k, str) and isinstance(v, str))


def _pending() -> Any:
    return and_(OUTBOX.c.published_at.is_(None), OUTBOX.c.parked == false())


def row_to_outbox(row: Row[Any] | Any) -> OutboxRow:
    """An :class:`~pipeline_state.ports.OutboxRow` from a selected outbox row; an envelope
    that is not a JSON object raises :class:`~pipeline_state.errors.StoreError` (never
    published as something else)."""
    value = row.envelope
    if not isinstance(value, dict):
        raise StoreError(
            f"outbox row {row.id} (event {row.event_id}) holds an envelope that is not a JSON object"
        )
    return OutboxRow(
        id=int(row.id),
        message=OutboxMessage(
            row.event_id, row.topic, row.key, value, decode_trace_context(row.trace_context)
        ),
        created_at=row.created_at,
        attempts=int(row.attempts),
        last_error=row.last_error,
        parked=bool(row.parked),
        published_at=row.published_at,
        leased_until=row.claimed_until,
    )


@functools.cache
def _claim_statement(dialect: str) -> Any:
    now = bindparam("now", type_=UtcDateTime())
    horizon = bindparam("horizon", type_=UtcDateTime())

    def older_pending(same_key: Any) -> Any:
        older = OUTBOX.alias("older")
        return exists().where(
            same_key(older),
            older.c.id < OUTBOX.c.id,
            older.c.published_at.is_(None),
            older.c.parked == false(),
        )

    # Two plain anti-joins, each an index range scan on (key, id) even in a generic plan;
    # one "key = key OR both NULL" condition would not be an index condition at all.
    blocked_same_key = older_pending(lambda older: older.c.key == OUTBOX.c.key)
    blocked_null_key = older_pending(lambda older: older.c.key.is_(None))
    blocked = or_(blocked_same_key, and_(OUTBOX.c.key.is_(None), blocked_null_key))
    candidates = (
        select(OUTBOX.c.id)
        .where(
            _pending(),
            # Due, or due so far ahead that a clock ahead of ours wrote it (CLOCK_STEP_HORIZON).
            or_(OUTBOX.c.available_at <= now, OUTBOX.c.available_at > horizon),
            or_(
                OUTBOX.c.claimed_until.is_(None),
                OUTBOX.c.claimed_until <= now,
                OUTBOX.c.claimed_until > horizon,
            ),
            ~blocked,
        )
        .order_by(OUTBOX.c.id)
        .limit(bindparam("limit"))
    )
    if dialect == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True, of=OUTBOX)
    return (
        update(OUTBOX)
        .where(OUTBOX.c.id.in_(candidates.scalar_subquery()))
        .values(claimed_until=bindparam("lease_end", type_=UtcDateTime()), claimed_by=bindparam("owner"))
        .returning(*ROW_COLUMNS)
    )


@functools.cache
def _published(dialect: str) -> Any:
    """Mark the rows listed in ``ids`` published (one list parameter, :mod:`.listed`)."""
    return (
        update(OUTBOX)
        .where(one_of(OUTBOX.c.id, "ids", dialect), OUTBOX.c.published_at.is_(None))
        .values(
            published_at=bindparam("now", type_=UtcDateTime()),
            claimed_until=None,
            claimed_by=None,
            parked=False,
        )
    )


# Only while the failing relay still holds the row: once its lease ended another relay may
# have claimed it (and be publishing it); that relay's lease and count are not to be touched.
_FAILED = (
    update(OUTBOX)
    .where(
        OUTBOX.c.id == bindparam("row_id"),
        OUTBOX.c.published_at.is_(None),
        OUTBOX.c.claimed_by == bindparam("owner"),
    )
    .values(
        attempts=OUTBOX.c.attempts + 1,
        last_error=bindparam("error"),
        parked=bindparam("park"),
        available_at=bindparam("retry_at", type_=UtcDateTime()),
        claimed_until=None,
        claimed_by=None,
    )
)


_FAILED_UNDER_LEASE = _FAILED.where(OUTBOX.c.claimed_until == bindparam("leased_until", type_=UtcDateTime()))


@attrs.define
class OutboxLease:
    """How a unit of work writes its outbox rows for the relay of its own process (see the
    module doc), and, once written, which rows it handed over.

    ``owner`` is the relay's lease owner id, ``until`` the end of the lease. After the
    transaction, ``handed`` holds the rows written under the lease (to be given to the relay
    once committed, in id order) and ``poll`` is true when some rows were written without
    it (the claim must look for them).
    """

    owner: str
    until: datetime
    handed: list[OutboxRow] = attrs.Factory(list)
    poll: bool = False

    def columns(self, key: str | None) -> dict[str, Any]:
        """The lease columns of a new row with ``key`` (rows without a key go to the claim)."""
        if key is None:
            self.poll = True
            return {"claimed_by": None, "claimed_until": None}
        return {"claimed_by": self.owner, "claimed_until": self.until}


# "The newest older pending row of this key is not under this row's (the relay's) unexpired
# lease": one probe of ix_outbox_pending_key, however many rows of the key are pending. The
# newest one is enough: a row written while an older one of its key was not the relay's was
# itself left to the claim, so the newest tells; the one gap (a row of the relay's failed
# after newer ones were handed over) the relay closes itself (see pipeline_state._relay).
# Correlated with the row being inserted, so it needs no parameter (a multi-row INSERT repeats
# its VALUES, never its RETURNING). ``IS NOT TRUE``: an unclaimed row (NULLs) blocks.
def blocked_sql(dialect: str) -> str:
    """Whether an older pending row of its key holds back the outbox row just inserted (the
    row is ``outbox``)."""
    # SQLite planned "older.key = outbox.key" inside RETURNING as a scan of older pending rows
    # by id, filtered by key: a commit cost the whole backlog. A unary plus on the new row's
    # side leaves it one way to read the term: a search of ix_outbox_pending_key (key, id).
    key = "+outbox.key" if dialect == "sqlite" else "outbox.key"
    return held_back_sql(dialect, key, "outbox.claimed_by", "outbox.available_at", older_than="outbox.id")


def held_back_sql(dialect: str, key: str, owner: str, available_at: str, *, older_than: str | None) -> str:
    """Whether a row of ``key``, leased to ``owner`` from ``available_at`` (SQL expressions),
    is held back: the newest pending row of its key (older than the id ``older_than``; with
    ``None``, any the statement sees) is not under that lease. The pending condition is
    spelled as in ``ix_outbox_pending_key``'s own ``WHERE``, so the partial index serves it."""
    pending = "older.parked = 0" if dialect == "sqlite" else "NOT older.parked"
    older = "" if older_than is None else f" AND older.id < {older_than}"
    return (
        f"COALESCE((SELECT (older.claimed_by = {owner} AND older.claimed_until > {available_at})"
        f" IS NOT TRUE FROM outbox AS older WHERE older.key = {key}{older}"
        f" AND older.published_at IS NULL AND {pending}"
        " ORDER BY older.id DESC LIMIT 1), false)"
    )


@functools.cache
def leased_insert(dialect: str) -> Insert:
    """Insert outbox rows written under an :class:`OutboxLease`; returns each row's id, event
    id and whether an older pending row of its key holds it back (:func:`blocked_sql`)."""
    blocked = literal_column(blocked_sql(dialect), Boolean).label("blocked")
    return insert(OUTBOX).returning(OUTBOX.c.id, OUTBOX.c.event_id, blocked)


_RELEASE = (
    update(OUTBOX)
    .where(
        OUTBOX.c.id.in_(bindparam("ids", expanding=True)),
        OUTBOX.c.claimed_by == bindparam("owner"),
        OUTBOX.c.published_at.is_(None),
    )
    .values(claimed_until=None, claimed_by=None)
)


def insert_leased(
    conn: Connection,
    rows: list[dict[str, Any]],
    messages: Sequence[tuple[OutboxMessage, datetime]],
    lease: OutboxLease,
) -> None:
    """Insert ``rows`` (each with :meth:`OutboxLease.columns`) and record in ``lease`` the
    rows handed to the relay; rows held back by an older row of their key are released
    at once (one more statement, only then)."""
    if rows:
        take_leased(conn, conn.execute(leased_insert(conn.dialect.name), rows), messages, lease)


def take_leased(
    conn: Connection,
    inserted: Iterable[Sequence[Any]],
    messages: Sequence[tuple[OutboxMessage, datetime]],
    lease: OutboxLease,
    *,
    written_unleased: bool = False,
) -> None:
    """Record in ``lease`` the rows handed to the relay among the leased rows ``inserted``
    (each ``(id, event id, blocked)``, see :func:`leased_insert`); rows held back by an older
    row of their key are released at once (one more statement, only then), unless the insert
    already wrote them unleased (``written_unleased``: PostgreSQL's one statement, see
    :func:`~pipeline_state_sql.one_statement.leased_cells`): a statement more would only be
    one more chance to fail after the commit, leaving the handed rows in no relay's hands."""
    by_event = {message.event_id: (message, at) for message, at in messages}
    blocked: list[int] = []
    blocked_keys: set[str] = set()
    # In id order: a key's rows after a blocked one of the same insert are blocked too (the
    # same older row holds them). The database does not always say so itself: on SQLite a
    # row of the statement sees the earlier rows of that statement, leased to this relay,
    # and reads them as the newest older row of its key (PostgreSQL reads one snapshot).
    for row_id, event_id, held in sorted(inserted, key=lambda row: int(row[0])):
        message, at = by_event[event_id]
        key = message.key
        if key is None:
            continue
        if held or key in blocked_keys:
            blocked.append(int(row_id))
            blocked_keys.add(key)
        else:
            lease.handed.append(
                OutboxRow(id=int(row_id), message=message, created_at=at, leased_until=lease.until)
            )
    if blocked:
        if not written_unleased:
            release_rows(conn, blocked, lease.owner)
        lease.poll = True
    lease.handed.sort(key=lambda r: r.id)


def release_rows(conn: Connection, row_ids: Sequence[int], owner: str) -> None:
    """Take ``owner``'s lease off unpublished rows: the claim may take them again."""
    if row_ids:
        conn.execute(_RELEASE, {"ids": list(row_ids), "owner": owner})


def claim_rows(
    conn: Connection, now: datetime, limit: int, *, lease: timedelta, owner: str
) -> list[OutboxRow]:
    """Claim up to ``limit`` due rows for ``lease`` (see the module doc), oldest first."""
    horizon = now + max(lease, timedelta(seconds=CLOCK_STEP_HORIZON_SECONDS))
    params = {"now": now, "horizon": horizon, "limit": limit, "lease_end": now + lease, "owner": owner}
    rows = [row_to_outbox(r) for r in conn.execute(_claim_statement(conn.dialect.name), params)]
    rows.sort(key=lambda r: r.id)
    return rows


def mark_published(conn: Connection, row_ids: Sequence[int], now: datetime) -> None:
    """Mark rows published (and release their claim); already published rows are untouched."""
    if row_ids:
        conn.execute(_published(conn.dialect.name), {"ids": list(row_ids), "now": now})


def mark_failed(
    conn: Connection,
    row_id: int,
    error: str,
    now: datetime,
    *,
    retry_at: datetime,
    park: bool,
    owner: str,
    leased_until: datetime | None = None,
) -> bool:
    """Count a failed attempt, keep the error, release the claim; due again at ``retry_at``.
    Only while ``owner`` holds the row's claim (with ``leased_until``, the very lease the
    failing relay was handed): a failure that comes back after another relay claimed the
    row changes nothing (``False``)."""
    params = {"row_id": row_id, "error": error, "park": park, "retry_at": retry_at, "owner": owner}
    if leased_until is None:
        result = conn.execute(_FAILED, params)
    else:
        result = conn.execute(_FAILED_UNDER_LEASE, params | {"leased_until": leased_until})
    return bool(result.rowcount)


def count_pending(conn: Connection) -> int:
    """Rows neither published nor parked."""
    return int(conn.execute(select(func.count()).select_from(OUTBOX).where(_pending())).scalar_one())


def backlog(conn: Connection) -> tuple[int, datetime | None, int]:
    """Pending rows, when the oldest of them was written, and parked rows."""
    pending = count_pending(conn)
    oldest = conn.execute(select(func.min(OUTBOX.c.created_at)).where(_pending())).scalar_one()
    parked = conn.execute(select(func.count()).select_from(OUTBOX).where(OUTBOX.c.parked == true()))
    return pending, oldest, int(parked.scalar_one())


def parked_rows(conn: Connection, limit: int) -> list[OutboxRow]:
    """Parked rows, oldest first."""
    statement = select(*ROW_COLUMNS).where(OUTBOX.c.parked == true()).order_by(OUTBOX.c.id).limit(limit)
    return [row_to_outbox(r) for r in conn.execute(statement)]


def rows_by_event_id(conn: Connection, event_ids: Sequence[str]) -> list[OutboxRow]:
    """The rows (parked, pending or published and not purged yet) with these event ids, in
    row order; ids without a row are left out."""
    if not event_ids:
        return []
    statement = select(*ROW_COLUMNS).where(OUTBOX.c.event_id.in_(list(event_ids))).order_by(OUTBOX.c.id)
    return [row_to_outbox(r) for r in conn.execute(statement)]


def purge_published(conn: Connection, before: datetime) -> int:
    """Delete rows published before ``before``, but those of a batch with a phase deadline
    pending; returns how many went.

    A phase whose deadline passes is re-sent by putting its command's row back in the queue
    (same event id), and phase commands are keyed by their batch: the rows of a batch whose
    active run still has a deadline are kept, so a re-send always finds its row."""
    return int(conn.execute(delete(OUTBOX).where(purgeable_published(before))).rowcount)
