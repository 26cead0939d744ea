"""``SqlResultsStore``: the results read model
(:class:`~pipeline_state.profiles.huleedu.results.ResultsStore`)
and its outbox in SQL, on SQLite or PostgreSQL.

One :class:`~pipeline_state.profiles.huleedu.results.ResultsChange` is written in one
transaction by the generic engine (:class:`~pipeline_state_sql.unit_of_work.UnitOfWork`, the
instance :data:`RESULTS`) on the ``results_batches`` and ``results_inbox`` tables:

1. compare-and-set of the ``results_batches`` row: ``INSERT`` when ``expected_version`` is
   ``None`` (a conflict when the row exists), else ``UPDATE ... WHERE version = :read``;
   with no new read model, a no-op ``UPDATE ... SET version = version`` still checks the
   version (and takes the row lock). A new version that does not grow is a conflict too;
2. the ``results_inbox`` row (``ON CONFLICT DO NOTHING``; nothing inserted: a duplicate);
3. each class delta as ``INSERT ... ON CONFLICT DO UPDATE SET n = n + :delta`` on
   ``results_classes`` and ``results_class_status``, so commits of two batches of one
   class never lose an update;
4. the announcements, into the adapter's ``outbox`` table.

Any error rolls the whole transaction back. Reads are single statements (the class summary
two) outside a transaction. Driver errors become the library's errors
(:mod:`pipeline_state_sql.errors`); a stored document that cannot be read raises
:class:`~pipeline_state.errors.CorruptStateError`.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import (
    Connection,
    Insert,
    Table,
    and_,
    bindparam,
    cast,
    delete,
    literal,
    null,
    select,
    union_all,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL

from pipeline_state._limits import check_limit, check_offset
from pipeline_state.errors import CorruptStateError
from pipeline_state.ports import InboxEntry
from pipeline_state.profiles.huleedu.results.codec import batch_from_document, batch_to_document
from pipeline_state.profiles.huleedu.results.model import BatchResults, ClassResults
from pipeline_state.profiles.huleedu.results.ports import ResultsChange

from .lane_store import LaneStore, open_on_new_engine, translated
from .schema import RESULTS_BATCHES, RESULTS_CLASS_STATUS, RESULTS_CLASSES, RESULTS_INBOX
from .unit_of_work import UnitOfWork

__all__ = ["RESULTS", "SqlResultsStore", "open_results_store", "write_results_change"]

_P = ParamSpec("_P")
_R = TypeVar("_R")

# -- statements (built once) ----------------------------------------------------------------
_B = RESULTS_BATCHES.c
_LOAD = select(_B.batch_id, _B.version, _B.updated_at, _B.document).where(_B.batch_id == bindparam("b_id"))
_C, _S = RESULTS_CLASSES.c, RESULTS_CLASS_STATUS.c
# One statement, so the counts and the statuses come from the same commit.
_CLASS = (
    select(_C.batch_count, _C.essays_succeeded, _C.essays_failed, _S.status, _S.batches)
    .select_from(
        RESULTS_CLASSES.outerjoin(RESULTS_CLASS_STATUS, and_(_S.class_id == _C.class_id, _S.batches != 0))
    )
    .where(_C.class_id == bindparam("c_id"))
    .order_by(_S.status)
)
# The columns one part of the class page leaves empty, cast to the other part's types (a
# bare NULL would be text to PostgreSQL, and the result's types are the first part's).
_NO_BATCH = (
    cast(null(), _B.batch_id.type).label("batch_id"),
    cast(null(), _B.version.type).label("version"),
    cast(null(), _B.updated_at.type).label("updated_at"),
    cast(null(), _B.document.type).label("document"),
)
_NO_CLASS = (
    cast(null(), _C.batch_count.type).label("batch_count"),
    cast(null(), _C.essays_succeeded.type).label("essays_succeeded"),
    cast(null(), _C.essays_failed.type).label("essays_failed"),
    cast(null(), _S.status.type).label("status"),
    cast(null(), _S.batches.type).label("batches"),
)
PURGE_ROUND = 5_000
"""At most this many results inbox entries of each event type go per purge transaction."""

# The oldest expired entries of one event type, locked as they are picked, skipping those
# another purger holds (PostgreSQL): purgers at once share the rows out, and two sessions
# that plan the DELETE differently cannot lock the same rows in opposite orders (deadlock).
_EXPIRED = (
    select(RESULTS_INBOX.c.event_id)
    .where(
        RESULTS_INBOX.c.event_type == bindparam("e_type"),
        RESULTS_INBOX.c.processed_at < bindparam("cutoff", type_=RESULTS_INBOX.c.processed_at.type),
    )
    .order_by(RESULTS_INBOX.c.processed_at)
    .limit(bindparam("n"))
    .with_for_update(skip_locked=True, of=RESULTS_INBOX)
)
_PURGE = delete(RESULTS_INBOX).where(RESULTS_INBOX.c.event_id.in_(_EXPIRED.scalar_subquery()))


def _dialect_insert(dialect: str, table: Table) -> Any:
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"unsupported dialect {dialect!r}")


@functools.cache
def _add_to_class(dialect: str) -> Insert:
    """``INSERT`` a class row, or add the given counts to the existing one."""
    statement = _dialect_insert(dialect, RESULTS_CLASSES)
    c = RESULTS_CLASSES.c
    added: Insert = statement.on_conflict_do_update(
        index_elements=[c.class_id],
        set_={
            "batch_count": c.batch_count + statement.excluded.batch_count,
            "essays_succeeded": c.essays_succeeded + statement.excluded.essays_succeeded,
            "essays_failed": c.essays_failed + statement.excluded.essays_failed,
        },
    )
    return added


@functools.cache
def _add_to_class_status(dialect: str) -> Insert:
    """``INSERT`` a (class, status) count, or add to the existing one."""
    statement = _dialect_insert(dialect, RESULTS_CLASS_STATUS)
    c = RESULTS_CLASS_STATUS.c
    added: Insert = statement.on_conflict_do_update(
        index_elements=[c.class_id, c.status],
        set_={"batches": c.batches + statement.excluded.batches},
    )
    return added


# -- the unit of work -------------------------------------------------------------------------
def _batch(change: ResultsChange) -> BatchResults | None:
    return change.batch


def _batch_columns(batch: BatchResults, change: ResultsChange) -> dict[str, Any]:
    return {
        "version": batch.version,
        "status": batch.status,
        "user_id": batch.user_id,
        "class_id": batch.class_id,
        "document": batch_to_document(batch),
        "updated_at": batch.updated_at or change.at,
    }


RESULTS: UnitOfWork[ResultsChange, BatchResults] = UnitOfWork(
    documents=RESULTS_BATCHES,
    document=_batch,
    columns=_batch_columns,
    inbox=RESULTS_INBOX,
    topic_column="event_type",
)
"""The engine on the results tables (announcements go to the shared ``outbox``)."""


def _apply_deltas(conn: Connection, change: ResultsChange) -> None:
    dialect = conn.dialect.name
    for delta in change.class_deltas:
        if delta.is_empty:
            continue
        conn.execute(
            _add_to_class(dialect),
            {
                "class_id": delta.class_id,
                "batch_count": delta.batches,
                "essays_succeeded": delta.essays_succeeded,
                "essays_failed": delta.essays_failed,
            },
        )
        for status, count in delta.by_status:
            if count:
                conn.execute(
                    _add_to_class_status(dialect),
                    {"class_id": delta.class_id, "status": status, "batches": count},
                )


def write_results_change(conn: Connection, change: ResultsChange) -> None:
    """Write ``change`` on ``conn`` inside the caller's transaction (see the module doc);
    an exception leaves the transaction to be rolled back whole."""
    RESULTS.write(conn, change, _apply_deltas)


# -- reads ------------------------------------------------------------------------------------
def _decode(batch_id: str, document: Any, version: int, updated_at: datetime) -> BatchResults:
    if not isinstance(document, dict):
        raise CorruptStateError(batch_id, "the stored results document is not a JSON object")
    batch = batch_from_document(document, version=int(version), updated_at=updated_at)
    if batch.batch_id != batch_id:
        raise CorruptStateError(batch_id, f"the stored results document is of batch {batch.batch_id!r}")
    return batch


def _load(conn: Connection, batch_id: str) -> BatchResults | None:
    row = conn.execute(_LOAD, {"b_id": batch_id}).first()
    return None if row is None else _decode(row.batch_id, row.document, row.version, row.updated_at)


def _purge_round(conn: Connection, cutoffs: Mapping[str, datetime]) -> tuple[int, bool]:
    """One transaction of a purge: at most :data:`PURGE_ROUND` entries of each event type,
    the oldest first; how many went, and whether a type may have more."""
    total, more = 0, False
    for event_type, cutoff in sorted(cutoffs.items()):
        gone = int(conn.execute(_PURGE, {"e_type": event_type, "cutoff": cutoff, "n": PURGE_ROUND}).rowcount)
        total += gone
        more = more or gone >= PURGE_ROUND
    return total, more


def _class_results(conn: Connection, class_id: str) -> ClassResults | None:
    rows = conn.execute(_CLASS, {"c_id": class_id}).all()
    if not rows or rows[0].batch_count <= 0:
        return None
    row = rows[0]
    counts = tuple((str(r.status), int(r.batches)) for r in rows if r.status is not None)
    return ClassResults(
        class_id=class_id,
        batch_count=int(row.batch_count),
        by_status=counts,
        essays_succeeded=int(row.essays_succeeded),
        essays_failed=int(row.essays_failed),
    )


def _class_page(
    conn: Connection, class_id: str, limit: int, offset: int
) -> tuple[ClassResults, list[BatchResults]] | None:
    """The class summary and a page of its batches from one statement (one snapshot, even
    under READ COMMITTED): the summary rows (part 0), then the page (part 1)."""
    summary = (
        _CLASS.with_only_columns(
            literal(0).label("part"),
            _C.batch_count,
            _C.essays_succeeded,
            _C.essays_failed,
            _S.status,
            _S.batches,
            *_NO_BATCH,
        )
        .order_by(None)
        .subquery()
    )
    page = (
        select(_B.batch_id, _B.version, _B.updated_at, _B.document)
        .where(_B.class_id == bindparam("c_id"))
        .order_by(_B.batch_id)
        .limit(limit)
        .offset(offset)
        .subquery()
    )
    pages = select(
        literal(1).label("part"),
        *_NO_CLASS,
        page.c.batch_id,
        page.c.version,
        page.c.updated_at,
        page.c.document,
    )
    both = union_all(select(summary), pages).subquery()
    rows = conn.execute(
        select(both).order_by(both.c.part, both.c.status, both.c.batch_id), {"c_id": class_id}
    ).all()
    head = [r for r in rows if r.part == 0]
    if not head or head[0].batch_count <= 0:
        return None
    counts = tuple((str(r.status), int(r.batches)) for r in head if r.status is not None)
    results = ClassResults(
        class_id=class_id,
        batch_count=int(head[0].batch_count),
        by_status=counts,
        essays_succeeded=int(head[0].essays_succeeded),
        essays_failed=int(head[0].essays_failed),
    )
    batches = [_decode(r.batch_id, r.document, r.version, r.updated_at) for r in rows if r.part == 1]
    return results, batches


def _list(
    conn: Connection, user_id: str | None, class_id: str | None, limit: int, offset: int
) -> list[BatchResults]:
    statement = select(_B.batch_id, _B.version, _B.updated_at, _B.document)
    if user_id is not None:
        statement = statement.where(_B.user_id == user_id)
    if class_id is not None:
        statement = statement.where(_B.class_id == class_id)
    statement = statement.order_by(_B.batch_id).limit(limit).offset(offset)
    return [_decode(r.batch_id, r.document, r.version, r.updated_at) for r in conn.execute(statement)]


# -- the store --------------------------------------------------------------------------------
class SqlResultsStore(LaneStore):
    """The results read model, its inbox and its outbox in SQL.

    Implements :class:`~pipeline_state.profiles.huleedu.results.ResultsStore` and
    :class:`~pipeline_state.ports.Outbox` (the adapter's ``outbox`` table, so a
    :class:`~pipeline_state._relay.OutboxRelay` publishes the announcements). The engine
    should come from :func:`~pipeline_state_sql.engine.create_engine` and the schema exist
    (:func:`~pipeline_state_sql.migrate.create_or_upgrade`). ``lease`` is how long a claimed
    outbox row stays reserved. :meth:`close` disposes the engine when the store owns it. The
    lanes, the error translation and the outbox port are
    :class:`~pipeline_state_sql.lane_store.LaneStore`'s.
    """

    # -- ResultsStore ---------------------------------------------------------------------
    async def load(self, batch_id: str) -> BatchResults | None:
        return await self._read(_load, batch_id)

    async def commit(self, change: ResultsChange) -> None:
        with translated(change.batch_id):
            await self._write(write_results_change, change)

    async def inbox_entry(self, event_id: str) -> InboxEntry | None:
        return await self._read(RESULTS.inbox_entry, event_id)

    async def purge_inbox(self, cutoffs: Mapping[str, datetime]) -> int:
        """Forget the entries of each event type in ``cutoffs`` processed before its cutoff,
        in transactions of at most :data:`PURGE_ROUND` entries of each type (so the store is
        never held for long; other work runs between them); returns how many went."""
        if not cutoffs:
            return 0
        total, more = 0, True
        while more:
            with translated():
                gone, more = await self._write(_purge_round, dict(cutoffs))
            total += gone
            if more:
                await asyncio.sleep(0)
        return total

    async def class_results(self, class_id: str) -> ClassResults | None:
        return await self._read(_class_results, class_id)

    async def class_page(
        self, class_id: str, *, limit: int = 100, offset: int = 0
    ) -> tuple[ClassResults, list[BatchResults]] | None:
        return await self._read(_class_page, class_id, limit, offset)

    async def list_batches(
        self,
        *,
        user_id: str | None = None,
        class_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[BatchResults]:
        check_limit(limit)
        check_offset(offset)
        return await self._read(_list, user_id, class_id, limit, offset)


async def open_results_store(
    url: str | URL,
    *,
    upgrade: bool = True,
    schema: str | None = None,
    lease: float = 30.0,
    **engine_options: Any,
) -> SqlResultsStore:
    """A :class:`SqlResultsStore` on a new engine for ``url`` (closed with
    :meth:`SqlResultsStore.close`); like :func:`~pipeline_state_sql.store.open_store`, it
    creates or upgrades the schema first unless ``upgrade`` is ``False``."""
    return await open_on_new_engine(
        SqlResultsStore, url, upgrade=upgrade, schema=schema, lease=lease, **engine_options
    )
