"""Migrations: an empty database upgraded by the shipped scripts has exactly the models' schema."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from pipeline_state_sql import (
    METADATA,
    VERSION_TABLE,
    alembic_config,
    create_engine,
    create_or_upgrade,
    current_revision,
    head_revision,
)
from sqlalchemy import Connection, inspect, text


def _diff(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(
        conn, opts={"version_table": VERSION_TABLE, "compare_type": True, "compare_server_default": True}
    )
    return list(compare_metadata(context, METADATA))


def _tables(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names())


async def _check_upgrade(url: str, schema: str | None = None) -> None:
    engine = create_engine(url, schema=schema)
    try:
        assert await current_revision(engine) is None
        async with engine.connect() as conn:
            assert await conn.run_sync(_tables) == set()
        await create_or_upgrade(engine)
        assert await current_revision(engine) == head_revision()
        async with engine.connect() as conn:
            assert await conn.run_sync(_tables) == {*METADATA.tables, VERSION_TABLE}
            assert await conn.run_sync(_diff) == []
        # Running it again (every start-up does) changes nothing.
        await create_or_upgrade(engine)
        assert await current_revision(engine) == head_revision()
    finally:
        await engine.dispose()


async def test_upgrade_of_empty_sqlite_matches_models(sqlite_url: str) -> None:
    await _check_upgrade(sqlite_url)


async def test_upgrade_of_empty_postgres_matches_models(pg: Any) -> None:
    await _check_upgrade(pg.url, pg.schema)


async def test_models_differ_from_an_empty_database(sqlite_url: str) -> None:
    """The comparison is not vacuous: before migrating, every table is reported missing."""
    engine = create_engine(sqlite_url)
    try:
        async with engine.connect() as conn:
            diffs = await conn.run_sync(_diff)
        added = {d[1].name for d in diffs if d[0] == "add_table"}
        assert added == set(METADATA.tables)
    finally:
        await engine.dispose()


async def test_concurrent_upgrades_on_postgres_do_not_collide(pg: Any) -> None:
    engines = [create_engine(pg.url, schema=pg.schema) for _ in range(3)]
    try:
        await asyncio.gather(*(create_or_upgrade(e) for e in engines))
        assert await current_revision(engines[0]) == head_revision()
    finally:
        for engine in engines:
            await engine.dispose()


async def test_sqlite_file_runs_in_wal_mode(sqlite_url: str) -> None:
    engine = create_engine(sqlite_url)
    try:
        await create_or_upgrade(engine)
        async with engine.connect() as conn:
            mode = (await conn.execute(text("PRAGMA journal_mode"))).scalar()
            sync = (await conn.execute(text("PRAGMA synchronous"))).scalar()
        assert mode == "wal"
        assert sync == 2  # FULL: a committed unit of work survives a power cut
    finally:
        await engine.dispose()


def test_alembic_commands_work_without_an_ini_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The shipped scripts through Alembic's own commands: SQL rendering and an upgrade."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    command.upgrade(alembic_config(url), "head", sql=True)
    script = capsys.readouterr().out
    assert "CREATE TABLE batches" in script
    assert "CREATE TABLE outbox" in script
    command.upgrade(alembic_config(url), "head")
    with sqlite3.connect(tmp_path / "cli.db") as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        (revision,) = conn.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchone()
    assert set(METADATA.tables) <= tables
    assert revision == head_revision()
