"""PostgreSQL: a whole unit of work in one statement (data-modifying ``WITH`` queries).

The unit of work (:mod:`.unit_of_work`) writes a change as a compare-and-set of its
document, an inbox row, outbox rows and the rows the caller adds (the pipeline's log and
archived runs): four statements, each a round trip to the server. On PostgreSQL
:func:`write` sends them as one statement::

    WITH d AS (UPDATE documents SET ... WHERE key = $1 AND version = $2 RETURNING 1),
         i AS (INSERT INTO inbox (...) SELECT $3, ... WHERE (SELECT count(*) FROM d) = 1
               ON CONFLICT DO NOTHING RETURNING 1),
         t1 AS (INSERT INTO outbox (...) SELECT ... FROM unnest($7::..[], ...) WITH ORDINALITY
                AS u(..., n) WHERE (SELECT count(*) FROM d) = 1 AND EXISTS (SELECT FROM i)
                ORDER BY u.n),
         t2 AS (...)
    SELECT (SELECT count(*) FROM d), (SELECT count(*) FROM i)

The compare-and-set runs first (the main query reads ``d`` first, so the row lock on the
document is taken before anything else is written, as with separate statements), the inbox
row is inserted only when it succeeded, and the other rows only when both did: a duplicate
event inserts nothing (its outbox event ids, which a redelivery repeats, never collide).
The counts returned tell the caller what happened, and :func:`write` raises what the
statements one by one would have raised: :class:`~pipeline_state.errors.ConcurrencyConflictError`
when the compare-and-set failed, else :class:`~pipeline_state.errors.DuplicateEventError`
when the inbox holds the event; the caller's transaction is then rolled back whole, as before.

A compare-and-set also asks that the document row be the very row version its snapshot
saw (``xmin = (SELECT xmin ... )``, the subquery read with the statement's snapshot). The
statement takes its snapshot when it starts; when the row is locked by another writer, it
waits, and once that writer committed it updates the row's newest version, but every other
part of the statement still reads the old snapshot. A writer that emitted messages without
a new document (a no-op ``UPDATE``, which keeps the version) left rows this statement
cannot see: decided on that snapshot, the lease of its own outbox rows would let them
overtake the other writer's older rows of the same key. With the check, the row version the
wait ended on is not the one seen, the compare-and-set counts 0 rows, and the unit of work
is decided again from a fresh read (:class:`~pipeline_state.errors.ConcurrencyConflictError`).

Each table's rows travel as one array per column (``unnest`` keeps their order, ``ORDER BY``
the ordinality makes it explicit, so row ids follow it). The statement text depends only on
which parts a change has (document mode, inbox row, which tables get rows) and the column
names, so a few texts are built once each and asyncpg reuses their prepared statements.
Values go through each column type's own bind processing (aware UTC times, JSON documents
serialised; JSON travels as text and is cast in the statement).

Sent with the connection in autocommit (``refuse``, see :func:`plan`), the statement is
also its own transaction: a final column raises an error when the counts are not the
expected ones, which aborts the statement, so nothing of a refused unit of work is written
(:class:`Refused`). The caller then runs it again in a transaction, where the counts tell
which error it is. No ``BEGIN`` and no ``COMMIT``: one round trip instead of three.

The statement also returns the id of its transaction (``txid_current_if_assigned()``, the
``xmin`` of every row it wrote, kept in ``conn.info`` under :data:`WRITTEN_BY`): the store's
state cache recognises the documents it wrote by it (:mod:`.state_cache`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import attrs
from sqlalchemy import JSON, Column, Connection, Dialect, Table
from sqlalchemy.exc import DBAPIError

from .outbox import held_back_sql

__all__ = ["Mode", "Plan", "Refused", "Rows", "leased_cells", "plan", "plan_many"]

Mode = Literal["insert", "update", "touch_at_read", "touch_any"]
"""How the document is compare-and-set: ``insert`` (no row expected), ``update`` (the row at
the version read), ``touch_at_read`` (no new document; the row at the version read must
exist) and ``touch_any`` (no new document, no version read: no row may exist)."""

Rows = Sequence[tuple[Table, Sequence[dict[str, Any]]]]
"""Rows to insert after the inbox row, table by table, each table's rows in order."""

