"""Engines set up for the store: SQLite pragmas and transactions, PostgreSQL schemas.

:func:`create_engine` wraps :func:`sqlalchemy.ext.asyncio.create_async_engine`:

* **SQLite** (``sqlite+aiosqlite:///path.db``): WAL journal, ``synchronous`` (``FULL`` by
  default: a committed unit of work survives a power cut) and a busy timeout, which the
  switch to WAL honours too (several processes may open one new file at once). The driver
  opens a transaction with ``BEGIN IMMEDIATE`` right before the first statement that
  writes, so a writer holds the write lock from its first statement (no deadlock from a
  read lock upgraded late) and no round trip is spent on a separate ``BEGIN``; a statement
  that only reads runs on its own, seeing the last committed state. Connections are not
  rolled back when returned to the pool unless a transaction is still open (each driver
  call costs a hop to aiosqlite's thread; a rollback with nothing to undo is one).
* **PostgreSQL** (``postgresql+asyncpg://...``): ``schema`` sets the ``search_path`` of
  every connection, which is how the tests give each test its own schema. The pool holds
  up to :data:`POSTGRES_POOL_SIZE` connections (SQLAlchemy's default is 5): a store lends
  half of them to units of work and half to reads, so that many units of work can commit
  at once (opened as concurrency needs them; pass ``pool_size`` to change it).

Both install a lenient JSON reader: text that is not JSON comes back as
:class:`~pipeline_state_sql.codec.UnreadableDocument`, so the store can name the batch whose
row is corrupted instead of failing inside the driver.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from typing import Any, Literal

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, PoolResetState, StaticPool
from sqlalchemy.util import await_

from .codec import EncodedDocument, UnreadableDocument, document_text
from .driver import lean_creator
from .errors import SqlSettingsError

__all__ = ["POSTGRES_POOL_SIZE", "create_engine", "dumps", "is_postgres", "is_sqlite", "loads"]

POSTGRES_POOL_SIZE = 16
"""The default pool size on PostgreSQL: 8 writing and 8 reading connections per store. With
SQLAlchemy's 5, a store had 2 writing connections and 8 concurrent callers committed two at
a time (issue 16, point 4)."""

Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]


def dumps(value: Any) -> str:
    """Compact JSON, as stored (an :class:`~pipeline_state_sql.codec.EncodedDocument` is
    the JSON text already and is stored as it is)."""
    if isinstance(value, EncodedDocument):
        return value
    return document_text(value)


def loads(text: str) -> Any:
    """Parse stored JSON; text that is not JSON becomes an :class:`UnreadableDocument`."""
    try:
        return json.loads(text)
    except ValueError:
        return UnreadableDocument(text)


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


def is_postgres(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "postgresql"


_BACKENDS = {"sqlite": "sqlite+aiosqlite:///FILE.db", "postgresql": "postgresql+asyncpg://USER@HOST/DB"}


def check_store_url(url: str | URL, *, schema: str | None = None) -> URL:
    """``url`` parsed, when a store can be opened on it: a SQLite or PostgreSQL URL with an
    asyncio driver (``schema`` only on PostgreSQL). Raises
    :class:`~pipeline_state_sql.errors.SqlSettingsError` naming the problem; the message never
    repeats the URL, which may hold a password."""
    expected = f"expected {' or '.join(_BACKENDS.values())}"
    try:
        parsed = make_url(url.strip() if isinstance(url, str) else url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise SqlSettingsError(f"the store URL is not a database URL: {expected}") from None
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise SqlSettingsError(f"the store URL's port must be from 1 to 65535, got {parsed.port}")
    backend = parsed.get_backend_name()
    if backend not in _BACKENDS:
        raise SqlSettingsError(f"the store URL names the database {backend!r}: {expected}")
    try:
        dialect = parsed.get_dialect()
    except (NoSuchModuleError, ImportError):
        raise SqlSettingsError(
            f"the store URL names the driver {parsed.get_driver_name()!r}, which is not installed "
            f"or not known: {expected}"
        ) from None
    if not getattr(dialect, "is_async", False):
        raise SqlSettingsError(
            f"the store URL names the driver {parsed.get_driver_name()!r}, which is not an asyncio "
            f"driver: {expected}"
        )
    if backend == "sqlite" and schema is not None:
        raise SqlSettingsError("a store schema is a PostgreSQL option; SQLite has one schema per file")
    return parsed


def create_engine(
    url: str | URL,
    *,
    schema: str | None = None,
    busy_timeout: float = 5.0,
    synchronous: Synchronous = "FULL",
    lean: bool = True,
    **kwargs: Any,
) -> AsyncEngine:
    """An :class:`~sqlalchemy.ext.asyncio.AsyncEngine` configured for the store.

    ``schema`` (PostgreSQL only) becomes the connections' ``search_path``. ``busy_timeout``
    (seconds) and ``synchronous`` apply to SQLite, and so does ``lean``: connections are
    :class:`~pipeline_state_sql.driver.LeanConnection` objects (one hop to aiosqlite's thread
    per statement instead of three). Other keyword arguments go to
    :func:`~sqlalchemy.ext.asyncio.create_async_engine`.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    kwargs.setdefault("json_serializer", dumps)
    kwargs.setdefault("json_deserializer", loads)
    if backend == "sqlite":
        if schema is not None:
            raise ValueError("schema is a PostgreSQL option; SQLite has one schema per file")
        if parsed.database in (None, "", ":memory:"):
            # One shared connection, or every checkout would see a fresh empty database.
            kwargs.setdefault("poolclass", StaticPool)
        kwargs.setdefault("pool_reset_on_return", None)
        if lean and parsed.get_driver_name() == "aiosqlite":
            kwargs.setdefault("async_creator", lean_creator(parsed, kwargs.get("connect_args")))
        engine = create_async_engine(parsed, **kwargs)
        _configure_sqlite(engine, busy_timeout=busy_timeout, synchronous=synchronous)
        return engine
    if backend == "postgresql" and "poolclass" not in kwargs:  # another pool may not take a size
        kwargs.setdefault("pool_size", POSTGRES_POOL_SIZE)
    if backend == "postgresql" and schema is not None:
        connect_args = dict(kwargs.pop("connect_args", {}))
        settings = dict(connect_args.get("server_settings", {}))
        settings["search_path"] = schema
        connect_args["server_settings"] = settings
        kwargs["connect_args"] = connect_args
    return create_async_engine(parsed, **kwargs)


