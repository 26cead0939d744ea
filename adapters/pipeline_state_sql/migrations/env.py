"""Alembic environment of the SQL adapter.

Run programmatically by :func:`pipeline_state_sql.migrate.create_or_upgrade`, which passes
an open connection in ``config.attributes["connection"]``. From the command line (with a
config from :func:`pipeline_state_sql.migrate.alembic_config`) it opens the URL itself, or
renders SQL in offline mode.
"""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import context
from sqlalchemy import Connection

from pipeline_state_sql.engine import create_engine
from pipeline_state_sql.migrate import VERSION_TABLE
from pipeline_state_sql.schema import METADATA

config = context.config


def _configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=METADATA,
        version_table=VERSION_TABLE,
        render_as_batch=True,  # SQLite cannot ALTER most things: later revisions copy tables
        compare_type=True,
        **kwargs,
    )


def _run(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


async def _run_on_url(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_run)
    finally:
        await engine.dispose()


def main() -> None:
    url = config.get_main_option("sqlalchemy.url")
    if context.is_offline_mode():
        _configure(url=url, literal_binds=True, dialect_opts={"paramstyle": "named"})
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
    elif url:
        asyncio.run(_run_on_url(url))
    else:
        raise RuntimeError("no connection and no sqlalchemy.url to migrate")


main()