_Convert = Callable[[Any], Any]

REFUSAL = "pipeline_state: unit of work refused"
"""The text a refusing statement casts to an integer when its counts are not the expected
ones: the error that raises (``22P02``, invalid text representation) carries it."""


class Refused(Exception):
    """A unit of work sent alone (autocommit) could not apply as it was decided (its
    compare-and-set lost, or its event is in the inbox already): the statement aborted and
    wrote nothing. Run it again in a transaction to learn which error it is."""


def _refusal(ok: str, counted: str) -> str:
    """A column that is 0 when ``ok`` holds and otherwise raises, aborting the statement: a
    cast of :data:`REFUSAL` to an integer (it reads a count, so the planner cannot fold it
    into a constant and raise before anything runs)."""
    return f"CASE WHEN {ok} THEN 0 ELSE ('{REFUSAL}: ' || {counted})::INTEGER END"


def _refused(error: BaseException) -> bool:
    """Whether ``error`` (raised by the driver) is a refusing statement's own."""
    orig = getattr(error, "orig", None)
    return getattr(orig, "sqlstate", None) == "22P02" and REFUSAL in str(orig)


@attrs.frozen
class _Column:
    """How one column's values are sent: the SQL type of the parameter and of an array of
    them, the expression that reads it back (JSON is sent as text and cast), and the
    value conversion (the type's bind processing)."""

    key: str
    """The column's name (the key of its value in a row)."""
    name: str
    """The column's name, quoted."""
    sql_type: str
    param_type: str
    convert: _Convert | None

    def value(self, value: Any) -> Any:
        return value if self.convert is None or value is None else self.convert(value)

    def values(self, rows: Sequence[Mapping[str, Any]]) -> list[Any]:
        """The array of this column's values in ``rows`` (one call per array, not per value)."""
        key, convert = self.key, self.convert
        if convert is None:
            return [row[key] for row in rows]
        return [None if (value := row[key]) is None else convert(value) for row in rows]


def _column(column: Column[Any], dialect: Dialect) -> _Column:
    impl = column.type.dialect_impl(dialect)
    sql_type = column.type.compile(dialect=dialect)
    is_json = isinstance(impl, JSON) or isinstance(getattr(impl, "impl", None), JSON)
    return _Column(
        key=column.name,
        name=dialect.identifier_preparer.quote(column.name),
        sql_type=sql_type,
        param_type="TEXT" if is_json else sql_type,
        convert=impl.bind_processor(dialect),
    )


@attrs.frozen
class Plan:
    """One statement text and how a change's values become its positional parameters."""

    sql: str
    document_ok: int
    """The rows the compare-and-set must count (``touch_any``: 0, else 1)."""
    returns: int
    """How many expressions the first further table's rows return (see :func:`plan`)."""
    refuses: bool
    """Whether the statement aborts itself when its counts are not the expected ones."""
    _scalars: tuple[tuple[str, _Column], ...]
    _arrays: tuple[tuple[int, _Column], ...]

    def parameters(self, scalars: dict[str, Any], tables: Rows) -> tuple[Any, ...]:
        """The parameters: the named scalars, then each table's columns as arrays."""
        out: list[Any] = [column.value(scalars[name]) for name, column in self._scalars]
        for index, column in self._arrays:
            out.append(column.values(tables[index][1]))
        return tuple(out)


