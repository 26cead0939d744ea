"""A lean aiosqlite connection: at most one hop to aiosqlite's thread per statement.

aiosqlite runs every sqlite3 call on a worker thread of its connection; each call is a hop
(queue the call, wake the thread, wake the event loop with the result). Used through
SQLAlchemy's aiosqlite dialect, a statement costs three hops: create the cursor, execute
(and fetch), close the cursor. :class:`LeanConnection` is an :class:`aiosqlite.Connection`
whose cursors do all three in one hop: the sqlite3 cursor is created, executed, drained and
closed on the worker thread, and its description, row count, last row id and rows come
back together.

One more saving: a plain ``INSERT`` (no ``RETURNING``, no conflict clause) run inside a
transaction, with ``executemany`` or ``execute``, has nothing to report but its row count,
which is the number of rows given (a plain INSERT inserts them all or fails; its last row
id is not reported, ``None``). Such statements are queued
and sent in the same hop as the next statement, or the ``COMMIT``: same transaction, same
order, and an error still fails the transaction (reported by that next call). A rollback
or close drops the queue, as the database would have dropped the rows. Outside a
transaction (``isolation_level`` ``None``) nothing is queued.

Everything else (transactions, closing, isolation level) is aiosqlite's own. It relies on
:meth:`aiosqlite.Connection._execute` (run a callable on the connection's thread), which
aiosqlite's own cursor uses too.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import dialect as aiosqlite_dialect
from sqlalchemy.engine import URL

__all__ = ["LeanConnection", "LeanCursor", "lean_creator"]

_Outcome = tuple[Any, int, int | None, list[Any]]
_Queued = list[tuple[str, list[Any]]]


def _flush(conn: sqlite3.Connection, queued: _Queued) -> None:
    for sql, rows in queued:
        conn.executemany(sql, rows).close()


def _run(conn: sqlite3.Connection, queued: _Queued, sql: str, parameters: Any, many: bool) -> _Outcome:
    _flush(conn, queued)
    cursor = conn.cursor()
    try:
        if many:
            cursor.executemany(sql, parameters)
        else:
            cursor.execute(sql, parameters)
        rows = cursor.fetchall() if cursor.description else []
        return cursor.description, cursor.rowcount, cursor.lastrowid, rows
    finally:
        cursor.close()


def _then(conn: sqlite3.Connection, queued: _Queued, end: Callable[[], None]) -> None:
    _flush(conn, queued)
    end()


def _deferrable(sql: str) -> bool:
    head = sql.lstrip()[:7].upper()
    upper = sql.upper()
    return (
        head == "INSERT "
        and "RETURNING" not in upper
        and " ON CONFLICT" not in upper
        and " OR " not in upper[:20]
    )


class LeanCursor:
    """A DB-API-like async cursor whose every statement is a single hop."""

    def __init__(self, connection: LeanConnection) -> None:
        self._connection = connection
        self.arraysize = 1
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self._rows: list[Any] = []

    async def _call(self, sql: str, parameters: Any, many: bool) -> LeanCursor:
        connection = self._connection
        conn = connection._conn  # raises ValueError once closed, as aiosqlite does
        queued = connection._take_queue()
        outcome: _Outcome = await connection._execute(  # type: ignore[no-untyped-call]
            _run, conn, queued, sql, parameters, many
        )
        self.description, self.rowcount, self.lastrowid, self._rows = outcome
        return self

    async def execute(self, sql: str, parameters: Iterable[Any] | None = None) -> LeanCursor:
        row = () if parameters is None else parameters
        if self._deferred(sql, [row]):
            return self
        return await self._call(sql, row, False)

    async def executemany(self, sql: str, parameters: Iterable[Iterable[Any]]) -> LeanCursor:
        rows = list(parameters)
        if self._deferred(sql, rows):
            return self
        return await self._call(sql, rows, True)

    def _deferred(self, sql: str, rows: list[Any]) -> bool:
        """Queue a plain INSERT of ``rows`` inside a transaction (see the module doc)."""
        connection = self._connection
        if connection.isolation_level is None or not _deferrable(sql):
            return False
        connection._conn  # noqa: B018 - raises ValueError once closed, as aiosqlite does
        connection._queue.append((sql, rows))
        self.description, self.rowcount, self.lastrowid, self._rows = None, len(rows), None, []
        return True

    async def fetchone(self) -> Any:
        return self._rows.pop(0) if self._rows else None

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        count = self.arraysize if size is None else size
        taken, self._rows = self._rows[:count], self._rows[count:]
        return taken

    async def fetchall(self) -> list[Any]:
        rows, self._rows = self._rows, []
        return rows

    async def close(self) -> None:
        self._rows = []

    async def __aenter__(self) -> LeanCursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class _Opened:
    """What ``cursor()`` returns: awaitable and an async context manager, like aiosqlite's."""

    def __init__(self, cursor: LeanCursor) -> None:
        self._cursor = cursor

    def __await__(self) -> Any:
        return self.__aenter__().__await__()

    async def __aenter__(self) -> LeanCursor:
        return self._cursor

    async def __aexit__(self, *exc: object) -> None:
        await self._cursor.close()


class LeanConnection(aiosqlite.Connection):
    """An aiosqlite connection whose cursors cost one thread hop per statement (or none)."""

    def __init__(self, connector: Callable[[], sqlite3.Connection], iter_chunk_size: int) -> None:
        super().__init__(connector, iter_chunk_size)
        self._queue: _Queued = []

    @property
    def pending(self) -> bool:
        """Whether queued INSERTs wait for the next statement or the commit."""
        return bool(self._queue)

    def _take_queue(self) -> _Queued:
        queued, self._queue = self._queue, []
        return queued

    def cursor(self) -> Any:
        return _Opened(LeanCursor(self))

    async def commit(self) -> None:
        """Send the queued INSERTs and commit, in one hop (none when nothing is open)."""
        if not self._queue and not self.in_transaction:
            return
        await self._execute(_then, self._conn, self._take_queue(), self._conn.commit)  # type: ignore[no-untyped-call]

    async def rollback(self) -> None:
        """Drop the queued INSERTs and roll back (no hop when nothing is open)."""
        self._queue = []
        if self.in_transaction:
            await super().rollback()

    async def close(self) -> None:
        self._queue = []
        await super().close()


def lean_creator(url: URL, connect_args: Mapping[str, Any] | None = None) -> Callable[[], Any]:
    """An ``async_creator`` for :func:`~sqlalchemy.ext.asyncio.create_async_engine` opening
    :class:`LeanConnection` objects with the arguments SQLAlchemy's dialect would use (and
    ``connect_args``, which the engine does not pass to an ``async_creator`` itself)."""
    args: Sequence[Any]
    args, kwargs = aiosqlite_dialect().create_connect_args(url)
    kwargs = {**kwargs, **(connect_args or {})}

    async def create() -> LeanConnection:
        connection = LeanConnection(partial(sqlite3.connect, *args, **kwargs), 64)
        connection._thread.daemon = True  # as SQLAlchemy does for aiosqlite's threads
        await connection
        return connection

    return create
