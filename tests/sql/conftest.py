"""Fixtures of the SQL adapter tests: SQLite files and per-test PostgreSQL schemas.

PostgreSQL comes from ``PIPELINE_STATE_TEST_POSTGRES`` (default: the local server). Each
test gets its own schema, created before and dropped after. Without a server the PostgreSQL
tests skip locally and fail under ``CI=true``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import attrs
import pytest
from pipeline_state_sql import SqlStore, create_engine, create_or_upgrade, open_store
from sqlalchemy import event
from sqlalchemy.engine import make_url

from tests.cli_kit import Cli, store_args
from tests.optional import unavailable

__all__: list[str] = []

_T = TypeVar("_T")

DEFAULT_DSN = "postgresql+asyncpg://root@127.0.0.1:5432/test"


@attrs.frozen
class Database:
    """A database URL and, on PostgreSQL, the schema a test owns in it."""

    url: str
    schema: str | None = None


def _driver_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _in_thread(work: Coroutine[Any, Any, _T]) -> _T:
    """Run ``work`` on a loop of its own (sync fixtures may run while a test's loop runs)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, work).result(timeout=60)


async def _execute(url: str, sql: str) -> None:
    conn = await asyncpg.connect(_driver_dsn(url), timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _probe(url: str) -> str | None:
    try:
        conn = await asyncpg.connect(_driver_dsn(url), timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}"
    await conn.close()
    return None


@pytest.fixture(scope="session")
def postgres_url() -> str:
    url = os.environ.get("PIPELINE_STATE_TEST_POSTGRES", DEFAULT_DSN)
    problem = _in_thread(_probe(url))
    if problem is not None:
        message = f"PostgreSQL at {url} is not reachable ({problem})"
        unavailable(message)
    return url


@pytest.fixture
def pg(postgres_url: str) -> Iterator[Database]:
    """A fresh, empty schema of its own for this test (dropped afterwards)."""
    schema = f"ps_test_{uuid.uuid4().hex[:12]}"
    _in_thread(_execute(postgres_url, f'CREATE SCHEMA "{schema}"'))
    try:
        yield Database(postgres_url, schema)
    finally:
        _in_thread(_execute(postgres_url, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"


@pytest.fixture
async def sqlite_store(sqlite_url: str) -> AsyncIterator[SqlStore]:
    store = await open_store(sqlite_url)
    yield store
    await store.close()


@pytest.fixture
async def pg_store(pg: Database) -> AsyncIterator[SqlStore]:
    store = await open_store(pg.url, schema=pg.schema, upgrade=True)
    yield store
    await store.close()


StoreMaker = Callable[[], Awaitable[SqlStore]]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database(backend: str, request: pytest.FixtureRequest) -> Database:
    """An empty database of ``backend``: a SQLite file, or a PostgreSQL schema."""
    if backend == "sqlite":
        return Database(str(request.getfixturevalue("sqlite_url")))
    target: Database = request.getfixturevalue("pg")
    return target


@pytest.fixture
async def make_store(database: Database) -> AsyncIterator[StoreMaker]:
    """Opens stores (each on its own engine) on one migrated database of ``backend``."""
    url, schema = database.url, database.schema
    engine = create_engine(url, schema=schema)
    await create_or_upgrade(engine)
    await engine.dispose()
    opened: list[SqlStore] = []

    async def make() -> SqlStore:
        store = await open_store(url, schema=schema, upgrade=False)
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


@pytest.fixture
async def sql_store(make_store: StoreMaker) -> SqlStore:
    """A migrated store on SQLite (file, WAL) or PostgreSQL (own schema)."""
    return await make_store()


@contextmanager
def statements(store: SqlStore) -> Iterator[list[str]]:
    """The SQL statements the store's engine sends while the block runs (whitespace folded)."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(" ".join(statement.split()))

    engine = store.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


@pytest.fixture
def db(database: Database) -> Database:
    """The test's database (the operator command tests' name for it)."""
    return database


@pytest.fixture
def cli(db: Database, capsys: pytest.CaptureFixture[str]) -> Cli:
    """``pipeline-state`` run in process against the test's database."""
    return Cli(capsys, store_args(db))