@functools.lru_cache(maxsize=256)
def plan(
    dialect: Dialect,
    documents: Table,
    key: str,
    mode: Mode,
    document_columns: tuple[str, ...],
    inbox: Table | None,
    inbox_columns: tuple[str, ...],
    tables: tuple[tuple[Table, tuple[str, ...]], ...],
    returning: tuple[str, ...] = (),
    refuse: bool = False,
) -> Plan:
    """The statement of a unit of work of this shape (see the module doc). Scalars are named
    ``d:<column>`` (the document row), ``d:read`` (the version read), ``i:<column>`` (the
    inbox row); ``tables`` gives each further table and the columns its rows fill.
    ``returning``: SQL expressions over the rows inserted into the first of ``tables`` (the
    outbox written under the relay's lease: id, event id, held back), returned as one array
    each, in the order of the first expression (the row id). ``refuse``: the statement raises
    (:class:`Refused` from :func:`run`) rather than return counts that are not the expected
    ones, so that, sent in autocommit, it writes all or nothing."""
    q = dialect.identifier_preparer
    scalars: list[tuple[str, _Column]] = []

    def param(name: str, column: Column[Any]) -> str:
        described = _column(column, dialect)
        scalars.append((name, described))
        cast = f"${len(scalars)}::{described.param_type}"
        return f"{cast}::{described.sql_type}" if described.param_type != described.sql_type else cast

    doc = q.format_table(documents)
    key_sql = q.quote(key)
    key_param = param("d:" + key, documents.c[key])
    by_key = f"{key_sql} = {key_param}"
    at_read = ""
    if mode in ("update", "touch_at_read"):
        at_read = f"{q.quote('version')} = {param('d:read', documents.c.version)}"
        at_read += f" AND xmin = (SELECT s.xmin FROM {doc} AS s WHERE s.{by_key})"
    if mode == "insert":
        names = ", ".join(q.quote(c) for c in document_columns)
        values = ", ".join(param("d:" + c, documents.c[c]) for c in document_columns)
        first = f"INSERT INTO {doc} ({key_sql}, {names}) VALUES ({key_param}, {values})"
        first += " ON CONFLICT DO NOTHING RETURNING 1"
    elif mode == "update":
        sets = ", ".join(f"{q.quote(c)} = {param('d:' + c, documents.c[c])}" for c in document_columns)
        first = f"UPDATE {doc} SET {sets} WHERE {by_key} AND {at_read} RETURNING 1"
    else:
        version = q.quote("version")
        where = by_key if mode == "touch_any" else f"{by_key} AND {at_read}"
        first = f"UPDATE {doc} SET {version} = {version} WHERE {where} RETURNING 1"
    document_ok = 0 if mode == "touch_any" else 1
    ok = f"(SELECT count(*) FROM d) = {document_ok}"
    parts = [f"d AS ({first})"]
    if inbox is not None:
        names = ", ".join(q.quote(c) for c in inbox_columns)
        values = ", ".join(param("i:" + c, inbox.c[c]) for c in inbox_columns)
        parts.append(
            f"i AS (INSERT INTO {q.format_table(inbox)} ({names}) SELECT {values} WHERE {ok}"
            " ON CONFLICT DO NOTHING RETURNING 1)"
        )
        ok += " AND EXISTS (SELECT FROM i)"
    arrays: list[tuple[int, _Column]] = []
    for index, (table, columns) in enumerate(tables):
        described = [_column(table.c[c], dialect) for c in columns]
        unnest: list[str] = []
        for column in described:
            arrays.append((index, column))
            unnest.append(f"${len(scalars) + len(arrays)}::{column.param_type}[]")
        names = ", ".join(c.name for c in described)
        aliases = ", ".join(f"c{n}" for n in range(len(described)))
        cells = [
            f"u.c{n}::{c.sql_type}" if c.param_type != c.sql_type else f"u.c{n}"
            for n, c in enumerate(described)
        ]
        if index == 0 and returning:
            cells = leased_cells(list(columns), cells)
        read = ", ".join(cells)
        returns = _returning(returning) if index == 0 else ""
        parts.append(
            f"t{index} AS (INSERT INTO {q.format_table(table)} ({names}) SELECT {read}"
            f" FROM unnest({', '.join(unnest)}) WITH ORDINALITY AS u({aliases}, n)"
            f" WHERE {ok} ORDER BY u.n{returns})"
        )
    inserted = "(SELECT count(*) FROM i)" if inbox is not None else "1"
    returned = _returned(returning if tables else ())
    guard = f", {_refusal(ok, '(SELECT count(*) FROM d)')}" if refuse else ""
    sql = f"WITH {', '.join(parts)} SELECT (SELECT count(*) FROM d), {inserted}{returned}, {_XID}{guard}"
    return Plan(sql, document_ok, len(returning) if tables else 0, refuse, tuple(scalars), tuple(arrays))


