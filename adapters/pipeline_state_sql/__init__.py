"""SQLAlchemy 2 (async) adapter: durable state, history, transition log, outbox and inbox.

SQLite through aiosqlite is the embedded default; PostgreSQL through asyncpg is the
production database. Both implement the :class:`~pipeline_state.ports.Store` and
:class:`~pipeline_state.ports.Outbox` ports and pass the shipped contract suite::

    from pipeline_state import OutboxRelay, PipelineService
    from pipeline_state_sql import Settings, open

    # creates or upgrades the schema, closes the store when the block ends
    async with open(Settings(store="sqlite+aiosqlite:///state.db")) as store:
        service = PipelineService(store)
        relay = OutboxRelay(store, publisher, clock)
        ...

See the package's README for configuration, migrations and the relay's guarantees.
"""

from __future__ import annotations

# Re-exported for existing code (``name as name``), outside the curated list below.
from .codec import SCHEMA_VERSION as SCHEMA_VERSION
from .codec import decode_run as decode_run
from .codec import decode_state as decode_state
from .codec import encode_run as encode_run
from .codec import encode_state as encode_state
from .engine import create_engine
from .errors import SqlSettingsError
from .migrate import VERSION_TABLE as VERSION_TABLE
from .migrate import alembic_config as alembic_config
from .migrate import create_or_upgrade
from .migrate import current_revision as current_revision
from .migrate import head_revision as head_revision
from .queries import ArchivedRun as ArchivedRun
from .resources import open, open_results
from .results_store import SqlResultsStore, open_results_store
from .schema import METADATA as METADATA
from .settings import Settings
from .store import SqlStore, open_store

# What a user of the adapter imports (the README's "Public names" lists the same).
__all__ = [
    "Settings",
    "SqlResultsStore",
    "SqlSettingsError",
    "SqlStore",
    "create_engine",
    "create_or_upgrade",
    "open",
    "open_results",
    "open_results_store",
    "open_store",
]
