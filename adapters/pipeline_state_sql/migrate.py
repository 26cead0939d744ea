"""Schema migrations, shipped in the package and run programmatically.

The Alembic scripts live in ``pipeline_state_sql/migrations``; no ``alembic.ini`` is needed
at the user's side. :func:`create_or_upgrade` brings a database (an empty one included) to
the newest schema in one call and is safe to run at every start-up, by several processes
at once: on PostgreSQL it holds a transaction-level advisory lock, on SQLite the migration
transaction begins with ``BEGIN IMMEDIATE``; either way the migration is one transaction.
The revision is recorded in the table ``pipeline_state_alembic_version``, so an
application's own Alembic history in the same database is left alone.

For the command line, :func:`alembic_config` gives a :class:`alembic.config.Config`
pointing at the shipped scripts (``alembic_config(url)`` then ``alembic.command.*``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline_state.errors import StoreError

from .errors import DRIVER_ERRORS, translate

__all__ = [
    "MIGRATIONS",
    "VERSION_TABLE",
    "alembic_config",
    "check_revision",
    "create_or_upgrade",
    "current_revision",
    "head_revision",
]

MIGRATIONS = Path(__file__).with_name("migrations")
"""The directory holding the Alembic environment and revision scripts."""

VERSION_TABLE = "pipeline_state_alembic_version"
"""The table in which the applied revision is recorded."""

_LOCK_KEY = 0x70697065  # advisory lock id for migrations on PostgreSQL

log = logging.getLogger("pipeline_state_sql.migrate")


def alembic_config(url: str | None = None, *, connection: Connection | None = None) -> Config:
    """An Alembic config for the shipped scripts, on ``url`` or an open ``connection``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision shipped with this version of the package."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships revisions
        raise RuntimeError("no migration scripts found")
    return head


def _upgrade(connection: Connection, revision: str) -> None:
    if connection.dialect.name == "postgresql":
        taken = connection.execute(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        if not taken.scalar():
            log.info("waiting for another process's migration of the store (PostgreSQL advisory lock)")
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
    elif connection.dialect.name == "sqlite":
        # The driver begins transactions only before DML: make the DDL transactional too.
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    try:
        command.upgrade(alembic_config(connection=connection), revision)
    except CommandError as exc:
        raise StoreError(_unknown_revision(_current(connection), exc)) from exc


def _unknown_revision(current: str | None, exc: Exception) -> str:
    """Why a store could not be migrated: most often a schema written by a newer release."""
    return (
        f"the store's schema is at revision {current!r}, which this version cannot migrate "
        f"(its newest is {head_revision()!r}; was the store written by a newer release?): {exc}"
    )


async def check_revision(engine: AsyncEngine) -> None:
    """Raise :class:`~pipeline_state.errors.StoreError` unless the database is at this
    version's newest revision: what a store opened without migrating must check before it is
    used (a missing table would otherwise fail every unit of work)."""
    current, head = await current_revision(engine), head_revision()
    if current != head:
        raise StoreError(
            f"the store's schema is at revision {current!r}, this version needs {head!r}: "
            "migrate it first (PIPELINE_STATE_STORE_UPGRADE=1, or alembic upgrade with "
            "pipeline_state_sql.migrate.alembic_config)"
        )


def _current(connection: Connection) -> str | None:
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


async def create_or_upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Create the schema in an empty database, or upgrade it to ``revision`` (the newest).

    Raises :class:`~pipeline_state.errors.StoreUnavailableError` when the database cannot
    be reached.
    """
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade, revision)
    except StoreError:
        raise
    except DRIVER_ERRORS as exc:
        raise translate(exc) from exc


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at (``None`` for a database never migrated)."""
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_current)
    except DRIVER_ERRORS as exc:
        raise translate(exc) from exc