WRITTEN_BY = "pipeline_state_xid"
"""``conn.info`` key: the transaction id (as the ``xmin`` of its rows reads) of the last
one-statement unit of work sent on the connection, or ``None``."""

# The transaction's id as a row's ``xmin`` shows it: its low 32 bits (``txid`` values carry
# an epoch above them). NULL when the statement wrote nothing.
_XID = "txid_current_if_assigned() % 4294967296"


def _written_by(conn: Connection, xid: Any) -> None:
    conn.info[WRITTEN_BY] = None if xid is None else str(xid)


def leased_cells(columns: list[str], cells: list[str]) -> list[str]:
    """The cells of outbox rows written under the relay's lease, with the lease decided in
    the insert itself: a row that an older pending row of its key holds back (the newest
    such row is not under this lease: :func:`~pipeline_state_sql.outbox.held_back_sql`) is
    written unleased. Written leased and released by a second statement, it was
    for a moment this relay's in the eyes of a concurrent commit of its key, which then
    handed its own row over to be published first. Every row the statement can see is older
    than the rows it inserts (their ids come from the sequence after its snapshot)."""
    at = {name: n for n, name in enumerate(columns)}
    if not {"claimed_by", "claimed_until", "key", "available_at"} <= at.keys():
        return cells
    owner, key, available = cells[at["claimed_by"]], cells[at["key"]], cells[at["available_at"]]
    blocked = held_back_sql("postgresql", key, owner, available, older_than=None)
    out = list(cells)
    for name in ("claimed_by", "claimed_until"):
        out[at[name]] = f"CASE WHEN {blocked} THEN NULL ELSE {cells[at[name]]} END"
    return out


def _returning(expressions: tuple[str, ...]) -> str:
    """The ``RETURNING`` clause of the first further table's insert (empty for none)."""
    if not expressions:
        return ""
    return " RETURNING " + ", ".join(f"{e} AS r{n}" for n, e in enumerate(expressions))


def _returned(expressions: tuple[str, ...]) -> str:
    """The final ``SELECT``'s columns carrying what that insert returned: one array per
    expression, in row id order (the first expression)."""
    return "".join(f", ARRAY(SELECT r{n} FROM t0 ORDER BY r0)" for n in range(len(expressions)))


def run(
    conn: Connection, statement: Plan, scalars: dict[str, Any], tables: Rows
) -> tuple[int, int, list[tuple[Any, ...]]]:
    """Send ``statement`` with these values on ``conn``: the rows the compare-and-set
    counted, the inbox rows inserted (1 when there is no inbox row) and what the rows of the
    first further table returned (one tuple per row; none unless the plan returns some);
    :class:`Refused` when a refusing statement refused."""
    row = _send(conn, statement.sql, statement.parameters(scalars, tables), statement.refuses)
    _written_by(conn, row[2 + statement.returns])
    returned = list(zip(*row[2 : 2 + statement.returns], strict=True)) if statement.returns else []
    return int(row[0]), int(row[1]), returned


def _send(conn: Connection, sql: str, parameters: tuple[Any, ...], refuses: bool) -> Any:
    """The one row ``sql`` returns; :class:`Refused` when a refusing statement refused."""
    try:
        return conn.exec_driver_sql(sql, parameters).one()
    except DBAPIError as exc:
        if refuses and _refused(exc):
            raise Refused(str(exc.orig)) from exc
        raise


# -- several changes (commit_many) --------------------------------------------------------

