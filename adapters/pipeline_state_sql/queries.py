"""Read queries: batches, history, runs by time, the transition log and the inbox.

Plain functions on a (synchronous) SQLAlchemy :class:`~sqlalchemy.Connection`, run by
:class:`~pipeline_state_sql.store.SqlStore` through ``run_sync``; each is a single indexed
statement (an inbox entry is read by the unit-of-work engine,
:meth:`~pipeline_state_sql.unit_of_work.UnitOfWork.inbox_entry`). Stored documents are
decoded with :mod:`pipeline_state_sql.codec`, so a corrupted row raises
:class:`~pipeline_state.errors.CorruptStateError` naming its batch.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
from sqlalchemy import (
    Connection,
    Text,
    bindparam,
    case,
    cast,
    delete,
    exists,
    func,
    literal,
    literal_column,
    null,
    or_,
    select,
    text,
    true,
    type_coerce,
    union_all,
    update,
)

from pipeline_state._lifecycle import BatchStatus
from pipeline_state._model import BatchState, Run
from pipeline_state._replay import DEAD_LETTERED
from pipeline_state.errors import CorruptStateError
from pipeline_state.ports import (
    CLOCK_STEP_HORIZON_SECONDS,
    OutboxRow,
    StalledRun,
    TransitionRecord,
    WaitingFact,
)

from .codec import decode_run, decode_state, stored_status
from .listed import one_of
from .outbox import ROW_COLUMNS, row_to_outbox
from .schema import BATCHES, INBOX, OUTBOX, RUNS, TRANSITIONS, WAITING
from .state_cache import StateCache

log = logging.getLogger("pipeline_state_sql.queries")

__all__ = [
    "ArchivedRun",
    "archived_ids",
    "batch_history",
    "count_waiting",
    "forget_waiting",
    "is_processed",
    "list_states",
    "list_waiting",
    "load_for_event",
    "load_for_events",
    "load_state",
    "load_with_waiting",
    "overdue_batch_ids",
    "runs_completed_between",
    "stalled_runs",
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
# One statement, whether or not the batch row exists: its state and whether facts wait.
_LOAD_WITH_WAITING = select(
    select(BATCHES.c.state).where(BATCHES.c.batch_id == bindparam("b_id")).scalar_subquery().label("state"),
    exists().where(WAITING.c.batch_id == bindparam("b_id")).label("waiting"),
)


def _load_for_event(state: Any, stamp: Any = None) -> Any:
    """One statement for the start of a unit of work: whether the inbox holds the event, the
    batch's ``state`` and whether facts of it wait (the state is not decoded for a
    duplicate); with ``stamp``, also the stamp of the batch row."""
    of_batch = BATCHES.c.batch_id == bindparam("b_id")
    stamped = () if stamp is None else (select(stamp).where(of_batch).scalar_subquery().label("stamp"),)
    of_event = INBOX.c.event_id == bindparam("e_id")
    return select(
        exists().where(of_event).label("processed"),
        exists().where(of_event, INBOX.c.result.startswith(DEAD_LETTERED)).label("dead_lettered"),
        select(state).where(of_batch).scalar_subquery().label("state"),
        *stamped,
        exists().where(WAITING.c.batch_id == bindparam("b_id")).label("waiting"),
    )


_LOAD_FOR_EVENT = _load_for_event(BATCHES.c.state)

# The same for several events at once (a partition fetch): one statement, one row per
# stored batch asked for ("b", batch id, state), per event the inbox holds ("i", event id)
# and per batch with waiting facts ("w", batch id). The batches come first: the column's
# type (and so its decoding) is the state's. The ids are two list parameters (:mod:`.listed`),
# so the statement's text is the same whatever the fetch's size.


def _load_for_events(state: Any, no_state: Any, dialect: str, stamp: Any = None) -> Any:
    """The union read of several events; with ``stamp``, a fourth column: the stamp of each
    batch row read (NULL in the other rows)."""
    more: tuple[Any, ...] = () if stamp is None else (stamp,)
    none: tuple[Any, ...] = () if stamp is None else (cast(null(), Text),)
    return union_all(
        select(literal("b").label("kind"), BATCHES.c.batch_id.label("id"), state, *more).where(
            one_of(BATCHES.c.batch_id, "b_ids", dialect)
        ),
        # "d": held as a fact the waiting sweep dead-lettered (pipeline_state._replay)
        select(
            case((INBOX.c.result.startswith(DEAD_LETTERED), literal("d")), else_=literal("i")),
            INBOX.c.event_id,
            no_state,
            *none,
        ).where(one_of(INBOX.c.event_id, "e_ids", dialect)),
        select(literal("w"), WAITING.c.batch_id, no_state, *none)
        .where(one_of(WAITING.c.batch_id, "b_ids", dialect))
        .distinct(),
    )


# With a state cache (SQLite stores, :mod:`.state_cache`): the same reads, the state as the
# stored text, decoded (or not) by the cache.
_STATE_TEXT = type_coerce(BATCHES.c.state, Text).label("state")
_LOAD_FOR_EVENT_TEXT = _load_for_event(_STATE_TEXT)


# With a stamped state cache (PostgreSQL stores): the document as text and the row's xmin,
# which tells the cache whether it holds that row version (:mod:`.state_cache`).
_STATE_AS_TEXT = cast(BATCHES.c.state, Text).label("state")
_STAMP = literal_column(f"{BATCHES.name}.xmin::text", Text).label("stamp")
_LOAD_FOR_EVENT_STAMPED = _load_for_event(_STATE_AS_TEXT, _STAMP)


@functools.cache
def _load_for_events_statement(dialect: str, cached: bool, stamped: bool) -> Any:
    """The union read of :func:`load_for_events` on ``dialect``: the state decoded by the
    driver (no cache), as stored text (a cache), or as text with its row's stamp (a
    stamped cache); built once per kind."""
    if not cached:
        # typed NULL: PostgreSQL would make NULL text
        return _load_for_events(BATCHES.c.state, cast(null(), BATCHES.c.state.type), dialect)
    if stamped:
        return _load_for_events(_STATE_AS_TEXT, cast(null(), Text), dialect, _STAMP)
    return _load_for_events(_STATE_TEXT, cast(null(), Text), dialect)


def load_state(conn: Connection, batch_id: str) -> BatchState | None:
    """The stored state of ``batch_id`` or ``None``."""
    document = conn.execute(_LOAD, {"b_id": batch_id}).scalar()
    return None if document is None else decode_state(batch_id, document)


def load_with_waiting(conn: Connection, batch_id: str) -> tuple[BatchState | None, bool]:
    """The stored state of ``batch_id`` (or ``None``) and whether facts of it wait."""
    row = conn.execute(_LOAD_WITH_WAITING, {"b_id": batch_id}).one()
    document = row.state
    state = None if document is None else decode_state(batch_id, document)
    return state, bool(row.waiting)


def _decoded(
    batch_id: str, document: Any, states: StateCache | None, stamp: str | None = None
) -> BatchState | None:
    """The state in a read ``document`` (the stored text when ``states`` is given, and the
    row's ``stamp`` when that cache is stamped)."""
    if document is None:
        return None
    if states is not None:
        return states.decoded(batch_id, document, stamp)
    return decode_state(batch_id, document)


def load_for_event(
    conn: Connection, batch_id: str, event_id: str, states: StateCache | None = None
) -> tuple[bool, BatchState | None, bool, bool]:
    """Whether the inbox holds ``event_id``, and (when it does not) the stored state of
    ``batch_id`` (or ``None``) and whether facts of it wait, and whether the entry held
    closes a fact the waiting sweep dead-lettered: one statement. With ``states`` the
    document is read as text and decoded through that cache."""
    if states is None:
        statement = _LOAD_FOR_EVENT
    else:
        statement = _LOAD_FOR_EVENT_STAMPED if states.stamped else _LOAD_FOR_EVENT_TEXT
    row = conn.execute(statement, {"b_id": batch_id, "e_id": event_id}).one()
    if row.processed:
        return True, None, False, bool(row.dead_lettered)
    stamp = row.stamp if states is not None and states.stamped else None
    return False, _decoded(batch_id, row.state, states, stamp), bool(row.waiting), False


def load_for_events(
    conn: Connection, events: Sequence[tuple[str, str]], states: StateCache | None = None
) -> tuple[frozenset[str], dict[str, tuple[BatchState | None, bool]], frozenset[str]]:
    """For ``(batch id, event id)`` pairs: the event ids the inbox holds, for each batch
    with an event it does not hold its stored state (or ``None``) and whether facts of it
    wait, and which of the held entries close facts the waiting sweep dead-lettered; one
    statement (:func:`load_for_event` for many, ``states`` likewise)."""
    if not events:
        return frozenset(), {}, frozenset()
    batch_ids = list(dict.fromkeys(b for b, _ in events))
    event_ids = list(dict.fromkeys(e for _, e in events))
    documents: dict[str, Any] = {}
    stamps: dict[str, str] = {}
    processed: set[str] = set()
    dead: set[str] = set()
    waiting: set[str] = set()
    statement = _load_for_events_statement(
        conn.dialect.name, states is not None, states is not None and states.stamped
    )
    for kind, key, document, *stamp in conn.execute(statement, {"b_ids": batch_ids, "e_ids": event_ids}):
        if kind == "b":
            documents[key] = document
            if stamp:
                stamps[key] = stamp[0]
        elif kind == "i":
            processed.add(key)
        elif kind == "d":
            processed.add(key)
            dead.add(key)
        else:
            waiting.add(key)
    wanted = dict.fromkeys(b for b, e in events if e not in processed)
    read = {}
    for batch_id in wanted:
        document = documents.get(batch_id)
        read[batch_id] = (_decoded(batch_id, document, states, stamps.get(batch_id)), batch_id in waiting)
    return frozenset(processed), read, frozenset(dead)


def _fact(row: Any) -> WaitingFact:
    return WaitingFact(
        event_id=row.event_id,
        topic=row.topic,
        batch_id=row.batch_id,
        raw=bytes(row.raw),
        waits_for=row.waits_for,
        arrived_at=row.arrived_at,
        seq=int(row.seq),
    )


def list_waiting(
    conn: Connection, batch_id: str | None, *, limit: int, arrived_before: datetime | None
) -> list[WaitingFact]:
    """Waiting facts (of ``batch_id``; arrived before ``arrived_before``), in arrival order."""
    statement = select(WAITING)
    if batch_id is not None:
        statement = statement.where(WAITING.c.batch_id == batch_id)
    if arrived_before is not None:
        statement = statement.where(WAITING.c.arrived_at < arrived_before)
    statement = statement.order_by(WAITING.c.seq).limit(limit)
    return [_fact(row) for row in conn.execute(statement)]


_UNIX_EPOCH_JULIAN_DAY = 2_440_587.5
"""The Julian day number of 1970-01-01T00:00:00Z (what SQLite's ``julianday`` counts in)."""

_ACTIVE_RUNS = {
    # The active run's acceptance as the document stores it (ISO 8601 text with its offset),
    # read as a time by the database: no state is decoded, whatever their number.
    "postgresql": "SELECT count(*), min((state -> 'active_run' ->> 'accepted_at')::timestamptz)"
    " FROM batches WHERE status = :status",
    "sqlite": "SELECT count(*), min(julianday(json_extract(state, '$.active_run.accepted_at')))"
    " FROM batches WHERE status = :status",
}


def active_runs(conn: Connection) -> tuple[int, datetime | None]:
    """How many batches run a pipeline, and when the oldest of their runs was accepted: one
    aggregate over the batches in that status (its index), no state read into Python."""
    dialect = conn.dialect.name
    statement = _ACTIVE_RUNS.get(dialect)
    if statement is None:  # pragma: no cover - the store runs on SQLite and PostgreSQL only
        raise NotImplementedError(f"no active-runs summary for {dialect}")
    status = stored_status(BatchStatus.PROCESSING_PIPELINES)
    count, oldest = conn.execute(text(statement), {"status": status}).one()
    if oldest is None:
        return int(count), None
    if isinstance(oldest, datetime):
        return int(count), oldest.astimezone(UTC)
    # SQLite: a Julian day number, UTC (julianday converts the stored offset).
    return int(count), datetime.fromtimestamp((float(oldest) - _UNIX_EPOCH_JULIAN_DAY) * 86_400.0, UTC)


def count_waiting(conn: Connection) -> int:
    """How many facts wait."""
    return int(conn.execute(select(func.count()).select_from(WAITING)).scalar_one())


def forget_waiting(conn: Connection, event_ids: Sequence[str], result: str, now: datetime) -> int:
    """Delete the waiting facts ``event_ids`` and record ``result`` as their inbox result (in
    the caller's transaction); returns how many were deleted.

    On PostgreSQL the facts' inbox rows are locked first, in the facts' arrival order: a
    unit of work that resumes facts writes each one's inbox row before it deletes its waiting
    row, in that same order, so the two wait for each other instead of deadlocking (the one
    that comes second finds the fact gone: the sweep skips it, the unit of work retries from
    a fresh read)."""
    ids = list(dict.fromkeys(event_ids))
    if not ids:
        return 0
    if conn.dialect.name == "postgresql":
        conn.execute(
            select(INBOX.c.event_id)
            .join(WAITING, WAITING.c.event_id == INBOX.c.event_id)
            .where(INBOX.c.event_id.in_(ids))
            .order_by(WAITING.c.seq)
            .with_for_update(of=INBOX)
        )
    gone = list(
        conn.execute(
            delete(WAITING).where(WAITING.c.event_id.in_(ids)).returning(WAITING.c.event_id)
        ).scalars()
    )
    if gone:
        conn.execute(update(INBOX).where(INBOX.c.event_id.in_(gone)).values(result=result, processed_at=now))
    return len(gone)


_CLOCK_STEP_HORIZON = timedelta(seconds=CLOCK_STEP_HORIZON_SECONDS)


def stalled_runs(conn: Connection, now: datetime, older_than: float, *, limit: int) -> list[StalledRun]:
    """Processing batches not changed for ``older_than`` seconds, least recently changed
    first, with the parked outbox rows keyed by each; a batch last changed more than
    :data:`~pipeline_state.ports.CLOCK_STEP_HORIZON_SECONDS` ahead of ``now`` (by a clock
    that was ahead) counts as not changed since. A batch whose stored state cannot be read
    is logged (an error naming it) and left out, so that it hides none of the others."""
    cutoff = now - timedelta(seconds=older_than)
    statement = (
        select(BATCHES.c.batch_id, BATCHES.c.state)
        .where(
            BATCHES.c.status == BatchStatus.PROCESSING_PIPELINES.value,
            # Or changed "in the future": by a clock ahead of this one (see CLOCK_STEP_HORIZON).
            or_(BATCHES.c.updated_at <= cutoff, BATCHES.c.updated_at > now + _CLOCK_STEP_HORIZON),
        )
        .order_by(BATCHES.c.updated_at, BATCHES.c.batch_id)
        .limit(limit)
    )
    states = []
    for found in conn.execute(statement):
        try:
            states.append(decode_state(found.batch_id, found.state))
        except CorruptStateError as exc:  # listed in the log, never hiding the others
            where = {"batch_id": found.batch_id}
            log.error("stalled run listing: batch %s cannot be read: %s", found.batch_id, exc, extra=where)
    parked: dict[str, list[OutboxRow]] = {}
    if states:
        rows = conn.execute(
            select(*ROW_COLUMNS)
            .where(OUTBOX.c.parked == true(), OUTBOX.c.key.in_([s.batch_id for s in states]))
            .order_by(OUTBOX.c.id)
        )
        for row in rows:
            parked.setdefault(row.key, []).append(row_to_outbox(row))
    # a processing batch has an active run
    return [StalledRun.of(s, parked.get(s.batch_id, ())) for s in states if s.active_run is not None]


def list_states(conn: Connection, status: BatchStatus | None, *, limit: int, offset: int) -> list[BatchState]:
    """Batches (only those in ``status`` when given), ordered by batch id."""
    statement = select(BATCHES.c.batch_id, BATCHES.c.state)
    if status is not None:
        statement = statement.where(BATCHES.c.status == stored_status(status))
    statement = statement.order_by(BATCHES.c.batch_id).limit(limit).offset(offset)
    return [decode_state(row.batch_id, row.state) for row in conn.execute(statement)]


def overdue_batch_ids(conn: Connection, now: datetime, limit: int) -> list[str]:
    """Batches whose next phase deadline is at or before ``now``, the most overdue first
    (earliest deadline, then batch id)."""
    statement = (
        select(BATCHES.c.batch_id)
        .where(BATCHES.c.next_deadline_at <= now)
        .order_by(BATCHES.c.next_deadline_at, BATCHES.c.batch_id)
        .limit(limit)
    )
    return list(conn.execute(statement).scalars())


def is_processed(conn: Connection, event_id: str) -> bool:
    """Whether the inbox holds ``event_id``."""
    return conn.execute(_SEEN, {"e_id": event_id}).first() is not None


def batch_history(conn: Connection, batch_id: str) -> list[Run]:
    """The archived runs of ``batch_id``, oldest first."""
    statement = select(RUNS.c.document).where(RUNS.c.batch_id == batch_id).order_by(RUNS.c.seq)
    return [decode_run(batch_id, doc) for doc in conn.execute(statement).scalars()]


def archived_ids(conn: Connection, batch_id: str) -> list[tuple[str, str]]:
    """``(run_id, correlation_id)`` of each archived run of ``batch_id``, oldest first: the
    key columns only, no document decoded."""
    statement = (
        select(RUNS.c.run_id, RUNS.c.correlation_id).where(RUNS.c.batch_id == batch_id).order_by(RUNS.c.seq)
    )
    return [(run_id, correlation_id) for run_id, correlation_id in conn.execute(statement)]


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


def transition_log(
    conn: Connection, batch_id: str, *, limit: int, event_id: str | None = None, newest: bool = False
) -> list[TransitionRecord]:
    """The transition log of ``batch_id`` in the order it was written (with ``event_id``,
    only the rows that event wrote): the oldest ``limit`` rows, or with ``newest`` the newest."""
    statement = select(TRANSITIONS).where(TRANSITIONS.c.batch_id == batch_id)
    if event_id is not None:
        statement = statement.where(TRANSITIONS.c.event_id == event_id)
    order = TRANSITIONS.c.id.desc() if newest else TRANSITIONS.c.id
    rows = list(conn.execute(statement.order_by(order).limit(limit)))
    if newest:
        rows.reverse()
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
            note=row.note,
            requested_by=row.requested_by,
        )
        for row in rows
    ]
