"""Opening the results read model's store for ``serve --consumers results``.

The results store is chosen by the scheme of the ``--store`` URL, so the read model lives
beside the pipeline's own state:

* ``memory://``: :class:`~pipeline_state.profiles.huleedu.results.InMemoryResultsStore` (lost at exit);
* any SQL URL (``sqlite+aiosqlite://...``, ``postgresql+asyncpg://...``): the SQL adapter's
  results store, ``pipeline_state_sql.open_results_store(url, **options)``. Without the sql
  extra the read model is kept in memory and a warning says so;
* any scheme registered with :func:`register_results_store` (checked first).

The opened store is a :class:`~pipeline_state.profiles.huleedu.results.ports.ResultsStore` that is also an
:class:`~pipeline_state.ports.Outbox`: the relay publishes its announcements.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

import attrs

from pipeline_state.ports import Outbox
from pipeline_state.profiles.huleedu.results import InMemoryResultsStore, ResultsStore

from .stores import MEMORY_URL, sql_fields

__all__ = [
    "OpenedResultsStore",
    "OutboxResultsStore",
    "ResultsStoreOpener",
    "open_results_store",
    "register_results_store",
    "url_scheme",
]

log = logging.getLogger("pipeline_state_kafka.results")


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
        import pipeline_state_sql
    except ImportError as exc:  # the sql extra is not installed
        log.warning(
            "no SQL results store (%s): the results read model of %s is kept in memory "
            "and lost when the process exits",
            exc,
            scheme,
        )
        memory = await _open_memory(MEMORY_URL, **given)
        return attrs.evolve(memory, url=url, fallback=True)
    settings = pipeline_state_sql.Settings.from_environ({}, store=url, **sql_fields(given))
    resources = contextlib.AsyncExitStack()
    opened = await resources.enter_async_context(pipeline_state_sql.open_results(settings))
    return OpenedResultsStore(opened, resources.aclose, url)
