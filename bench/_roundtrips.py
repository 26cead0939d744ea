"""Counting what a unit of work sends: statements and round trips, on SQLite and PostgreSQL.

* :class:`Statements` counts the statements SQLAlchemy sends on an engine (its
  ``before_cursor_execute`` event), by first word, and the commits.
* :class:`WireTurns` is a loopback TCP proxy in front of a PostgreSQL server that counts
  round trips: each time the client sends after the server answered (or first) is one. It
  sees what the driver really sends: ``BEGIN`` and ``COMMIT``, statements prepared, each
  execute, whatever SQLAlchemy's events do not show.
* :func:`thread_hops` counts the round trips of a SQLite store: hops to aiosqlite's
  worker thread (each statement, and the ``COMMIT``, costs one unless the driver queues it,
  see :mod:`pipeline_state_sql.driver`).

Used by ``bench/statements.py`` and by ``tests/sql/test_sql_round_trips.py`` (counts are
asserted there, never timings).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

from pipeline_state_sql.driver import LeanConnection
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["Statements", "WireTurns", "thread_hops"]


class Statements:
    """The statements sent on ``engine`` (all its connections), by first word; ``COMMIT``
    counts the transactions that wrote and committed. :meth:`take` returns the counts and starts again."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.seen: Counter[str] = Counter()
        self._engine = engine.sync_engine
        event.listen(self._engine, "before_cursor_execute", self._statement)
        event.listen(self._engine, "commit", self._commit)

    def _statement(self, conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        verb = statement.lstrip().split(None, 1)[0].upper()
        self.seen[verb] += 1
        if verb != "SELECT":
            conn.info["counted_write"] = True

    def _commit(self, conn: Any) -> None:
        # A read ends its (driver-less) transaction with a commit too: only writes count.
        if conn.info.pop("counted_write", False):
            self.seen["COMMIT"] += 1

    def take(self) -> Counter[str]:
        seen, self.seen = self.seen, Counter()
        return seen

    def close(self) -> None:
        event.remove(self._engine, "before_cursor_execute", self._statement)
        event.remove(self._engine, "commit", self._commit)


class WireTurns:
    """A TCP proxy on 127.0.0.1 in front of ``host:port`` counting round trips (all the
    connections through it): :attr:`turns`; :meth:`take` returns it and starts again."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.turns = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def bound(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def url(self, url: str | URL) -> URL:
        """``url`` pointed at this proxy."""
        return make_url(url).set(host="127.0.0.1", port=self.bound)

    def take(self) -> int:
        turns, self.turns = self.turns, 0
        return turns

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(self.host, self.port)
        answered = [True]  # the server spoke last (a new connection: the client's turn)

        async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client: bool) -> None:
            try:
                while data := await reader.read(65536):
                    if client and answered[0]:
                        self.turns += 1
                    answered[0] = not client
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    writer.close()

        tasks = [
            asyncio.create_task(pump(client_r, server_w, True)),
            asyncio.create_task(pump(server_r, client_w, False)),
        ]
        self._tasks.update(tasks)
        try:
            await asyncio.gather(*tasks)
        finally:
            self._tasks.difference_update(tasks)


@contextlib.asynccontextmanager
async def wire_turns(url: str | URL) -> AsyncIterator[WireTurns]:
    """A :class:`WireTurns` proxy in front of the server of ``url``, closed afterwards."""
    parsed = make_url(url)
    proxy = WireTurns(parsed.host or "127.0.0.1", parsed.port or 5432)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()


class _Hops:
    def __init__(self) -> None:
        self.count = 0

    def take(self) -> int:
        count, self.count = self.count, 0
        return count


@contextlib.contextmanager
def thread_hops() -> Iterator[_Hops]:
    """Count the hops of every :class:`~pipeline_state_sql.driver.LeanConnection` to its
    worker thread while inside (``.count``, ``.take()``)."""
    hops = _Hops()
    original: Any = LeanConnection._execute

    async def counted(self: LeanConnection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        hops.count += 1
        return await original(self, fn, *args, **kwargs)

    setattr(LeanConnection, "_execute", counted)  # noqa: B010 - restored below
    try:
        yield hops
    finally:
        setattr(LeanConnection, "_execute", original)  # noqa: B010
