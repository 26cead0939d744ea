"""Long-lived connections ("lanes") that a store reuses without pool check-outs.

Checking a connection out of SQLAlchemy's pool and back in costs a few hundred
microseconds of Python per operation, more than many of the store's statements. A
:class:`Lanes` object keeps up to ``size`` connections of an engine open and lends one to
one operation at a time: SQLite stores use one writing lane (SQLite admits one writer at a
time) and one reading lane; PostgreSQL stores a few of each.

After anything but a clean outcome (a result, or a
:class:`~pipeline_state.errors.StoreError` raised by the store's own checks, which leaves
the transaction rolled back) the lane's connection is closed, and a new one is opened when
needed: a connection in an unknown state is never reused.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Concatenate, ParamSpec, TypeVar

from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import StaticPool

from pipeline_state.errors import StoreError

from .engine import is_postgres

__all__ = ["Lanes", "alone", "in_transaction", "outside_transaction", "reader_writer_lanes"]

_P = ParamSpec("_P")
_R = TypeVar("_R")


def in_transaction(
    conn: Connection,
    fn: Callable[Concatenate[Connection, _P], _R],
    /,
    *args: _P.args,
    **kwargs: _P.kwargs,
) -> _R:
    """Run ``fn`` in a transaction on ``conn``: committed if it returns, else rolled back."""
    with conn.begin():
        return fn(conn, *args, **kwargs)


def alone(
    conn: Connection,
    fn: Callable[Concatenate[Connection, _P], _R],
    /,
    *args: _P.args,
    **kwargs: _P.kwargs,
) -> _R:
    """Run ``fn`` on ``conn`` with the database connection in autocommit, then put it back:
    each statement ``fn`` sends is a transaction of its own (no ``BEGIN``, no ``COMMIT``
    round trip), so ``fn`` must send one statement that writes all it writes, as PostgreSQL's
    one-statement unit of work does (:func:`pipeline_state_sql.uow.write_alone`).

    The switch is the driver connection's ``autocommit`` attribute (asyncpg's adapter and
    psycopg have it), not SQLAlchemy's isolation-level option: that option queues a reset
    on the pooled connection every time it is set, and a lane keeps its connection open
    for the store's lifetime."""
    driver = conn.connection.dbapi_connection
    assert driver is not None
    driver.autocommit = True
    try:
        result = fn(conn, *args, **kwargs)
    except BaseException:
        with contextlib.suppress(Exception):  # the caller's error matters, not this one's
            conn.rollback()
        driver.autocommit = False
        raise
    # Ends SQLAlchemy's own record of a transaction; the database has none open, so nothing
    # is sent (what the statement wrote committed with it).
    conn.rollback()
    driver.autocommit = False
    return result


def outside_transaction(
    conn: Connection,
    fn: Callable[Concatenate[Connection, _P], _R],
    /,
    *args: _P.args,
    **kwargs: _P.kwargs,
) -> _R:
    """Run a read ``fn`` on ``conn`` and end the transaction SQLAlchemy begins for it (the
    database itself runs the statement on its own: autocommit or a driver that only opens
    transactions for writes), so the lane's connection is left with no transaction."""
    try:
        result = fn(conn, *args, **kwargs)
    except BaseException:
        conn.rollback()
        raise
    conn.commit()
    return result


class Lanes:
    """Up to ``size`` open connections of ``engine``, each used by one operation at a time."""

    def __init__(self, engine: AsyncEngine, size: int) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self._engine = engine
        self._idle: list[AsyncConnection] = []
        self._slots = asyncio.Semaphore(size)
        self._closed = False

    async def run(
        self,
        fn: Callable[Concatenate[Connection, _P], _R],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _R:
        """``fn(connection, ...)`` on a lane (in a greenlet, through ``run_sync``)."""
        async with self._slots:
            conn = self._idle.pop() if self._idle else await self._engine.connect()
            try:
                result = await conn.run_sync(fn, *args, **kwargs)
            except StoreError:
                self._idle.append(conn)
                raise
            except BaseException:
                with contextlib.suppress(Exception):
                    await conn.close()
                raise
            if self._closed:
                await conn.close()
            else:
                self._idle.append(conn)
            return result

    async def close(self) -> None:
        """Close the idle connections (lanes in use close when their operation ends)."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(Exception):
                await conn.close()


def reader_writer_lanes(engine: AsyncEngine) -> tuple[Lanes, Lanes]:
    """The (readers, writers) lanes a store keeps on ``engine``.

    SQLite has one writer at a time anyway: one lane each. PostgreSQL: half the pool's size
    each, so the lanes never wait for the pool (readers in autocommit). One shared
    connection (an in-memory SQLite database): reads and writes take turns on one lane.
    """
    if is_postgres(engine):
        size = max(1, getattr(engine.pool, "size", lambda: 4)() // 2)
        return Lanes(engine.execution_options(isolation_level="AUTOCOMMIT"), size), Lanes(engine, size)
    if isinstance(engine.pool, StaticPool):
        shared = Lanes(engine, 1)
        return shared, shared
    return Lanes(engine, 1), Lanes(engine, 1)
