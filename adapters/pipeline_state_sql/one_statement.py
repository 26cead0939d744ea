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

Each table's rows travel as one array per column (``unnest`` keeps their order, ``ORDER BY``
the ordinality makes it explicit, so row ids follow it). The statement text depends only on
which parts a change has (document mode, inbox row, which tables get rows) and the column
names, so a few texts are built once each and asyncpg reuses their prepared statements.
Values go through each column type's own bind processing (aware UTC times, JSON documents
serialised; JSON travels as text and is cast in the statement).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, Literal

import attrs
from sqlalchemy import JSON, Column, Connection, Dialect, Table

__all__ = ["Mode", "Plan", "Rows", "plan"]

Mode = Literal["insert", "update", "touch_at_read", "touch_any"]
"""How the document is compare-and-set: ``insert`` (no row expected), ``update`` (the row at
the version read), ``touch_at_read`` (no new document; the row at the version read must
exist) and ``touch_any`` (no new document, no version read: no row may exist)."""

Rows = Sequence[tuple[Table, Sequence[dict[str, Any]]]]
"""Rows to insert after the inbox row, table by table, each table's rows in order."""

_Convert = Callable[[Any], Any]


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
    _scalars: tuple[tuple[str, _Column], ...]
    _arrays: tuple[tuple[int, _Column], ...]

    def parameters(self, scalars: dict[str, Any], tables: Rows) -> tuple[Any, ...]:
        """The parameters: the named scalars, then each table's columns as arrays."""
        out: list[Any] = [column.value(scalars[name]) for name, column in self._scalars]
        for index, column in self._arrays:
            out.append([column.value(row[column.key]) for row in tables[index][1]])
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
) -> Plan:
    """The statement of a unit of work of this shape (see the module doc). Scalars are named
    ``d:<column>`` (the document row), ``d:read`` (the version read), ``i:<column>`` (the
    inbox row); ``tables`` gives each further table and the columns its rows fill."""
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
        read = ", ".join(
            f"u.c{n}::{c.sql_type}" if c.param_type != c.sql_type else f"u.c{n}"
            for n, c in enumerate(described)
        )
        parts.append(
            f"t{index} AS (INSERT INTO {q.format_table(table)} ({names}) SELECT {read}"
            f" FROM unnest({', '.join(unnest)}) WITH ORDINALITY AS u({aliases}, n)"
            f" WHERE {ok} ORDER BY u.n)"
        )
    inserted = "(SELECT count(*) FROM i)" if inbox is not None else "1"
    sql = f"WITH {', '.join(parts)} SELECT (SELECT count(*) FROM d), {inserted}"
    return Plan(sql, document_ok, tuple(scalars), tuple(arrays))


def run(conn: Connection, statement: Plan, scalars: dict[str, Any], tables: Rows) -> tuple[int, int]:
    """Send ``statement`` with these values on ``conn``: the rows the compare-and-set
    counted and the inbox rows inserted (1 when there is no inbox row)."""
    row = conn.exec_driver_sql(statement.sql, statement.parameters(scalars, tables)).one()
    return int(row[0]), int(row[1])
