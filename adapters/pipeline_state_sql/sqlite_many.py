"""SQLite: the compare-and-sets of several documents in one ``UPDATE ... FROM (VALUES ...)``.

A ``commit_many`` on SQLite ran one ``UPDATE`` per change, each a statement through
SQLAlchemy and a hop to aiosqlite's thread. When each document's changes follow one another
(:meth:`~pipeline_state_sql.unit_of_work.UnitOfWork.write_many_rows` folds them into one row
per document: the version read first, the columns written last), all of them are one
statement::

    UPDATE batches SET status = v.column3, ... FROM (VALUES (?, ?, ...), ...) AS v
    WHERE batches.batch_id = v.column1 AND batches.version = v.column2
    RETURNING batches.batch_id

It returns the key of every row it wrote; a key missing is a lost compare-and-set, which the
caller turns into the error the changes one by one would have raised. Given the events the
changes of each document record (``events``), the statement also checks that the inbox holds
none of them (``AND NOT EXISTS (SELECT 1 FROM inbox WHERE event_id IN (...))``, the events
of the statement's documents): when it writes, the caller may insert the inbox rows with a
plain ``INSERT``, which the driver sends with the next statement or the ``COMMIT`` (SQLite has
one writer: from this statement on, no other can add those events). A statement that
writes nothing for that reason leaves the caller to tell which error it is. Values go through
each column's own bind processing (aware UTC times, JSON documents), as SQLAlchemy would
send them. Rows are sent in chunks that keep under SQLite's limit on parameters.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Dialect, Table

__all__ = ["update_many"]

_MAX_PARAMETERS = 32766  # SQLITE_MAX_VARIABLE_NUMBER since SQLite 3.32
_Convert = Callable[[Any], Any] | None


@functools.lru_cache(maxsize=64)
def _converters(dialect: Dialect, table: Table, columns: tuple[str, ...]) -> tuple[_Convert, ...]:
    return tuple(table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in columns)


@functools.lru_cache(maxsize=256)
def _sql(
    dialect: Dialect,
    table: Table,
    key: str,
    columns: tuple[str, ...],
    rows: int,
    inbox: Table | None,
    events: int,
) -> str:
    quote = dialect.identifier_preparer.quote
    name = dialect.identifier_preparer.format_table(table)
    # v.column1 is the key, v.column2 the version read, then the columns written.
    sets = ", ".join(f"{quote(column)} = v.column{index + 3}" for index, column in enumerate(columns))
    row = "(" + ", ".join("?" * (len(columns) + 2)) + ")"
    unseen = ""
    if inbox is not None and events:
        inbox_name = dialect.identifier_preparer.format_table(inbox)
        unseen = f" AND NOT EXISTS (SELECT 1 FROM {inbox_name} WHERE event_id IN ({', '.join('?' * events)}))"
    return (
        f"UPDATE {name} SET {sets} FROM (VALUES {', '.join([row] * rows)}) AS v"
        f" WHERE {name}.{quote(key)} = v.column1 AND {name}.version = v.column2{unseen}"
        f" RETURNING {name}.{quote(key)}"
    )


def update_many(
    conn: Connection,
    table: Table,
    key: str,
    columns: tuple[str, ...],
    rows: Sequence[dict[str, Any]],
    inbox: tuple[Table, Mapping[Any, Sequence[str]]] | None = None,
) -> set[Any]:
    """Compare-and-set ``rows`` of ``table`` (each: ``key``, ``read``, then ``columns``; one
    row per document); the keys of the rows written. ``inbox``: the inbox table and, per
    document key, the events its changes record, which the inbox must not hold."""
    dialect = conn.dialect
    converters = _converters(dialect, table, columns)
    width = len(columns) + 2
    events_of = {} if inbox is None else inbox[1]
    written: set[Any] = set()
    start = 0
    while start < len(rows):
        chunk: list[dict[str, Any]] = []
        events: list[str] = []
        used = 0
        for row in rows[start:]:
            more = events_of.get(row[key], ())
            if chunk and used + width + len(more) > _MAX_PARAMETERS:
                break
            chunk.append(row)
            events.extend(more)
            used += width + len(more)
        start += len(chunk)
        parameters: list[Any] = []
        for row in chunk:
            parameters.append(row[key])
            parameters.append(row["read"])
            for name, convert in zip(columns, converters, strict=True):
                value = row[name]
                parameters.append(value if convert is None or value is None else convert(value))
        parameters.extend(events)
        sql = _sql(dialect, table, key, columns, len(chunk), None if inbox is None else inbox[0], len(events))
        written.update(r[0] for r in conn.exec_driver_sql(sql, tuple(parameters)))
    return written
