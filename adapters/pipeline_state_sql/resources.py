"""Opening the SQL adapter's stores as async contexts: opened on entry, closed on exit.

::

    from pipeline_state_sql import Settings, open

    async with open(Settings(store_url="sqlite+aiosqlite:///state.db")) as store:
        service = PipelineService(store)
        ...
    # the store's connections are closed and its engine disposed here

Without settings, they are read from the ``PIPELINE_STATE_*`` variables; keyword arguments
(field names of :class:`~pipeline_state_sql.settings.Settings`) override either.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from .results_store import SqlResultsStore, open_results_store
from .settings import Settings
from .store import SqlStore, open_store

__all__ = ["open", "open_results"]


def _settings(settings: Settings | None, overrides: dict[str, Any]) -> Settings:
    if settings is None:
        return Settings.from_environ(**overrides)
    return settings.replace(**overrides) if overrides else settings


@contextlib.asynccontextmanager
async def open(settings: Settings | None = None, **overrides: Any) -> AsyncIterator[SqlStore]:
    """A :class:`~pipeline_state_sql.store.SqlStore` on a new engine, its schema created or
    upgraded first when ``store_upgrade`` is on; closed (engine disposed) when the block ends."""
    chosen = _settings(settings, overrides)
    store = await open_store(chosen.store_url, **chosen.store_options())
    try:
        yield store
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def open_results(settings: Settings | None = None, **overrides: Any) -> AsyncIterator[SqlResultsStore]:
    """The results read model's :class:`~pipeline_state_sql.results_store.SqlResultsStore`,
    opened and closed like :func:`open`."""
    chosen = _settings(settings, overrides)
    store = await open_results_store(chosen.store_url, **chosen.store_options())
    try:
        yield store
    finally:
        await store.close()
