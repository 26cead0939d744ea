"""Opening the results read model's store for ``serve --consumers results``.

The results store is chosen by the scheme of the ``--store`` URL, so the read model lives
beside the pipeline's own state:

* ``memory://``: :class:`~pipeline_state.profiles.huleedu.results.InMemoryResultsStore` (lost at exit);
* any SQL URL (``sqlite+aiosqlite://...``, ``postgresql+asyncpg://...``): the SQL adapter's
  results store, ``pipeline_state_sql.open_results_store(url, **options)``, once that
  adapter provides it. Until then the read model is kept in memory and a warning says so;
* any scheme registered with :func:`register_results_store` (checked first).

The opened store is a :class:`~pipeline_state.profiles.huleedu.results.ports.ResultsStore` that is also an
:class:`~pipeline_state.ports.Outbox`: the relay publishes its announcements.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

import attrs

from pipeline_state.errors import StoreUnavailableError
from pipeline_state.ports import Outbox
from pipeline_state.profiles.huleedu.results import InMemoryResultsStore, ResultsStore

from .stores import MEMORY_URL

__all__ = [
    "OpenedResultsStore",
    "OutboxResultsStore",
    "ResultsStoreOpener",
    "SqlResultsStoreMissing",
    "open_results_store",
    "register_results_store",
    "url_scheme",
]

log = logging.getLogger("pipeline_state_kafka.results")

SQL_OPENER = "open_results_store"
"""The function of ``pipeline_state_sql`` that opens a SQL results store, when it exists."""


@runtime_checkable
class OutboxResultsStore(ResultsStore, Outbox, Protocol):
    """A results store whose outbox the relay drains (both ports on one object)."""


async def _nothing() -> None:
    return None


@attrs.frozen
class OpenedResultsStore:
    """An opened results store, how to close it, and where it lives.

    ``fallback`` is true when the URL asked for a durable store that is not available yet
    and the read model is kept in memory instead.
    """

    store: OutboxResultsStore
    close: Callable[[], Awaitable[None]] = _nothing
    url: str = MEMORY_URL
    fallback: bool = False

    @property
    def durable(self) -> bool:
        return self.url != MEMORY_URL and not self.fallback


ResultsStoreOpener = Callable[..., Awaitable[OpenedResultsStore]]
"""``async (url, **options) -> OpenedResultsStore``."""


class SqlResultsStoreMissing(LookupError):
    """The SQL adapter (or its results store) is not available."""


def url_scheme(url: str) -> str:
    """The database part of a URL's scheme: ``postgresql+asyncpg://x`` -> ``postgresql``,
    ``memory://`` -> ``memory``."""
    scheme = url.partition(":")[0]
    return scheme.partition("+")[0].lower()


async def _open_memory(url: str, **options: Any) -> OpenedResultsStore:
    lease = options.get("lease")
    store = InMemoryResultsStore() if lease is None else InMemoryResultsStore(lease_seconds=lease)
    return OpenedResultsStore(store, url=MEMORY_URL)


_OPENERS: dict[str, ResultsStoreOpener] = {"memory": _open_memory}


def register_results_store(scheme: str, opener: ResultsStoreOpener) -> None:
    """Open results stores for URLs of ``scheme`` (``url_scheme`` form) with ``opener``."""
    if not scheme or scheme != scheme.strip().lower():
        raise ValueError("a scheme must be a non-empty lower-case word")
    _OPENERS[scheme] = opener


def _sql_opener() -> Callable[..., Any]:
    try:
        module: Any = importlib.import_module("pipeline_state_sql")
    except ImportError as exc:
        raise SqlResultsStoreMissing(f"the SQL adapter cannot be imported ({exc})") from exc
    opener = getattr(module, SQL_OPENER, None)
    if opener is None:
        raise SqlResultsStoreMissing(f"pipeline_state_sql has no {SQL_OPENER}() yet")
    if not callable(opener):
        raise SqlResultsStoreMissing(f"pipeline_state_sql.{SQL_OPENER} is not callable")
    return opener  # type: ignore[no-any-return]


async def _open_sql(url: str, opener: Callable[..., Any], options: dict[str, Any]) -> OpenedResultsStore:
    opened: Any = opener(url, **options)
    if inspect.isawaitable(opened):
        opened = await opened
    if not isinstance(opened, ResultsStore) or not isinstance(opened, Outbox):
        raise StoreUnavailableError(
            f"pipeline_state_sql.{SQL_OPENER} returned {type(opened).__name__}, not a results store"
        )
    closer: Any = getattr(opened, "close", None) or getattr(opened, "aclose", None)

    async def close() -> None:
        if closer is not None:
            result = closer()
            if inspect.isawaitable(result):
                await result

    return OpenedResultsStore(opened, close, url)


async def open_results_store(url: str, **options: Any) -> OpenedResultsStore:
    """The results store for the ``--store`` URL ``url`` (see the module docstring).

    ``options`` (``upgrade``, ``schema``, ``lease``, ``synchronous``; ``None`` values are
    left out) go to the SQL results store; the in-memory store uses ``lease`` only.
    """
    given = {k: v for k, v in options.items() if v is not None}
    scheme = url_scheme(url)
    opener = _OPENERS.get(scheme)
    if opener is not None:
        return await opener(url, **given)
    try:
        sql = _sql_opener()
    except SqlResultsStoreMissing as exc:
        log.warning(
            "no SQL results store yet (%s): the results read model of %s is kept in memory "
            "and lost when the process exits",
            exc,
            scheme,
        )
        memory = await _open_memory(MEMORY_URL, **given)
        return attrs.evolve(memory, url=url, fallback=True)
    return await _open_sql(url, sql, given)
