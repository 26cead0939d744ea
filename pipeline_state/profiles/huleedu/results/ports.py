"""Ports of the results projection: its store, the cache-invalidation hook, the owner lookup.

A SQL :class:`ResultsStore` maps onto four tables (the in-memory one keeps the same shapes):

* ``results_batches``: one row per batch, ``batch_id`` primary key, ``version`` for
  compare-and-set, the indexed columns ``status``, ``user_id`` and ``class_id`` (read from the
  :class:`~pipeline_state.profiles.huleedu.results.model.BatchResults` properties) and the document from
  :func:`pipeline_state.profiles.huleedu.results.codec.batch_to_document`;
* ``results_classes``: one row per class (``batch_count``, ``essays_succeeded``,
  ``essays_failed``, counts per status), changed only by adding
  :class:`~pipeline_state.profiles.huleedu.results.model.ClassDelta` values (``SET n = n + :delta``), so
  concurrent commits of two batches of one class never lose an update;
* ``results_inbox``: ``event_id`` primary key, ``event_type`` (the topic), ``batch_id``,
  ``result``, ``processed_at``, indexed on ``(event_type, processed_at)`` for retention;
* the outbox: rows of :class:`~pipeline_state.ports.OutboxMessage`; a store that is also an
  :class:`~pipeline_state.ports.Outbox` can be drained by
  :class:`~pipeline_state._relay.OutboxRelay` (the pipeline's outbox table fits as is).

Every implementation must pass
:class:`pipeline_state.profiles.huleedu.testing.results_contract.ResultsStoreContract`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

import attrs

from pipeline_state.ports import InboxEntry, OutboxMessage

from .model import BatchResults, ClassDelta, ClassResults, Owner

__all__ = ["CacheInvalidator", "ClassPageStore", "OwnerLookup", "ResultsChange", "ResultsStore"]


@attrs.frozen
class ResultsChange:
    """Everything one consumed event writes, committed together or not at all.

    ``expected_version`` is the batch version read before projecting (``None``: the batch
    had no read model). ``batch`` is the new read model, whose ``version`` is greater than
    the expected one, or ``None`` when there is nothing to write (the version is checked
    all the same). ``class_deltas`` are added to the class summaries.
    """

    batch_id: str
    expected_version: int | None
    batch: BatchResults | None
    at: datetime
    inbox: InboxEntry | None = None
    outbox: tuple[OutboxMessage, ...] = ()
    class_deltas: tuple[ClassDelta, ...] = ()


@runtime_checkable
class ResultsStore(Protocol):
    """The results read model with its inbox, written in units of work.

    Errors: :class:`~pipeline_state.errors.StoreUnavailableError` when the store cannot be
    reached (transient); :class:`~pipeline_state.errors.CorruptStateError` when a stored read
    model cannot be decoded.
    """

    async def load(self, batch_id: str) -> BatchResults | None:
        """The read model of a batch (with its ``version`` and ``updated_at``), or ``None``."""
        ...

    async def commit(self, change: ResultsChange) -> None:
        """Atomically: compare-and-set the batch on ``expected_version``, add the class
        deltas, append the outbox messages and record the inbox entry.

        Raises :class:`~pipeline_state.errors.ConcurrencyConflictError` when the stored
        version is not ``expected_version`` (or the new version does not grow) and
        :class:`~pipeline_state.errors.DuplicateEventError` when the inbox already holds the
        event id; in both cases nothing is written.
        """
        ...

    async def inbox_entry(self, event_id: str) -> InboxEntry | None:
        """The inbox record of ``event_id``, if it was processed and not purged."""
        ...

    async def purge_inbox(self, cutoffs: Mapping[str, datetime]) -> int:
        """Delete the inbox entries of each event type (``InboxEntry.topic``) in ``cutoffs``
        processed before its cutoff; entries of other types stay. Returns how many went."""
        ...

    async def class_results(self, class_id: str) -> ClassResults | None:
        """The summary of a class, or ``None`` when no batch belongs to it."""
        ...

    async def list_batches(
        self,
        *,
        user_id: str | None = None,
        class_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[BatchResults]:
        """Read models (optionally only a teacher's and/or a class's), ordered by batch id."""
        ...


@runtime_checkable
class ClassPageStore(Protocol):
    """A results store that reads a class's summary and a page of its batches as one answer.

    :meth:`ResultsStore.class_results` then :meth:`ResultsStore.list_batches` are two reads:
    a batch committed between them makes the summary and the page disagree (a summary that
    counts one batch next to a page of two). A store whose reads can interleave with commits
    (the SQL stores) implements this so the class view is one moment;
    :class:`~pipeline_state.profiles.huleedu.results.queries.ResultsQueries` uses it when the
    store has it."""

    async def class_page(
        self, class_id: str, *, limit: int = 100, offset: int = 0
    ) -> tuple[ClassResults, list[BatchResults]] | None:
        """:meth:`ResultsStore.class_results` and the class's page of
        :meth:`ResultsStore.list_batches`, read together; ``None`` when no batch belongs to
        the class."""
        ...


@runtime_checkable
class CacheInvalidator(Protocol):
    """Drops cached results views. Called after a commit that changed a read model, with the
    keys of :func:`pipeline_state.profiles.huleedu.results.projection.cache_keys`. It may raise; the service
    logs the error and reports it, the commit stands (cached views should expire anyway)."""

    async def invalidate(self, keys: Sequence[str]) -> None: ...


@runtime_checkable
class OwnerLookup(Protocol):
    """Finds the owner of a batch whose registration fact has not been seen (for example
    from the pipeline's own store, when the results consumer runs beside it)."""

    async def owner(self, batch_id: str) -> Owner | None:
        """The owner of ``batch_id``, or ``None`` when unknown."""
        ...
