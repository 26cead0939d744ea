"""The app served by uvicorn (with the production server configuration) on a free loopback
port, in a thread of its own, over a store of any backend: in memory, a SQLite file or a
fresh PostgreSQL schema (``PIPELINE_STATE_TEST_POSTGRES``, default: the local server;
skipped without one, a failure under ``CI=true``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import uvicorn
from pipeline_state_http import HttpSettings, create_app
from pipeline_state_http.server import uvicorn_config

from pipeline_state import InMemoryStore, ManualClock, PipelineService
from tests.optional import unavailable

DEFAULT_POSTGRES = "postgresql+asyncpg://root@127.0.0.1:5432/test"
BACKENDS = ("memory", "sqlite", "postgres")

Seed = Callable[[PipelineService], Awaitable[None]]


def postgres_url() -> str:
    """The test server's URL; skips (fails under ``CI=true``) when it cannot be reached."""
    import asyncpg
    from sqlalchemy.engine import make_url

    url = os.environ.get("PIPELINE_STATE_TEST_POSTGRES", DEFAULT_POSTGRES)

    async def probe() -> str | None:
        dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        try:
            conn = await asyncpg.connect(dsn, timeout=3)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            return f"{type(exc).__name__}: {exc}"
        await conn.close()
        return None

    problem = asyncio.run(probe())
    if problem is not None:
        message = f"PostgreSQL at {url} is not reachable ({problem})"
        unavailable(message)
    return url


async def _pg_execute(url: str, sql: str) -> None:
    import asyncpg
    from sqlalchemy.engine import make_url

    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def _store(backend: str, workdir: Path, pg_url: str | None) -> Any:
    if backend == "memory":
        yield InMemoryStore()
        return
    from pipeline_state_sql import open_store

    if backend == "sqlite":
        store = await open_store(f"sqlite+aiosqlite:///{workdir / 'state.db'}")
        try:
            yield store
        finally:
            await store.close()
        return
    assert pg_url is not None
    async with pg_schema(pg_url) as schema:
        store = await open_store(pg_url, schema=schema, upgrade=True)
        try:
            yield store
        finally:
            await store.close()


@contextlib.asynccontextmanager
async def pg_schema(url: str, prefix: str = "ps_http") -> AsyncIterator[str]:
    """A new PostgreSQL schema's name, dropped with what it holds when the block ends."""
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    await _pg_execute(url, f'CREATE SCHEMA "{schema}"')
    try:
        yield schema
    finally:
        await _pg_execute(url, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@contextlib.contextmanager
def served(
    backend: str = "memory", settings: HttpSettings | None = None, seed: Seed | None = None
) -> Iterator[str]:
    """The base URL of a served app until the block ends."""
    pg_url = postgres_url() if backend == "postgres" else None  # skips before a thread starts
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    started, stop = threading.Event(), threading.Event()
    failure: list[BaseException] = []

    async def main() -> None:
        with tempfile.TemporaryDirectory() as workdir:
            async with _store(backend, Path(workdir), pg_url) as store:
                service = PipelineService(store, clock=ManualClock())
                if seed is not None:
                    await seed(service)
                app = create_app(service, settings=settings)
                config = uvicorn_config(app, "127.0.0.1", port, log_level="warning", lifespan="off")
                server = uvicorn.Server(config)
                serving = asyncio.create_task(server.serve(sockets=[sock]))
                while not server.started and not serving.done():  # noqa: ASYNC110 - a flag of uvicorn's
                    await asyncio.sleep(0.01)
                started.set()
                await asyncio.to_thread(stop.wait)
                server.should_exit = True
                await serving

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # reported to the test thread
            failure.append(exc)
        finally:
            started.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started.wait(60)
    if failure:
        raise failure[0]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        thread.join(30)
        sock.close()
    if failure:
        raise failure[0]


def wait_closed(conn: socket.socket, within: float) -> tuple[float, bytes]:
    """Read ``conn`` until the server closes it (or ``within`` seconds pass); returns the
    seconds it took and what was received."""
    started = time.monotonic()
    conn.settimeout(within)
    received = b""
    try:
        while chunk := conn.recv(4096):
            received += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return time.monotonic() - started, received
