"""``SqlStore``: the Store and Outbox ports on SQLAlchemy 2 (async), SQLite or PostgreSQL.

Every public method runs its statements in one ``run_sync`` call on a long-lived
connection (:mod:`.lanes`): writes in one transaction (``BEGIN IMMEDIATE`` on SQLite),
single-statement reads without one (in autocommit on PostgreSQL). On PostgreSQL a commit
whose changes fit one statement is sent as that statement alone, in autocommit
(:func:`~pipeline_state_sql.uow.write_alone`): one round trip instead of three; when the
database refuses it (a lost compare-and-set, an event already processed) nothing was
written and the commit runs again in a transaction, which raises the exact error. Driver errors are
translated at this boundary (:mod:`pipeline_state_sql.errors`).

Ids are checked before they reach the database, the same way on SQLite and PostgreSQL: an
id with a NUL character or a lone surrogate, or longer than its column (200 characters),
raises :class:`~pipeline_state.errors.RejectedDataError` (bad input, not an outage);
whatever else the database refuses as invalid data is translated into the same error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import Connection
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline_state._lifecycle import BatchStatus
from pipeline_state._limits import check_limit, check_offset
from pipeline_state._model import BatchState, Run
from pipeline_state.errors import CorruptStateError, DuplicateEventError, RejectedDataError, StoreError
from pipeline_state.ports import (
    Change,
    Clock,
    InboxEntry,
    OutboxRow,
    PurgeCutoffs,
    Purged,
    StalledRun,
    TransitionRecord,
    WaitingFact,
)

from . import outbox as sql_outbox
from . import queries
from . import retention as sql_retention
from .codec import state_text
from .engine import is_postgres, is_sqlite
from .errors import outbox_event_taken, run_position_taken
from .lane_store import LaneStore, open_on_new_engine, translated
from .lanes import alone
from .one_statement import WRITTEN_BY
from .outbox import OutboxLease
from .queries import ArchivedRun
from .schema import ID
from .state_cache import StateCache
from .uow import PIPELINE, write_alone, write_change, write_changes

__all__ = ["HandOff", "SqlStore", "open_store"]

HandOff = Callable[[Sequence[OutboxRow], bool], None]
"""Takes the rows a commit wrote under the relay's lease (in id order) and whether rows were
written that only the claim will find (see :meth:`SqlStore.attach_relay`)."""

_P = ParamSpec("_P")
_R = TypeVar("_R")


def check_id(value: str, what: str = "id", *, batch_id: str | None = None) -> None:
    """Raise :class:`~pipeline_state.errors.RejectedDataError` unless ``value`` fits an id
    column on every backend: at most 200 characters, no NUL, no lone surrogate."""
    if len(value) > ID:
        raise RejectedDataError(f"{what} is {len(value)} characters long, over {ID}", batch_id=batch_id)
    if "\x00" in value:
        raise RejectedDataError(f"{what} contains a NUL character", batch_id=batch_id)
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise RejectedDataError(f"{what} contains a lone surrogate", batch_id=batch_id) from None


def _check_change(change: Change) -> None:
    """The ids a change writes, checked before anything is sent (see :func:`check_id`)."""
    batch_id = change.batch_id
    check_id(batch_id, "batch id", batch_id=None)
    if change.state is not None:
        check_id(change.state.batch_id, "batch id")
    if change.inbox is not None:
        check_id(change.inbox.event_id, "event id", batch_id=batch_id)
        check_id(change.inbox.batch_id, "batch id", batch_id=batch_id)
    for message in change.outbox:
        check_id(message.event_id, "event id", batch_id=batch_id)
        if message.key is not None:
            check_id(message.key, "message key", batch_id=batch_id)
    for record in change.transitions:
        check_id(record.event_id, "event id", batch_id=batch_id)
        check_id(record.correlation_id, "correlation id", batch_id=batch_id)
        check_id(record.name, "name", batch_id=batch_id)
        if record.run_id is not None:
            check_id(record.run_id, "run id", batch_id=batch_id)
    if change.waiting is not None:
        check_id(change.waiting.event_id, "event id", batch_id=batch_id)


_W = TypeVar("_W")

_HELD_LIMIT = 4096
"""How many inbox checks :meth:`SqlStore.was_dead_lettered` remembers (each answered once)."""


def _stamped(
    conn: Connection,
    write: Callable[[Connection, _W, OutboxLease | None], _R],
    what: _W,
    lease: OutboxLease | None,
) -> tuple[_R, str | None]:
    """``write(conn, what, lease)``'s result, and the id of the transaction that wrote it
    when the write said so (PostgreSQL's one statement,
    :data:`~pipeline_state_sql.one_statement.WRITTEN_BY`): what the state cache knows the
    written row versions by."""
    conn.info.pop(WRITTEN_BY, None)  # never a value left by an earlier unit of work
    result = write(conn, what, lease)
    stamp: str | None = conn.info.pop(WRITTEN_BY, None)
    return result, stamp


class SqlStore(LaneStore):
    """Durable batch state, history, transition log, outbox and inbox in SQL.

    Implements :class:`~pipeline_state.ports.BatchingStore` (a
    :class:`~pipeline_state.ports.Store` with ``commit_many``) and
    :class:`~pipeline_state.ports.Outbox` (on :class:`~pipeline_state_sql.lane_store.LaneStore`).
    ``lease`` is how long a claimed outbox row stays reserved for the relay that claimed it
    (after that another relay may claim it again). The engine should come from
    :func:`~pipeline_state_sql.engine.create_engine`; the schema must exist (see
    :func:`~pipeline_state_sql.migrate.create_or_upgrade`). :meth:`close` disposes the
    engine when the store owns it. The store keeps the states it committed and read last
    (:mod:`pipeline_state_sql.state_cache`), by their stored text on SQLite and by the row's
    ``xmin`` on PostgreSQL: a unit of work reading a batch this process wrote last does not
    decode it again, and a row written by anyone else is read as stored.
    """

    def __init__(self, engine: AsyncEngine, *, lease: float = 30.0, owns_engine: bool = False) -> None:
        super().__init__(engine, lease=lease, owns_engine=owns_engine)
        self._hand_off: tuple[HandOff, Clock, Callable[[], bool] | None] | None = None
        self._states: StateCache | None = None
        self._dead_lettered_seen: dict[str, bool] = {}
        """What the last inbox checks saw of held event ids (see :meth:`was_dead_lettered`)."""
        if is_sqlite(engine):
            self._states = StateCache()
        elif is_postgres(engine):
            self._states = StateCache(stamped=True)

    # -- hand-off to the relay of this process ----------------------------------------------
    def attach_relay(
        self, hand_off: HandOff, clock: Clock, *, accepting: Callable[[], bool] | None = None
    ) -> None:
        """From now on, commits write their outbox rows leased to this store's ``owner`` (until
        ``clock.now()`` plus the lease) and, once committed, give them to ``hand_off``: the
        relay of this process publishes them without claiming them (see
        :mod:`pipeline_state_sql.outbox`). Rows held back by an older row of their key, rows
        without a key and re-queued rows are left to the claim (``hand_off``'s flag says so).
        ``accepting`` (the relay's :meth:`~pipeline_state.OutboxRelay.accepting`) is asked
        before each commit: when it says no (the relay holds as many handed rows as it
        will), the commit's rows are left to the claim too, so a relay whose publishing
        stalls does not gather rows in memory without bound.
        """
        self._hand_off = (hand_off, clock, accepting)

    def detach_relay(self) -> None:
        """Stop handing rows off: commits leave every row to the claim again."""
        self._hand_off = None

    async def release(self, row_ids: Sequence[int]) -> None:
        """Take this store's lease off unpublished rows (a relay gives back rows it was handed
        and will not publish): the claim may take them at once."""
        with translated():
            await self._write_one(sql_outbox.release_rows, row_ids, self.owner)

    def _outbox_lease(self, changes: Sequence[Change]) -> OutboxLease | None:
        if self._hand_off is None or not any(c.outbox or c.republish or c.unpark for c in changes):
            return None
        _, clock, accepting = self._hand_off
        if accepting is not None and not accepting():
            return None  # the relay is full: the rows go to the claim (see _committed)
        lease = OutboxLease(self.owner, clock.now() + self.lease)
        lease.poll = any(c.republish or c.unpark for c in changes)  # re-queued rows: found by the claim
        return lease

    def _committed(self, changes: Sequence[Change], lease: OutboxLease | None, stamp: str | None) -> None:
        states = self._states
        if states is not None and (stamp is not None or not states.stamped):
            for change in changes:  # in order: a batch written twice keeps its last state
                if change.state is not None:
                    text = state_text(change.state)
                    states.written(change.state, stamp or text, len(text))
        if self._hand_off is None:
            return
        if lease is None:
            if any(c.outbox or c.republish or c.unpark for c in changes):
                self._hand_off[0]((), True)  # written for the claim: the relay must look
        elif lease.handed or lease.poll:
            self._hand_off[0](lease.handed, lease.poll)

    # -- Store ------------------------------------------------------------------------------
    async def load(self, batch_id: str) -> BatchState | None:
        check_id(batch_id, "batch id")
        return await self._read(queries.load_state, batch_id)

    async def load_with_waiting(self, batch_id: str) -> tuple[BatchState | None, bool]:
        check_id(batch_id, "batch id")
        return await self._read(queries.load_with_waiting, batch_id)

    async def load_for_event(self, batch_id: str, event_id: str) -> tuple[bool, BatchState | None, bool]:
        """Whether the inbox holds ``event_id`` and, when it does not, the state of
        ``batch_id`` (or ``None``) and whether facts of it wait: the reads that start a unit
        of work, in one statement (:meth:`is_processed` and :meth:`load_with_waiting`
        together; a processed event gives ``(True, None, False)``)."""
        check_id(batch_id, "batch id")
        check_id(event_id, "event id")
        read = await self._read(queries.load_for_event, batch_id, event_id, self._states)
        seen, state, waiting, dead = read
        if seen:
            self._held(((event_id, dead),))
        return seen, state, waiting

    async def load_for_events(
        self, events: Sequence[tuple[str, str]]
    ) -> tuple[frozenset[str], dict[str, tuple[BatchState | None, bool]]]:
        """:meth:`load_for_event` for several ``(batch id, event id)`` pairs in one
        statement: the event ids the inbox holds, and for each batch with an event it does
        not hold, its state (or ``None``) and whether facts of it wait."""
        for batch_id, event_id in events:
            check_id(batch_id, "batch id")
            check_id(event_id, "event id")
        processed, read, dead = await self._read(queries.load_for_events, list(events), self._states)
        self._held((e, e in dead) for e in processed)
        return processed, read

    def _held(self, entries: Iterable[tuple[str, bool]]) -> None:
        """Remember, for :meth:`was_dead_lettered`, what the last inbox checks saw."""
        held = self._dead_lettered_seen
        for event_id, dead in entries:
            held[event_id] = dead
        while len(held) > _HELD_LIMIT:
            del held[next(iter(held))]

    def was_dead_lettered(self, event_id: str) -> bool | None:
        """Whether the inbox entry of ``event_id`` that the last :meth:`load_for_event` or
        :meth:`load_for_events` found closes a fact the waiting sweep dead-lettered (the
        service then handles a replay of it, ``pipeline_state._replay``); ``None`` when no
        such check is remembered (ask the inbox). Answered once per check: a plain
        duplicate costs no second read."""
        return self._dead_lettered_seen.pop(event_id, None)

    async def commit(self, change: Change) -> None:
        _check_change(change)
        await self._commit_changes((change,), write_change, change)

    async def commit_many(self, changes: Sequence[Change]) -> None:
        """Commit ``changes`` in order in one transaction (one ``COMMIT``, one fsync on
        SQLite), all or nothing; see :meth:`~pipeline_state.ports.BatchingStore.commit_many`."""
        if not changes:
            return
        for change in changes:
            _check_change(change)
        await self._commit_changes(changes, write_changes, changes)

    async def _commit_changes(
        self,
        changes: Sequence[Change],
        write: Callable[[Connection, Any, OutboxLease | None], None],
        what: Change | Sequence[Change],
    ) -> None:
        """Write ``changes`` (one statement alone on PostgreSQL when they fit, else
        ``write(conn, what, lease)`` in a transaction), then tell the state cache and the
        relay. A PostgreSQL deadlock or serialization failure becomes a conflict on the first
        batch."""
        lease = self._outbox_lease(changes)
        try:
            with translated(changes[0].batch_id):
                written, stamp = await self._write_alone(changes, lease)
                if not written:
                    _, stamp = await self._write(_stamped, write, what, lease)
        except StoreError as exc:
            raise await self._emitted_before(changes, exc) from exc.__cause__
        self._committed(changes, lease, stamp)

    async def _emitted_before(self, changes: Sequence[Change], error: StoreError) -> StoreError:
        """``error``, or the :class:`~pipeline_state.errors.DuplicateEventError` it stands
        for: the outbox's unique event id refused a row (:func:`.errors.outbox_event_taken`)
        that the same inbound event wrote before (its inbox entry purged since, the outbox
        rows kept longer: the service derives emitted ids from the inbound one, and the
        stored envelope names it as ``metadata.causation_id``). Nothing was written; the
        service answers a duplicate (in a group, it handles the changes one by one). A row
        another event wrote with the same id stays the error it is."""
        if run_position_taken(error.__cause__ or error):
            return await self._miscounted(changes, error)
        if not outbox_event_taken(error.__cause__ or error):
            return error
        cause_of = {m.event_id: c.inbox.event_id for c in changes if c.inbox is not None for m in c.outbox}
        try:
            stored = await self.outbox_rows(list(cause_of))
        except StoreError:
            return error
        for row in stored:
            metadata = row.message.value.get("metadata")
            cause = metadata.get("causation_id") if isinstance(metadata, dict) else None
            if cause is not None and cause == cause_of.get(row.message.event_id):
                return DuplicateEventError(cause)
        return error

    async def _miscounted(self, changes: Sequence[Change], error: StoreError) -> StoreError:
        """The :class:`~pipeline_state.errors.CorruptStateError` of the batch whose row counts
        fewer archived runs than the ``runs`` table holds (restored from an older backup than
        the table, edited by hand): the position of the run it archives is taken. Nothing was
        written. ``error`` when no change's count disagrees any more (a concurrent writer)."""
        for change in changes:
            if change.state is None or not change.archived:
                continue
            counted = change.state.past.count - len(change.archived)
            try:
                held = len(await self.archived_ids(change.batch_id))
            except StoreError:
                return error
            if held > counted:
                return CorruptStateError(
                    change.batch_id,
                    f"the row counts {counted} archived runs, the runs table holds {held}",
                )
        return error

    async def _write_alone(
        self, changes: Sequence[Change], lease: OutboxLease | None
    ) -> tuple[bool, str | None]:
        """On PostgreSQL, ``changes`` as one statement in autocommit (see the module doc):
        whether it wrote them and the stamp of what it wrote; ``(False, None)`` when nothing
        was written (not PostgreSQL, not one statement, or refused: the caller writes them
        in a transaction)."""
        if not self._one_statement_alone:
            return False, None
        return await self._writers.run(alone, _stamped, write_alone, changes, lease)

    async def is_processed(self, event_id: str) -> bool:
        check_id(event_id, "event id")
        return await self._read(queries.is_processed, event_id)

    async def inbox_entry(self, event_id: str) -> InboxEntry | None:
        check_id(event_id, "event id")
        return await self._read(PIPELINE.inbox_entry, event_id)

    async def overdue_batches(self, now: datetime, limit: int = 1000) -> list[str]:
        check_limit(limit)
        return await self._read(queries.overdue_batch_ids, now, limit)

    async def list_batches(
        self, status: BatchStatus | None = None, *, limit: int = 100, offset: int = 0
    ) -> list[BatchState]:
        check_limit(limit)
        check_offset(offset)
        return await self._read(queries.list_states, status, limit=limit, offset=offset)

    # -- waiting facts ----------------------------------------------------------------------
    async def list_waiting(
        self, batch_id: str | None = None, *, limit: int = 100, arrived_before: datetime | None = None
    ) -> list[WaitingFact]:
        check_limit(limit)
        if batch_id is not None:
            check_id(batch_id, "batch id")
        return await self._read(queries.list_waiting, batch_id, limit=limit, arrived_before=arrived_before)

    async def count_waiting(self) -> int:
        return await self._read(queries.count_waiting)

    async def active_runs(self) -> tuple[int, datetime | None]:
        """How many batches run a pipeline now and when the oldest of those runs was accepted,
        from one aggregate query: no batch state is loaded or decoded, however many there
        are (the metrics' store gauges read this every few seconds)."""
        return await self._read(queries.active_runs)

    async def forget_waiting(self, event_ids: Sequence[str], result: str, now: datetime) -> int:
        with translated():
            return await self._write(queries.forget_waiting, event_ids, result[:200], now)

    async def stalled_runs(self, now: datetime, older_than: float, *, limit: int = 100) -> list[StalledRun]:
        check_limit(limit)
        return await self._read(queries.stalled_runs, now, older_than, limit=limit)

    # -- Outbox (beyond the port, which LaneStore implements) --------------------------------
    async def outbox_rows(self, event_ids: Sequence[str]) -> list[OutboxRow]:
        """The outbox rows with these event ids (any state), in row order; unknown ids are
        left out."""
        for event_id in event_ids:
            check_id(event_id, "event id")
        return await self._read(sql_outbox.rows_by_event_id, list(event_ids))

    async def outbox_backlog(self) -> tuple[int, datetime | None, int]:
        """Pending rows, when the oldest of them was written, and parked rows (one read)."""
        return await self._read(sql_outbox.backlog)

    async def purge_published(self, before: datetime) -> int:
        """Delete outbox rows published before ``before`` (they are kept until then, for
        inspection), except those of batches whose active run has a phase deadline pending (a
        re-send puts its command's row back in the queue); returns how many were deleted."""
        with translated():
            return await self._write(sql_outbox.purge_published, before)

    async def purge(self, cutoffs: PurgeCutoffs, *, limit: int = 5_000) -> Purged:
        """Delete at most ``limit`` published outbox rows, inbox entries and transition log
        rows older than their cutoffs, oldest first, in one transaction
        (:class:`~pipeline_state.ports.PurgingStore`, :mod:`.retention`)."""
        check_limit(limit)
        with translated():
            return await self._write(sql_retention.purge, cutoffs, limit)

    # -- queries ----------------------------------------------------------------------------
    async def history(self, batch_id: str) -> list[Run]:
        """The archived runs of a batch, oldest first (from the ``runs`` table)."""
        check_id(batch_id, "batch id")
        return await self._read(queries.batch_history, batch_id)

    async def archived_ids(self, batch_id: str) -> list[tuple[str, str]]:
        """``(run_id, correlation_id)`` of each archived run, oldest first (the ``runs``
        table's key columns; see :class:`~pipeline_state.ports.ArchiveIndexStore`)."""
        check_id(batch_id, "batch id")
        return await self._read(queries.archived_ids, batch_id)

    async def runs_completed_between(
        self, start: datetime, end: datetime, *, limit: int = 1000
    ) -> list[ArchivedRun]:
        """Runs completed in ``[start, end)``, by completion time."""
        return await self._read(queries.runs_completed_between, start, end, limit=limit)

    async def transitions(
        self, batch_id: str, *, limit: int = 10_000, event_id: str | None = None, newest: bool = False
    ) -> list[TransitionRecord]:
        """The transition log of a batch, in writing order (the oldest ``limit`` rows, or with
        ``newest`` the newest; with ``event_id``, only the rows that event wrote)."""
        check_id(batch_id, "batch id")
        if event_id is not None:
            check_id(event_id, "event id")
        return await self._read(
            queries.transition_log, batch_id, limit=limit, event_id=event_id, newest=newest
        )


async def open_store(
    url: str | URL,
    *,
    upgrade: bool = True,
    schema: str | None = None,
    lease: float = 30.0,
    **engine_options: Any,
) -> SqlStore:
    """A :class:`SqlStore` on a new engine for ``url`` (closed with :meth:`SqlStore.close`).

    With ``upgrade`` (the default) it first runs
    :func:`~pipeline_state_sql.migrate.create_or_upgrade`, which is idempotent and safe when
    several processes start at once; pass ``upgrade=False`` where migrations are a separate
    deployment step. ``schema`` and ``engine_options`` go to
    :func:`~pipeline_state_sql.engine.create_engine`.
    """
    return await open_on_new_engine(
        SqlStore, url, upgrade=upgrade, schema=schema, lease=lease, **engine_options
    )
