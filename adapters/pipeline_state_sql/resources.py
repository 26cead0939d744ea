"""Opening the SQL adapter's stores as async contexts: opened on entry, closed on exit.

::

    from pipeline_state_sql import Settings, open

    async with open(Settings(store="sqlite+aiosqlite:///state.db")) as store:
        service = PipelineService(store)
        ...
    # the store's connections are closed and its engine disposed here

Without settings, they are read from the ``PIPELINE_STATE_*`` variables; keyword arguments
(field names of :class:`~pipeline_state_sql.settings.Settings`) override either.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, TypeVar

from .results_store import SqlResultsStore, open_results_store
from .settings import Settings
from .store import SqlStore, open_store

__all__ = ["open", "open_results"]


class _Closable(Protocol):
    async def close(self) -> None: ...


_S = TypeVar("_S", bound=_Closable)


@contextlib.asynccontextmanager
async def _opened(
    opener: Callable[..., Awaitable[_S]], settings: Settings | None, overrides: dict[str, Any]
) -> AsyncIterator[_S]:
    if settings is None:
        settings = Settings.from_environ(**overrides)
    elif overrides:
        settings = settings.replace(**overrides)
    store = await opener(settings.store, **settings.store_options())
    try:
        yield store
    finally:
        await store.close()


def open(settings: Settings | None = None, **overrides: Any) -> AbstractAsyncContextManager[SqlStore]:
    """A :class:`~pipeline_state_sql.store.SqlStore` on a new engine, its schema created or
    upgraded first when ``store_upgrade`` is on; closed (engine disposed) when the block ends."""
    return _opened(open_store, settings, overrides)


def open_results(
    settings: Settings | None = None, **overrides: Any
) -> AbstractAsyncContextManager[SqlResultsStore]:
    """The results read model's :class:`~pipeline_state_sql.results_store.SqlResultsStore`,
    opened and closed like :func:`open`."""
    return _opened(open_results_store, settings, overrides)
