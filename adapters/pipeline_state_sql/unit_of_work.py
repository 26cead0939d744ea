"""The one unit-of-work engine: a versioned document, its inbox and the outbox in one transaction.

:class:`UnitOfWork` is parametrised by the table of versioned documents, the inbox table
(and the column an :class:`~pipeline_state.ports.InboxEntry`'s topic goes to) and how a
change's document becomes that table's row (the shapes of
:mod:`pipeline_state._unit_of_work`); the pipeline store (:mod:`.uow`) and the
results store (:mod:`.results_store`) are two instances. Its writes run inside a
transaction the caller opened and roll nothing back themselves: any exception leaves the
transaction to be rolled back whole. :meth:`UnitOfWork.write`, in order,

1. compare-and-sets the document row: ``INSERT`` when ``expected_version`` is ``None`` (a
   conflict when the row exists), otherwise ``UPDATE ... WHERE <key> = :id AND version =
   :read``; with no new document it still runs a no-op ``UPDATE ... SET version =
   version WHERE <key> = :id [AND version = :read]`` (which also takes the row lock), so a
   decision taken on a stale read never commits. A new document of another key, or whose
   version does not grow, and an unexpected row count raise
   :class:`~pipeline_state.errors.ConcurrencyConflictError`;
2. records the inbox row (``ON CONFLICT DO NOTHING``; zero rows means the event was
   processed already: :class:`~pipeline_state.errors.DuplicateEventError`), or *updates*
   the row of the event a change replaces (a waiting fact re-attempted);
3. appends the outbox rows (under the relay's lease when an
   :class:`~pipeline_state_sql.outbox.OutboxLease` is given: hand-off, see :mod:`.outbox`);
4. runs what else the change writes (the caller's ``then``).

:meth:`UnitOfWork.write_many` runs the compare-and-sets one per change, in order, then
writes the inbox, outbox and the caller's rows of all changes with one statement per table.

:meth:`UnitOfWork.write_rows` and :meth:`UnitOfWork.write_many_rows` are the same with the
caller's rows given as data: on PostgreSQL each is then one statement
(:mod:`.one_statement`), with the same outcome and the same errors. On SQLite,
:meth:`UnitOfWork.write_many_rows` sends the compare-and-sets of all documents, and the
check that the inbox holds none of the events, as one ``UPDATE``
(:mod:`.sqlite_many`); the inbox, outbox and other rows follow as plain ``INSERT`` statements,
which the driver sends with the ``COMMIT`` (only the leased outbox insert, which returns
ids, is a round trip of its own).

Statements are ordered so the row lock on the document is taken first: two writers of the
same document serialise on it, and the loser sees a changed version.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, Literal, NoReturn, TypeVar, cast

import attrs
from sqlalchemy import Connection, Insert, Select, Table, Update, bindparam, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from pipeline_state._envelope_text import envelope_text
from pipeline_state._unit_of_work import Versioned, VersionedChange
from pipeline_state.errors import ConcurrencyConflictError, DuplicateEventError
from pipeline_state.ports import InboxEntry

from . import one_statement, sqlite_many
from .codec import EncodedDocument
from .outbox import OutboxLease, blocked_sql, encode_trace_context, insert_leased, take_leased
from .schema import OUTBOX

__all__ = ["Rows", "UnitOfWork", "insert_ignoring_conflicts"]


C = TypeVar("C", bound=VersionedChange)
D = TypeVar("D", bound=Versioned)

Rows = Iterable[tuple[Insert, list[dict[str, Any]]]]
"""Rows a change adds beyond its document, inbox and outbox: ``(INSERT statement, rows)``."""


@functools.cache
def insert_ignoring_conflicts(dialect: str, table: Table) -> Insert:
    """``INSERT ... ON CONFLICT DO NOTHING`` into ``table`` on ``dialect``."""
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    raise NotImplementedError(f"unsupported dialect {dialect!r}")


def _no_columns(_document: Any, _change: Any) -> dict[str, Any]:
    return {}


@attrs.frozen
class _Statements:
    """The engine's statements, built once: building one costs several times what
    executing it does."""

    update: Update
    touch_at_read: Update
    touch_any: Update
    stored_version: Select[Any]
    inbox_row: Select[Any]
    update_inbox: Update
    insert_outbox: Insert
    insert_inbox: Insert
    inbox_ids: Select[Any]

    @classmethod
    def of(cls, documents: Table, key: str, inbox: Table, outbox: Table) -> _Statements:
        c = documents.c
        by_id = c[key] == bindparam("b_id")
        at_read = c.version == bindparam("b_read")
        by_event = inbox.c.event_id == bindparam("e_id")
        return cls(
            update=update(documents).where(by_id, at_read),
            touch_at_read=update(documents).where(by_id, at_read).values(version=c.version),
            touch_any=update(documents).where(by_id).values(version=c.version),
            stored_version=select(c.version).where(by_id),
            inbox_row=select(inbox).where(by_event),
            update_inbox=update(inbox)
            .where(by_event)
            .values(result=bindparam("i_result"), processed_at=bindparam("i_at")),
            insert_outbox=insert(outbox),
            insert_inbox=insert(inbox),
            inbox_ids=select(inbox.c.event_id).where(inbox.c.event_id.in_(bindparam("ids", expanding=True))),
        )


@attrs.frozen
class UnitOfWork(Generic[C, D]):
    """Writes changes of type ``C`` carrying documents of type ``D`` (see the module doc).

    ``documents`` holds one versioned document per ``key`` (with a ``version`` column);
    ``document`` gives a change's new document (``None``: nothing to write, the version is
    checked all the same), ``columns(document, change)`` the columns of its row written on
    insert and update (``version`` included), ``created`` those written on insert only. ``inbox``
    holds processed event ids (``event_id``, ``batch_id``, ``result``, ``processed_at`` and
    the topic in the column ``topic_column``); ``outbox`` is the outbox table.
    """

    documents: Table
    document: Callable[[C], D | None]
    columns: Callable[[D, C], dict[str, Any]]
    inbox: Table
    created: Callable[[D, C], dict[str, Any]] = _no_columns
    topic_column: str = "topic"
    outbox: Table = OUTBOX
    key: str = "batch_id"
    _sql: _Statements = attrs.field(init=False)

    @_sql.default
    def _build(self) -> _Statements:
        return _Statements.of(self.documents, self.key, self.inbox, self.outbox)

    # -- the document -------------------------------------------------------------------------
    def stored_version(self, conn: Connection, batch_id: str) -> int | None:
        """The version stored under ``batch_id`` (``None``: no row)."""
        return conn.execute(self._sql.stored_version, {"b_id": batch_id}).scalar()

    def conflict(self, conn: Connection, change: C) -> ConcurrencyConflictError:
        """The error of ``change`` losing its compare-and-set, naming the stored version."""
        batch_id = change.batch_id
        return ConcurrencyConflictError(
            batch_id, change.expected_version, self.stored_version(conn, batch_id)
        )

    def _cannot_follow(self, change: C, document: D | None) -> bool:
        """Whether ``document`` cannot be ``change``'s new document (another key, or a
        version that does not grow): a conflict before anything is sent."""
        expected = change.expected_version
        return document is not None and (
            document.batch_id != change.batch_id or document.version <= (expected or 0)
        )

    def compare_and_set(self, conn: Connection, change: C) -> None:
        """Step 1 of the module doc."""
        batch_id = change.batch_id
        document = self.document(change)
        expected = change.expected_version
        if self._cannot_follow(change, document):
            raise self.conflict(conn, change)
        sql = self._sql
        if document is None:
            # Nothing to write, but the decision was taken on a read: verify it with a no-op
            # UPDATE (a write, so SQLite takes the write lock and PostgreSQL the row lock).
            if expected is None:
                touched = conn.execute(sql.touch_any, {"b_id": batch_id}).rowcount
            else:
                touched = conn.execute(sql.touch_at_read, {"b_id": batch_id, "b_read": expected}).rowcount
            if touched != (0 if expected is None else 1):
                raise self.conflict(conn, change)
            return
        if expected is None:
            row = {self.key: batch_id, **self.created(document, change), **self.columns(document, change)}
            if conn.execute(insert_ignoring_conflicts(conn.dialect.name, self.documents), row).rowcount != 1:
                raise self.conflict(conn, change)
            return
        params = {"b_id": batch_id, "b_read": expected, **self.columns(document, change)}
        if conn.execute(sql.update, params).rowcount != 1:
            raise self.conflict(conn, change)

    # -- the inbox ----------------------------------------------------------------------------
    def inbox_row(self, entry: InboxEntry) -> dict[str, Any]:
        return {
            "event_id": entry.event_id,
            self.topic_column: entry.topic,
            "batch_id": entry.batch_id,
            "result": entry.result,
            "processed_at": entry.processed_at,
        }

    def record_inbox(
        self, conn: Connection, entry: InboxEntry | None, *, replaces: str | None = None
    ) -> None:
        """Step 2 of the module doc: insert ``entry`` (or update its row, when it is the
        entry of ``replaces``)."""
        if entry is None:
            return
        if entry.event_id == replaces:
            params = {"e_id": entry.event_id, "i_result": entry.result, "i_at": entry.processed_at}
            conn.execute(self._sql.update_inbox, params)
            return
        statement = insert_ignoring_conflicts(conn.dialect.name, self.inbox)
        if conn.execute(statement, self.inbox_row(entry)).rowcount != 1:
            raise DuplicateEventError(entry.event_id)

    def inbox_entry(self, conn: Connection, event_id: str) -> InboxEntry | None:
        """The inbox record of ``event_id``."""
        row = conn.execute(self._sql.inbox_row, {"e_id": event_id}).first()
        if row is None:
            return None
        topic = getattr(row, self.topic_column)
        return InboxEntry(row.event_id, topic, row.batch_id, row.result, row.processed_at)

    def _first_duplicate(
        self, conn: Connection, rows: list[tuple[int, dict[str, Any]]]
    ) -> tuple[int, str] | None:
        """Insert the inbox ``rows`` in one statement; the first (position, id) not inserted."""
        if not rows:
            return None
        inbox = self.inbox
        statement = insert_ignoring_conflicts(conn.dialect.name, inbox).returning(inbox.c.event_id)
        inserted = set(conn.execute(statement, [row for _, row in rows]).scalars())
        for position, row in rows:
            if row["event_id"] not in inserted:
                return position, row["event_id"]
        return None

    # -- the outbox ---------------------------------------------------------------------------
    def outbox_rows(self, change: C, lease: OutboxLease | None = None) -> list[dict[str, Any]]:
        at = change.at
        return [
            {
                **({} if lease is None else lease.columns(m.key)),
                "event_id": m.event_id,
                "topic": m.topic,
                "key": m.key,
                "envelope": EncodedDocument(envelope_text(m.value)),
                "created_at": at,
                "available_at": at,
                "attempts": 0,
                "parked": False,
                "trace_context": encode_trace_context(m.trace_context),
            }
            for m in change.outbox
        ]

    # -- units of work ------------------------------------------------------------------------
    def write(
        self,
        conn: Connection,
        change: C,
        then: Callable[[Connection, C], None] | None = None,
        *,
        replaces: str | None = None,
        lease: OutboxLease | None = None,
    ) -> None:
        """Write ``change`` on ``conn`` inside the caller's transaction (steps 1 to 4 of the
        module doc); ``replaces`` names an event whose inbox row ``change.inbox`` updates."""
        self.compare_and_set(conn, change)
        self.record_inbox(conn, change.inbox, replaces=replaces)
        self._insert_outbox(conn, [change], self.outbox_rows(change, lease), lease)
        if then is not None:
            then(conn, change)

    def write_rows(
        self,
        conn: Connection,
        change: C,
        rows: Rows = (),
        lease: OutboxLease | None = None,
        *,
        alone: bool = False,
    ) -> None:
        """:meth:`write` ``change`` with ``rows`` as what else it writes (inserted after its
        outbox rows, table after table). On PostgreSQL the whole unit of work is one
        statement (:mod:`.one_statement`): one round trip instead of one per step, with
        the same outcome and the same errors. With a ``lease`` (rows handed to this
        process's relay), the outbox rows are written leased in the same statement, which
        returns their ids and whether an older row of their key holds them back
        (:func:`~pipeline_state_sql.outbox.take_leased`). ``alone`` (PostgreSQL only): the
        statement is sent on a connection in autocommit and refuses rather than write part of
        the change (:class:`~pipeline_state_sql.one_statement.Refused`, nothing written)."""
        if conn.dialect.name != "postgresql":
            if alone:
                raise ValueError("a unit of work is written alone on PostgreSQL only")
            self.write(conn, change, lambda c, _change: _insert_all(c, rows), lease=lease)
            return
        document = self.document(change)
        if self._cannot_follow(change, document):
            raise self.conflict(conn, change)
        expected = change.expected_version
        scalars: dict[str, Any] = {"d:" + self.key: change.batch_id, "d:read": expected}
        mode: one_statement.Mode
        document_columns: tuple[str, ...] = ()
        if document is None:
            mode = "touch_any" if expected is None else "touch_at_read"
        else:
            columns = self.columns(document, change)
            if expected is None:
                mode, columns = "insert", {**self.created(document, change), **columns}
            else:
                mode = "update"
            document_columns = tuple(columns)
            scalars.update(("d:" + name, value) for name, value in columns.items())
        inbox_columns: tuple[str, ...] = ()
        if change.inbox is not None:
            row = self.inbox_row(change.inbox)
            inbox_columns = tuple(row)
            scalars.update(("i:" + name, value) for name, value in row.items())
        tables: list[tuple[Table, list[dict[str, Any]]]] = []
        outbox = self.outbox_rows(change, lease)
        if outbox:
            tables.append((self.outbox, outbox))
        tables.extend((cast(Table, statement.table), list(more)) for statement, more in rows if more)
        statement = one_statement.plan(
            conn.dialect,
            self.documents,
            self.key,
            mode,
            document_columns,
            self.inbox if change.inbox is not None else None,
            inbox_columns,
            tuple((table, tuple(more[0])) for table, more in tables),
            _leased_returning() if outbox and lease is not None else (),
            alone,
        )
        counted, inserted, returned = one_statement.run(conn, statement, scalars, tables)
        if counted != statement.document_ok:
            raise self.conflict(conn, change)
        if inserted != 1:
            assert change.inbox is not None
            raise DuplicateEventError(change.inbox.event_id)
        if outbox and lease is not None:
            take_leased(conn, returned, [(m, change.at) for m in change.outbox], lease, written_unleased=True)

    def write_many_rows(
        self,
        conn: Connection,
        changes: Sequence[C],
        rows: Callable[[C], Rows],
        lease: OutboxLease | None = None,
    ) -> None:
        """:meth:`write_many` with ``rows(change)`` as what else each change writes (asked
        before anything is sent, not under the row lock). On PostgreSQL, when the changes of
        each document follow one another (each expects the version the one before wrote),
        as a decision fold makes them, all of them are one statement
        (:func:`~pipeline_state_sql.one_statement.plan_many`): one compare-and-set per
        document, whatever the number of its changes, and the same errors as
        :meth:`write_many`; other sequences run :meth:`write_many`."""
        dialect = conn.dialect.name
        if dialect == "postgresql" and self._many_in_one(conn, changes, rows, lease):
            return
        if dialect == "sqlite" and self._many_sqlite(conn, changes, rows, lease):
            return
        self.write_many(conn, changes, lambda _conn, change: rows(change), lease)

    def _many_sqlite(
        self, conn: Connection, changes: Sequence[C], rows: Callable[[C], Rows], lease: OutboxLease | None
    ) -> bool:
        """:meth:`write_many_rows` on SQLite with the compare-and-sets of all documents in one
        statement that also checks the inbox holds none of the events
        (:func:`~pipeline_state_sql.sqlite_many.update_many`); the inbox rows then go in a
        plain ``INSERT`` (sent with the next statement or the ``COMMIT``), the outbox and
        other rows one statement per table, as :meth:`write_many` writes them. ``False``
        (nothing sent) unless every document's changes follow one another and update a
        stored row, and no event repeats. The errors are :meth:`write_many`'s."""
        chains: dict[str, list[C]] = {}
        events: dict[str, list[str]] = {}
        inbox: list[dict[str, Any]] = []
        for change in changes:
            chains.setdefault(change.batch_id, []).append(change)
            if change.inbox is not None:
                events.setdefault(change.batch_id, []).append(change.inbox.event_id)
                inbox.append(self.inbox_row(change.inbox))
        if len({row["event_id"] for row in inbox}) != len(inbox):
            return False  # an event twice: write_many tells which is the duplicate
        updates: list[dict[str, Any]] = []
        for batch_id, chain in chains.items():
            row = self._chain_row(batch_id, chain)
            if row is None or row[0] != "update":
                return False
            updates.append(row[1])
        shape = _shape(updates)
        if shape is None:
            return False
        columns = _columns(shape, 2)
        written = sqlite_many.update_many(
            conn, self.documents, self.key, columns, updates, (self.inbox, events)
        )
        if len(written) != len(chains):
            # A compare-and-set lost, or an event was processed: the rows not written again,
            # without the inbox check, tell which error comes first.
            rest = [row for row in updates if row[self.key] not in written]
            written |= sqlite_many.update_many(conn, self.documents, self.key, columns, rest)
            if len(written) != len(chains):
                self._raise_lost(conn, changes, written)
            ids = [row["event_id"] for row in inbox]
            held = set(conn.execute(self._sql.inbox_ids, {"ids": ids}).scalars())
            raise DuplicateEventError(next(event_id for event_id in ids if event_id in held))
        added: dict[Insert, list[dict[str, Any]]] = {self._sql.insert_outbox: []}
        for change in changes:
            added[self._sql.insert_outbox].extend(self.outbox_rows(change, lease))
            for statement, more in rows(change):
                added.setdefault(statement, []).extend(more)
        _insert_rows(conn, self._sql.insert_inbox, inbox)
        self._insert_outbox(conn, changes, added.pop(self._sql.insert_outbox), lease)
        for statement, collected in added.items():
            _insert_rows(conn, statement, collected)
        return True

    def _raise_lost(self, conn: Connection, changes: Sequence[C], written: set[Any]) -> NoReturn:
        """Raise what the changes one by one would have raised first when the documents not in
        ``written`` lost their compare-and-set: a duplicate among the inbox ids of the changes
        before the first lost one, else that change's conflict."""
        failed = next(p for p, c in enumerate(changes) if c.batch_id not in written)
        earlier = [c.inbox.event_id for c in changes[:failed] if c.inbox is not None]
        held = set(conn.execute(self._sql.inbox_ids, {"ids": earlier}).scalars()) if earlier else set()
        duplicate = next((event_id for event_id in earlier if event_id in held), None)
        if duplicate is not None:
            raise DuplicateEventError(duplicate)
        raise self.conflict(conn, changes[failed])

    def write_many_alone(
        self,
        conn: Connection,
        changes: Sequence[C],
        rows: Callable[[C], Rows],
        lease: OutboxLease | None = None,
    ) -> bool:
        """:meth:`write_many_rows` as one statement sent on a PostgreSQL connection in
        autocommit, which refuses rather than write part of the changes
        (:class:`~pipeline_state_sql.one_statement.Refused`, nothing written); ``False``
        (nothing sent) when the changes do not fit one statement."""
        if conn.dialect.name != "postgresql":
            raise ValueError("a unit of work is written alone on PostgreSQL only")
        return self._many_in_one(conn, changes, rows, lease, alone=True)

    def _many_in_one(
        self,
        conn: Connection,
        changes: Sequence[C],
        rows: Callable[[C], Rows],
        lease: OutboxLease | None,
        *,
        alone: bool = False,
    ) -> bool:
        """:meth:`write_many_rows` in one statement; ``False`` (nothing sent) when the
        sequence does not have that shape (``alone``: see :meth:`write_many_alone`)."""
        chains: dict[str, list[C]] = {}
        for change in changes:
            chains.setdefault(change.batch_id, []).append(change)
        inbox = [self.inbox_row(c.inbox) for c in changes if c.inbox is not None]
        if len({row["event_id"] for row in inbox}) != len(inbox):
            return False  # an event twice: write_many tells which is the duplicate
        groups: dict[one_statement.Group, list[dict[str, Any]]] = {"update": [], "insert": [], "touch": []}
        for batch_id, chain in chains.items():
            row = self._chain_row(batch_id, chain)
            if row is None:
                return False
            groups[row[0]].append(row[1])
        tables: dict[Table, list[dict[str, Any]]] = {}
        for change in changes:  # the outbox first: the leased rows' ids are returned
            tables.setdefault(self.outbox, []).extend(self.outbox_rows(change, lease))
            for insert_rows, more in rows(change):
                tables.setdefault(cast(Table, insert_rows.table), []).extend(more)
        filled = [(table, more) for table, more in tables.items() if more]
        shapes = [_shape(more) for _, more in filled]
        doc_shapes = {g: _shape(groups[g]) for g in ("update", "insert")}
        inbox_shape = _shape(inbox)
        if None in shapes or None in doc_shapes.values() or inbox_shape is None:
            return False  # rows of one table with different columns: the statements
        groups.update({"inbox": inbox})
        groups.update({index: more for index, (_, more) in enumerate(filled)})
        plan = one_statement.plan_many(
            conn.dialect,
            self.documents,
            self.key,
            _columns(doc_shapes["update"], 2) if groups["update"] else None,
            _columns(doc_shapes["insert"], 1) if groups["insert"] else None,
            bool(groups["touch"]),
            self.inbox if inbox else None,
            inbox_shape,
            tuple((table, shape or ()) for (table, _), shape in zip(filled, shapes, strict=True)),
            _leased_returning() if lease is not None and tables[self.outbox] else (),
            alone,
        )
        written, inserted, returned = one_statement.run_many(conn, plan, len(chains), len(inbox), groups)
        if len(written) != len(chains):
            self._raise_lost(conn, changes, written)
        if len(inserted) != len(inbox):
            raise DuplicateEventError(next(r["event_id"] for r in inbox if r["event_id"] not in inserted))
        if lease is not None and tables[self.outbox]:
            messages = [(m, c.at) for c in changes for m in c.outbox]
            take_leased(conn, returned, messages, lease, written_unleased=True)
        return True

    def _chain_row(
        self, batch_id: str, chain: Sequence[C]
    ) -> tuple[Literal["update", "insert", "touch"], dict[str, Any]] | None:
        """The one document row that writes ``chain`` (the changes of ``batch_id``, in
        order): ``("update" | "insert" | "touch", row)``, or ``None`` when the changes do
        not follow one another (or begin with nothing to insert where no row may exist)."""
        first = chain[0]
        version = first.expected_version
        last: tuple[D, C] | None = None
        for change in chain:
            document = self.document(change)
            if change.expected_version != version or self._cannot_follow(change, document):
                return None
            if document is not None:
                last, version = (document, change), document.version
        if first.expected_version is None:
            created = self.document(first)
            if created is None or last is None:
                return None
            columns = {**self.created(created, first), **self.columns(*last)}
            return "insert", {self.key: batch_id, **columns}
        if last is None:
            return "touch", {self.key: batch_id, "read": first.expected_version}
        return "update", {self.key: batch_id, "read": first.expected_version, **self.columns(*last)}

    def write_many(
        self,
        conn: Connection,
        changes: Sequence[C],
        rows: Callable[[Connection, C], Rows] | None = None,
        lease: OutboxLease | None = None,
    ) -> None:
        """Write ``changes`` in order on ``conn`` inside the caller's one transaction.

        The compare-and-sets run one per change, in order, so a later change of the same
        document is checked against the version an earlier one wrote; ``rows(conn,
        change)`` is asked right after each (under its row lock) for the rows the change
        adds. The inbox, outbox and those rows of all changes are then written with one
        statement per table, in the order of the changes (outbox ids follow that order).
        The error raised is the one :meth:`write` would have raised first, change after
        change: a conflict of change ``k`` wins unless an earlier change's inbox id (or one
        repeated earlier in the sequence) was processed already.
        """
        inbox: list[tuple[int, dict[str, Any]]] = []
        seen: set[str] = set()
        repeated: tuple[int, str] | None = None
        added: dict[Insert, list[dict[str, Any]]] = {self._sql.insert_outbox: []}
        for position, change in enumerate(changes):
            try:
                self.compare_and_set(conn, change)
            except ConcurrencyConflictError:
                duplicate = _earliest(self._first_duplicate(conn, inbox), repeated)
                if duplicate is not None:
                    raise DuplicateEventError(duplicate[1]) from None
                raise
            entry = change.inbox
            if entry is not None:
                if entry.event_id in seen:
                    repeated = repeated or (position, entry.event_id)
                else:
                    seen.add(entry.event_id)
                    inbox.append((position, self.inbox_row(entry)))
            added[self._sql.insert_outbox].extend(self.outbox_rows(change, lease))
            for statement, more in () if rows is None else rows(conn, change):
                added.setdefault(statement, []).extend(more)
        duplicate = _earliest(self._first_duplicate(conn, inbox), repeated)
        if duplicate is not None:
            raise DuplicateEventError(duplicate[1])
        self._insert_outbox(conn, changes, added.pop(self._sql.insert_outbox), lease)
        for statement, collected in added.items():
            _insert_rows(conn, statement, collected)

    def _insert_outbox(
        self, conn: Connection, changes: Sequence[C], rows: list[dict[str, Any]], lease: OutboxLease | None
    ) -> None:
        if lease is None:
            _insert_rows(conn, self._sql.insert_outbox, rows)
        else:
            insert_leased(conn, rows, [(m, c.at) for c in changes for m in c.outbox], lease)


def _leased_returning() -> tuple[str, ...]:
    """What the outbox rows written under a lease return in the one statement (PostgreSQL):
    as :func:`~pipeline_state_sql.outbox.leased_insert` does."""
    return ("outbox.id", "outbox.event_id", blocked_sql("postgresql"))


def _shape(rows: Sequence[dict[str, Any]]) -> tuple[str, ...] | None:
    """The columns all ``rows`` fill (``()`` for none), or ``None`` when they differ."""
    shapes = {tuple(row) for row in rows}
    if len(shapes) > 1:
        return None
    return shapes.pop() if shapes else ()


def _columns(shape: tuple[str, ...] | None, skip: int) -> tuple[str, ...]:
    """A document row's columns past its key (and the version read)."""
    return () if shape is None else shape[skip:]


def _insert_all(conn: Connection, rows: Rows) -> None:
    for statement, more in rows:
        _insert_rows(conn, statement, list(more))


def _insert_rows(conn: Connection, statement: Insert, rows: list[dict[str, Any]]) -> None:
    if rows:
        conn.execute(statement, rows)


def _earliest(*found: tuple[int, str] | None) -> tuple[int, str] | None:
    return min((f for f in found if f is not None), default=None)
