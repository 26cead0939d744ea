"""Opening the store named by ``serve --store URL``.

``memory://`` is the in-memory store (state is lost when the process ends; for trials and
tests). Any SQLAlchemy URL (``sqlite+aiosqlite:///file.db``,
``postgresql+asyncpg://user@host/db``) opens the SQL adapter, which creates or migrates its
tables first. The service only sees the :class:`~pipeline_state.ports.Store` and
:class:`~pipeline_state.ports.Outbox` ports.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs

from pipeline_state._memory import InMemoryStore
from pipeline_state.errors import StoreUnavailableError
from pipeline_state.ports import Outbox, Store

__all__ = ["MEMORY_URL", "OpenedStore", "is_memory_url", "open_store", "shown_url"]

MEMORY_URL = "memory://"


async def _nothing() -> None:
    return None


@attrs.frozen
class OpenedStore:
    """A store, its outbox (often the same object) and how to close them."""

    store: Store
    outbox: Outbox
    close: Callable[[], Awaitable[None]] = _nothing
    url: str = MEMORY_URL

    @property
    def durable(self) -> bool:
        return self.url != MEMORY_URL

    @property
    def shown_url(self) -> str:
        """:attr:`url` as logs and messages show it (:func:`shown_url`)."""
        return shown_url(self.url)


_SECRET_QUERY_KEYS = frozenset({"password", "passfile", "sslpassword", "sslkey"})
"""Query parameters of a store URL that may hold a secret (asyncpg reads a password there)."""


def shown_url(url: str) -> str:
    """``url`` as logs and error messages may show it: a password it holds is ``***``. A URL
    that does not parse is shown as its scheme only (whatever follows may be a secret)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
        if parsed.database is not None and "@" in parsed.database:
            # The password held ``@`` and ``/`` unencoded: the parser read part of it as the
            # host and the rest as the database. Nothing after the scheme can be trusted.
            return f"{parsed.drivername}://..."
        if parsed.host is not None and "@" in parsed.host:
            # An unencoded ``@`` in the password (``%40`` meant): the parser split it at the
            # first one, and the rest of the password reads as the host: it is not shown.
            parsed = parsed.set(host=parsed.host.rpartition("@")[2])
        secret = {k: "***" for k in parsed.query if k.lower() in _SECRET_QUERY_KEYS}
        return parsed.update_query_dict(secret).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        scheme, found, _ = url.partition("://")
        return f"{scheme}://..." if found else "(not a URL)"


def is_memory_url(url: str) -> bool:
    """Whether ``url`` names the in-memory store (``memory://``)."""
    return url.rstrip("/") in (MEMORY_URL.rstrip("/"), "memory:")


async def open_store(
    url: str,
    *,
    upgrade: bool | None = None,
    schema: str | None = None,
    lease: float | None = None,
    synchronous: str | None = None,
) -> OpenedStore:
    """Open the store at ``url`` (see the module docstring).

    SQL only: ``upgrade`` creates or migrates the schema first (``None``: the SQL adapter's
    default, which upgrades SQLite files and leaves other databases to a deployment step);
    ``schema`` is the PostgreSQL schema to use; ``lease`` is how long (seconds) a relay's
    claim on outbox rows lasts before another relay may take them over; ``synchronous`` is
    SQLite's ``PRAGMA synchronous`` (``FULL``: a commit survives a power cut; ``NORMAL``
    in WAL mode: it survives a crash of the process but not of the machine).
    """
    if is_memory_url(url):
        memory = InMemoryStore(keep_transitions=False)
        return OpenedStore(memory, memory, url=MEMORY_URL)
    options: dict[str, Any] = {
        "upgrade": upgrade,
        "schema": schema,
        "lease": lease,
        "synchronous": synchronous,
    }
    return await _open_sql(url, {k: v for k, v in options.items() if v is not None})


async def _open_sql(url: str, options: dict[str, Any]) -> OpenedStore:
    try:
        import pipeline_state_sql
    except ImportError as exc:  # the sql extra is not installed
        raise StoreUnavailableError(f"the SQL store needs the sql extra ({exc})") from exc
    from pipeline_state_sql.migrate import check_revision

    settings = pipeline_state_sql.Settings.from_environ({}, store=url, **sql_fields(options))
    resources = contextlib.AsyncExitStack()
    store = await resources.enter_async_context(pipeline_state_sql.open(settings))
    if not settings.store_upgrade:  # migrations are a separate step: refuse a store not migrated
        try:
            await check_revision(store.engine)
        except BaseException:
            await resources.aclose()
            raise
    return OpenedStore(store, store, resources.aclose, url)


SQL_FIELDS: Mapping[str, str] = {
    "upgrade": "store_upgrade",
    "schema": "store_schema",
    "lease": "outbox_lease_seconds",
    "synchronous": "sqlite_synchronous",
}
"""Each option of :func:`open_store` and the field of the SQL adapter's settings it sets."""


def sql_fields(options: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`open_store`'s options as fields of the SQL adapter's settings."""
    return {SQL_FIELDS[key]: value for key, value in options.items()}