Group = Literal["update", "insert", "touch", "inbox"] | int
"""Where an array parameter's values come from: the documents updated, inserted or touched,
the inbox rows, or the further table at that index."""


@attrs.frozen
class ManyPlan:
    """One statement writing several changes of distinct documents (see :func:`plan_many`)."""

    sql: str
    returns: int
    """How many expressions the first further table's rows return (see :func:`plan_many`)."""
    refuses: bool
    """Whether the statement aborts itself when its counts are not the expected ones."""
    _arrays: tuple[tuple[Group, _Column], ...]

    def parameters(
        self, keys: int, inbox: int, groups: Mapping[Group, Sequence[dict[str, Any]]]
    ) -> tuple[Any, ...]:
        """The parameters: the expected counts, then one array per column of each group."""
        out: list[Any] = [keys, inbox]
        for group, column in self._arrays:
            out.append(column.values(groups[group]))
        return tuple(out)


@functools.lru_cache(maxsize=256)
def plan_many(
    dialect: Dialect,
    documents: Table,
    key: str,
    updated: tuple[str, ...] | None,
    inserted: tuple[str, ...] | None,
    touched: bool,
    inbox: Table | None,
    inbox_columns: tuple[str, ...],
    tables: tuple[tuple[Table, tuple[str, ...]], ...],
    returning: tuple[str, ...] = (),
    refuse: bool = False,
) -> ManyPlan:
    """The statement writing several changes, at most one document row each: the rows of
    ``updated`` (``key``, the version read as ``read``, and these columns) compare-and-set
    by ``UPDATE``, those of ``inserted`` (``key`` and these columns) by ``INSERT``, and
    ``touched`` ones (``key``, ``read``) by a no-op ``UPDATE``; then, only when every
    document row counted (``$1`` of them), the inbox rows, and only when all of those were
    inserted (``$2``), the rows of ``tables``. It returns the keys of the documents written,
    the inbox event ids inserted and, as :func:`plan` does, what ``returning`` reads of the
    rows of the first of ``tables``; with ``refuse``, it raises instead when a count is not
    the expected one (see :func:`plan`)."""
    q = dialect.identifier_preparer
    arrays: list[tuple[Group, _Column]] = []
    key_sql, version = q.quote(key), q.quote("version")
    doc = q.format_table(documents)

    def unnest(group: Group, described: Sequence[_Column]) -> str:
        """``unnest(...) WITH ORDINALITY AS u(c0, ..., n)`` over one array per column (the
        arrays follow ``$1`` and ``$2``, the expected counts)."""
        first = len(arrays) + 3
        arrays.extend((group, column) for column in described)
        placeholders = ", ".join(f"${first + n}::{c.param_type}[]" for n, c in enumerate(described))
        aliases = ", ".join(f"c{n}" for n in range(len(described)))
        return f"unnest({placeholders}) WITH ORDINALITY AS u({aliases}, n)"

    def columns_of(table: Table, names: Sequence[str]) -> list[_Column]:
        return [_column(table.c[name], dialect) for name in names]

    by_key = columns_of(documents, (key,))
    at_read = [attrs.evolve(_column(documents.c.version, dialect), key="read")]
    seen = f"x.xmin = (SELECT s.xmin FROM {doc} AS s WHERE s.{key_sql} = u.c0)"  # see the module doc

    def read(table: Table, columns: Sequence[str], offset: int = 0) -> list[str]:
        out = []
        for n, name in enumerate(columns):
            c = _column(table.c[name], dialect)
            cell = f"u.c{n + offset}"
            out.append(f"{cell}::{c.sql_type}" if c.param_type != c.sql_type else cell)
        return out

    parts: list[str] = []
    written: list[str] = []
    if updated is not None:
        source = unnest("update", by_key + at_read + columns_of(documents, updated))
        sets = ", ".join(
            f"{q.quote(name)} = {cell}"
            for name, cell in zip(updated, read(documents, updated, 2), strict=True)
        )
        parts.append(
            f"du AS (UPDATE {doc} AS x SET {sets} FROM {source}"
            f" WHERE x.{key_sql} = u.c0 AND x.{version} = u.c1 AND {seen} RETURNING x.{key_sql} AS k)"
        )
        written.append("SELECT k FROM du")
    if inserted is not None:
        source = unnest("insert", columns_of(documents, (key, *inserted)))
        names = ", ".join(q.quote(c) for c in (key, *inserted))
        cells = ", ".join(read(documents, (key, *inserted)))
        parts.append(
            f"dn AS (INSERT INTO {doc} ({names}) SELECT {cells} FROM {source} ORDER BY u.n"
            f" ON CONFLICT DO NOTHING RETURNING {key_sql} AS k)"
        )
        written.append("SELECT k FROM dn")
    if touched:
        source = unnest("touch", by_key + at_read)
        parts.append(
            f"dt AS (UPDATE {doc} AS x SET {version} = x.{version} FROM {source}"
            f" WHERE x.{key_sql} = u.c0 AND x.{version} = u.c1 AND {seen} RETURNING x.{key_sql} AS k)"
        )
        written.append("SELECT k FROM dt")
    counted = " + ".join(f"(SELECT count(*) FROM {w.rsplit(' ', 1)[1]})" for w in written)
    ok = f"({counted}) = $1::INTEGER"
    if inbox is not None:
        source = unnest("inbox", columns_of(inbox, inbox_columns))
        names = ", ".join(q.quote(c) for c in inbox_columns)
        cells = ", ".join(read(inbox, inbox_columns))
        event = q.quote("event_id")
        parts.append(
            f"i AS (INSERT INTO {q.format_table(inbox)} ({names}) SELECT {cells} FROM {source}"
            f" WHERE {ok} ORDER BY u.n ON CONFLICT DO NOTHING RETURNING {event} AS e)"
        )
        ok += " AND (SELECT count(*) FROM i) = $2::INTEGER"
    for index, (table, columns) in enumerate(tables):
        source = unnest(index, columns_of(table, columns))
        names = ", ".join(q.quote(c) for c in columns)
        row_cells = read(table, columns)
        if index == 0 and returning:
            row_cells = leased_cells(list(columns), row_cells)
        cells = ", ".join(row_cells)
        returns = _returning(returning) if index == 0 else ""
        parts.append(
            f"t{index} AS (INSERT INTO {q.format_table(table)} ({names}) SELECT {cells} FROM {source}"
            f" WHERE {ok} ORDER BY u.n{returns})"
        )
    returned = _returned(returning if tables else ())
    inserted_ids = "ARRAY(SELECT e FROM i)" if inbox is not None else "ARRAY[]::TEXT[]"
    guard = f", {_refusal(ok, f'({counted})')}" if refuse else ""
    # $1 and $2 are named here too, so they have a type whatever else the statement has.
    sql = (
        f"WITH {', '.join(parts)} SELECT ARRAY({' UNION ALL '.join(written)}), {inserted_ids},"
        f" $1::INTEGER, $2::INTEGER{returned}, {_XID}{guard}"
    )
    return ManyPlan(sql, len(returning) if tables else 0, refuse, tuple(arrays))


def run_many(
    conn: Connection,
    statement: ManyPlan,
    keys: int,
    inbox: int,
    groups: Mapping[Group, Sequence[dict[str, Any]]],
) -> tuple[set[str], set[str], list[tuple[Any, ...]]]:
    """Send ``statement``: the keys of the documents written, the inbox ids inserted and what
    the rows of the first further table returned (none unless the plan returns some);
    :class:`Refused` when a refusing statement refused."""
    row = _send(conn, statement.sql, statement.parameters(keys, inbox, groups), statement.refuses)
    _written_by(conn, row[4 + statement.returns])
    returned = list(zip(*row[4 : 4 + statement.returns], strict=True)) if statement.returns else []
    return set(row[0]), set(row[1]), returned