_WAL_FIRST_PAUSE = 0.005
_WAL_LONGEST_PAUSE = 0.1


def _switch_to_wal(dbapi_connection: Any, timeout: float) -> None:
    """``PRAGMA journal_mode = WAL``, waiting up to ``timeout`` seconds for other connections.

    A file still in rollback-journal mode (a new one) is switched under its write lock, taken
    while the switching connection already reads it; when another connection holds that
    lock, SQLite refuses at once ("database is locked") instead of calling the busy handler,
    since waiting could deadlock. So when several processes opened one new file at the same
    moment, now and then one of them failed. The switch is tried again after short pauses,
    spent on the event loop (the connect hook runs inside SQLAlchemy's greenlet), until
    ``timeout``.
    """
    deadline = time.monotonic() + timeout
    pause = _WAL_FIRST_PAUSE
    while True:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise
        finally:
            cursor.close()
        await_(asyncio.sleep(pause))
        pause = min(pause * 2, _WAL_LONGEST_PAUSE)


def _configure_sqlite(engine: AsyncEngine, *, busy_timeout: float, synchronous: Synchronous) -> None:
    if synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
        raise ValueError(f"unknown synchronous level {synchronous!r}")
    timeout_ms = int(busy_timeout * 1000)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {timeout_ms}")
        finally:
            cursor.close()
        _switch_to_wal(dbapi_connection, busy_timeout)
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA synchronous = {synchronous}")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()
        # The driver begins "BEGIN IMMEDIATE" before the first writing statement.
        dbapi_connection.isolation_level = "IMMEDIATE"

    @event.listens_for(engine.sync_engine, "reset")
    def _on_reset(dbapi_connection: Any, record: ConnectionPoolEntry, state: PoolResetState) -> None:
        # pool_reset_on_return=None: roll back only what is still open (a commit that failed).
        driver = dbapi_connection.driver_connection
        if getattr(driver, "in_transaction", True) or getattr(driver, "pending", False):
            dbapi_connection.rollback()
