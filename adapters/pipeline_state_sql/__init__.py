"""SQLAlchemy 2 (async) adapter: durable state, history, transition log, outbox and inbox.

SQLite through aiosqlite is the embedded default; PostgreSQL through asyncpg is the
production database. Both implement the :class:`~pipeline_state.ports.Store` and
:class:`~pipeline_state.ports.Outbox` ports and pass the shipped contract suite::

    from pipeline_state import OutboxRelay, PipelineService
    from pipeline_state_sql import open_store

    store = await open_store("sqlite+aiosqlite:///state.db")   # creates/upgrades the schema
    service = PipelineService(store)
    relay = OutboxRelay(store, publisher, clock)

See the package's README for configuration, migrations and the relay's guarantees.
"""

from __future__ import annotations

from .codec import SCHEMA_VERSION, decode_run, decode_state, encode_run, encode_state
from .engine import create_engine
from .migrate import VERSION_TABLE, alembic_config, create_or_upgrade, current_revision, head_revision
from .queries import ArchivedRun
from .results_store import SqlResultsStore, open_results_store
from .schema import METADATA
from .store import SqlStore, open_store

__all__ = [
    "METADATA",
    "SCHEMA_VERSION",
    "VERSION_TABLE",
    "ArchivedRun",
    "SqlResultsStore",
    "SqlStore",
    "alembic_config",
    "create_engine",
    "create_or_upgrade",
    "current_revision",
    "decode_run",
    "decode_state",
    "encode_run",
    "encode_state",
    "head_revision",
    "open_results_store",
    "open_store",
]
