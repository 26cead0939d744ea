"""Readings of the store that the summary and the metrics show: outbox backlog, active runs,
waiting facts.

:func:`read_store` takes one reading; :class:`StoreSampler` keeps the latest one and takes a
new one only when it is older than its minimum interval, so a scraper polling ``/metrics``
often does not turn into as many queries. Each part of a reading is read on its own: a
store that cannot answer one of them (or an outbox without
:meth:`outbox_backlog <pipeline_state._memory.InMemoryStore.outbox_backlog>`) leaves that
part ``None`` and the others are still read.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import attrs

from pipeline_state._lifecycle import BatchStatus
from pipeline_state.errors import StoreError
from pipeline_state.ports import Outbox, RunCountingStore, Store

__all__ = ["ACTIVE_RUNS_LIMIT", "StoreReading", "StoreSampler", "read_store"]

ACTIVE_RUNS_LIMIT = 1000
"""At most this many active runs are loaded per reading of a store that cannot count them
itself (the count shows ``1000+`` beyond); a
:class:`~pipeline_state.ports.RunCountingStore` (the memory and SQL stores) answers exactly,
without handing a state out (the SQL store with one aggregate query)."""

T = TypeVar("T")


@attrs.frozen
class StoreReading:
    """One reading of the store; ``None`` where the store could not say."""

    outbox_pending: int | None = None
    outbox_oldest_age_seconds: float | None = None
    outbox_parked: int | None = None
    active_runs: int | None = None
    oldest_active_run_age_seconds: float | None = None
    waiting: int | None = None
    active_runs_capped: bool = False
    """``active_runs`` is the most a store that cannot count them was asked to list
    (:data:`ACTIVE_RUNS_LIMIT`): there may be more."""


async def _or_none(read: Callable[[], Awaitable[T]]) -> T | None:
    try:
        return await read()
    except StoreError:
        return None


def _age(now: datetime, then: datetime | None) -> float | None:
    return None if then is None else max(0.0, (now - then).total_seconds())


async def _backlog(outbox: Outbox, now: datetime) -> tuple[int | None, float | None, int | None]:
    backlog: Any = getattr(outbox, "outbox_backlog", None)
    if backlog is None:
        return await _or_none(outbox.pending_count), None, None
    found: tuple[int, datetime | None, int] | None = await _or_none(backlog)
    if found is None:
        return None, None, None
    pending, oldest, parked = found
    return pending, _age(now, oldest), parked


async def _active(store: Store, now: datetime) -> tuple[int | None, float | None, bool]:
    if isinstance(store, RunCountingStore):  # exact, no state handed out (SQL: one query)
        found = await _or_none(store.active_runs)
        if found is None:
            return None, None, False
        return found[0], _age(now, found[1]), False

    async def listed() -> list[Any]:
        return await store.list_batches(BatchStatus.PROCESSING_PIPELINES, limit=ACTIVE_RUNS_LIMIT)

    batches = await _or_none(listed)
    if batches is None:
        return None, None, False
    accepted = [b.active_run.accepted_at for b in batches if b.active_run is not None]
    return len(batches), _age(now, min(accepted, default=None)), len(batches) >= ACTIVE_RUNS_LIMIT


async def _waiting(store: Store) -> int | None:
    count = getattr(store, "count_waiting", None)
    if count is None:
        return None
    value = await _or_none(count)
    return value if isinstance(value, int) else None


async def read_store(store: Store, outbox: Outbox, now: datetime | None = None) -> StoreReading:
    """One reading of ``store`` and ``outbox`` (ages relative to ``now``, default: now)."""
    now = now or datetime.now(UTC)
    pending, oldest, parked = await _backlog(outbox, now)
    active, oldest_run, capped = await _active(store, now)
    return StoreReading(pending, oldest, parked, active, oldest_run, await _waiting(store), capped)


class StoreSampler:
    """The latest :class:`StoreReading`, renewed at most every ``min_interval`` seconds."""

    def __init__(
        self,
        store: Store,
        outbox: Outbox,
        *,
        min_interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if min_interval < 0:
            raise ValueError(f"min_interval must be >= 0, got {min_interval}")
        self.store = store
        self.outbox = outbox
        self.min_interval = min_interval
        self.readings = 0
        """How many readings were taken (each one queries the store)."""
        self._clock = clock
        self._latest: StoreReading | None = None
        self._taken_at = 0.0
        self._lock = asyncio.Lock()

    @property
    def latest(self) -> StoreReading | None:
        """The last reading taken, without reading the store."""
        return self._latest

    async def read(self) -> StoreReading:
        """The latest reading, taking a new one when it is older than ``min_interval``."""
        async with self._lock:
            if self._latest is None or self._clock() - self._taken_at >= self.min_interval:
                self._latest = await read_store(self.store, self.outbox)
                self._taken_at = self._clock()
                self.readings += 1
            return self._latest
