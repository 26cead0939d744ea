"""Settings of the SQL adapter: the store's URL, schema, migrations, SQLite durability, lease.

Read from ``PIPELINE_STATE_*`` variables (see ``pipeline_state._settings.EnvironmentSettings``)
or given in code; :func:`~pipeline_state_sql.resources.open` opens a store from them. The
package README's table of variables is generated from this model.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field

from pipeline_state._catalog import MAX_DEADLINE_SECONDS
from pipeline_state._flags import parse_flag
from pipeline_state._settings import EnvironmentSettings

from .errors import SqlSettingsError

__all__ = ["DEFAULT_STORE_URL", "Settings"]

DEFAULT_STORE_URL = "sqlite+aiosqlite:///pipeline_state.db"


def _flag(value: Any) -> Any:
    return parse_flag(value) if isinstance(value, str) else value


def _upper(value: Any) -> Any:
    return value.strip().upper() if isinstance(value, str) else value


class Settings(EnvironmentSettings):
    """How the SQL store is opened (``serve --store URL`` overrides ``store``)."""

    error: ClassVar[type[Exception]] = SqlSettingsError

    store: str = Field(
        default=DEFAULT_STORE_URL,
        min_length=1,
        description="SQLAlchemy URL of the store: a SQLite file (`sqlite+aiosqlite:///path.db`) or "
        "`postgresql+asyncpg://user@host/db` (`serve --store` overrides it)",
    )
    store_upgrade: Annotated[bool, BeforeValidator(_flag)] = Field(
        default=True,
        description="create or migrate the SQL schema at start; `0` where migrations are a separate "
        "deployment step",
    )
    store_schema: str | None = Field(
        default=None, description="PostgreSQL schema of the store (the connections' `search_path`)"
    )
    sqlite_synchronous: Annotated[Literal["OFF", "NORMAL", "FULL", "EXTRA"], BeforeValidator(_upper)] = Field(
        default="FULL",
        description="SQLite `PRAGMA synchronous`: `FULL`, a commit survives a power cut; `NORMAL` (WAL), "
        "it survives a process crash, not a machine crash",
    )
    outbox_lease_seconds: float = Field(
        default=30.0,
        ge=1,
        le=MAX_DEADLINE_SECONDS,
        allow_inf_nan=False,
        description="how long a relay's claim on outbox rows lasts before another relay may take them "
        "(at least 1 s: a relay does not publish a row whose lease has ended, so a lease shorter than a "
        "publish would publish nothing; keep it well above the producer's request timeout)",
    )

    def store_options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~pipeline_state_sql.store.open_store` (after the URL)."""
        return {
            "upgrade": self.store_upgrade,
            "schema": self.store_schema,
            "lease": self.outbox_lease_seconds,
            "synchronous": self.sqlite_synchronous,
        }
