"""In-memory adapters of the results ports: the store and two cache invalidators.

:class:`InMemoryResultsStore` is a real adapter, not a mock: it enforces compare-and-set on
the version, the inbox rules and all-or-nothing commits, raises the same errors as a SQL
store would, and is also the :class:`~pipeline_state.ports.Outbox` its messages are relayed
from. Set :attr:`InMemoryResultsStore.available` to ``False`` to make every call raise
:class:`~pipeline_state.errors.StoreUnavailableError`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from pipeline_state._limits import check_limit, check_offset
from pipeline_state._memory_unit_of_work import MemoryUnitOfWork
from pipeline_state.errors import StoreUnavailableError
from pipeline_state.ports import InboxEntry, OutboxRow

from ._outbox import MemoryOutbox
from .model import BatchResults, ClassResults
from .ports import ResultsChange

__all__ = ["InMemoryResultsStore", "NoopCacheInvalidator", "RecordingCacheInvalidator"]


def _new_batch(change: ResultsChange) -> BatchResults | None:
    return change.batch


class InMemoryResultsStore:
    """Read models, class summaries, inbox and outbox in dictionaries.

    ``commit`` checks everything before it writes and never awaits in between, so it is
    atomic with respect to other coroutines (the read models, inbox and outbox go through
    the shared engine, :class:`~pipeline_state._memory_unit_of_work.MemoryUnitOfWork`).
    """

    def __init__(self, *, lease_seconds: float = 60.0) -> None:
        self.available = True
        self._outbox = MemoryOutbox(lease_seconds=lease_seconds)
        self._work: MemoryUnitOfWork[ResultsChange, BatchResults] = MemoryUnitOfWork(
            _new_batch, self._outbox.append
        )
        self._batches = self._work.documents
        self._classes: dict[str, ClassResults] = {}

    def _check(self) -> None:
        if not self.available:
            raise StoreUnavailableError("the in-memory results store was taken offline")

    # -- ResultsStore ---------------------------------------------------------------------
    async def load(self, batch_id: str) -> BatchResults | None:
        self._check()
        return self._batches.get(batch_id)

    async def commit(self, change: ResultsChange) -> None:
        self._check()
        self._work.commit(change)
        for delta in change.class_deltas:
            summary = self._classes.get(delta.class_id, ClassResults(delta.class_id))
            self._classes[delta.class_id] = summary.apply(delta)

    async def inbox_entry(self, event_id: str) -> InboxEntry | None:
        self._check()
        return self._work.inbox_entry(event_id)

    async def purge_inbox(self, cutoffs: Mapping[str, datetime]) -> int:
        self._check()
        return self._work.purge_inbox(cutoffs)

    async def class_results(self, class_id: str) -> ClassResults | None:
        self._check()
        summary = self._classes.get(class_id)
        return summary if summary is not None and summary.batch_count > 0 else None

    async def list_batches(
        self,
        *,
        user_id: str | None = None,
        class_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[BatchResults]:
        check_limit(limit)
        check_offset(offset)
        self._check()
        found = [
            b
            for _, b in sorted(self._batches.items())
            if (user_id is None or b.user_id == user_id) and (class_id is None or b.class_id == class_id)
        ]
        return found[offset : offset + limit]

    async def class_page(
        self, class_id: str, *, limit: int = 100, offset: int = 0
    ) -> tuple[ClassResults, list[BatchResults]] | None:
        """:meth:`class_results` and the class's page, read with nothing awaited between."""
        summary = await self.class_results(class_id)
        if summary is None:
            return None
        return summary, await self.list_batches(class_id=class_id, limit=limit, offset=offset)

    # -- Outbox ---------------------------------------------------------------------------
    async def claim(self, now: datetime, limit: int = 100) -> list[OutboxRow]:
        check_limit(limit)
        self._check()
        return self._outbox.claim(now, limit)

    async def mark_published(self, row_ids: Sequence[int], now: datetime) -> None:
        self._check()
        self._outbox.mark_published(row_ids)

    async def mark_failed(
        self, row_id: int, error: str, now: datetime, *, retry_at: datetime, park: bool
    ) -> None:
        self._check()
        self._outbox.mark_failed(row_id, error, retry_at=retry_at, park=park)

    async def pending_count(self) -> int:
        self._check()
        return self._outbox.pending_count()

    async def parked(self, limit: int = 100) -> list[OutboxRow]:
        check_limit(limit)
        self._check()
        return self._outbox.parked(limit)

    # -- inspection -----------------------------------------------------------------------
    def inbox_size(self) -> int:
        return len(self._work.inbox)

    def outbox_rows(self) -> list[OutboxRow]:
        """Outbox rows not yet published, oldest first."""
        return self._outbox.rows()


class NoopCacheInvalidator:
    """The default hook: there is no cache to invalidate."""

    async def invalidate(self, keys: Sequence[str]) -> None:
        return None


class RecordingCacheInvalidator:
    """Records the keys it is asked to invalidate, for tests and single-process caches."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    async def invalidate(self, keys: Sequence[str]) -> None:
        self.calls.append(tuple(keys))

    @property
    def keys(self) -> list[str]:
        """Every key invalidated so far, in order (repeats included)."""
        return [k for call in self.calls for k in call]

    def clear(self) -> None:
        self.calls.clear()
