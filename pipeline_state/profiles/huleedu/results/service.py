"""The results consumer: project each event into the read model in one unit of work.

For every consumed message :class:`ResultsService` checks the results inbox, loads the
batch's read model, merges the event's fact, fills in the owner from an
:class:`~pipeline_state.profiles.huleedu.results.ports.OwnerLookup` when still unknown, and, for every
completed run not yet announced whose owner is known, writes ``BatchResultsReadyV1`` and a
``batch_results_ready`` teacher notification to the outbox. Read model, class deltas,
outbox rows and the inbox entry commit together under compare-and-set on the batch version;
a lost race is retried from a fresh read. After a commit that changed the read model the
cache-invalidation hook is called.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs

from pipeline_state._clock import SystemClock
from pipeline_state._unit_of_work import conflict_retries, run_unit_of_work
from pipeline_state.errors import UnknownTopicError
from pipeline_state.ports import Clock, InboxEntry, OutboxMessage
from pipeline_state.profiles.huleedu.events import parse_message

from .announce import announcement
from .memory import NoopCacheInvalidator
from .model import BatchResults, RunCompletion
from .ports import CacheInvalidator, OwnerLookup, ResultsChange, ResultsStore
from .projection import (
    CONSUMED_TOPICS,
    ResultsFact,
    apply_fact,
    cache_keys,
    class_deltas,
    fact_from_message,
    mark_announced,
    pending_announcements,
)
from .retention import RetentionPolicy

__all__ = ["DEFAULT_SOURCE_SERVICE", "ResultsHandled", "ResultsService"]

log = logging.getLogger("pipeline_state.profiles.huleedu.results")

DEFAULT_SOURCE_SERVICE = "result_aggregator_service"


@attrs.frozen
class ResultsHandled:
    """What handling one event did.

    ``result`` is ``applied`` (the read model changed), ``superseded`` (a completion older
    than the batch's latest: kept in its run history, the batch's results unchanged),
    ``unchanged`` (the fact was already known, or states nothing the read model keeps) or
    ``duplicate`` (the event id was processed
    before: nothing was done). ``messages`` are the outbox rows written; ``cache_error`` is
    the error the cache hook raised, if any (the commit stands).
    """

    event_id: str
    event_type: str
    batch_id: str
    correlation_id: str
    result: str
    results: BatchResults | None = None
    messages: tuple[OutboxMessage, ...] = ()
    announced: tuple[str, ...] = ()
    """Run ids whose results this event announced (two messages each)."""
    attempts: int = 1
    cache_error: str | None = None

    @property
    def duplicate(self) -> bool:
        return self.result == "duplicate"


@attrs.frozen
class _Projected:
    """One fact projected on a fresh read: the read model before and after, the inbox
    label, the runs announced and the change that commits it all."""

    before: BatchResults | None
    after: BatchResults
    label: str
    announced: tuple[str, ...]
    change: ResultsChange


def _label(before: BatchResults | None, after: BatchResults, fact: ResultsFact) -> str:
    if after == (before if before is not None else BatchResults(fact.batch_id)):
        return "unchanged"  # nothing new (nothing at all: no read model is created)
    body = fact.body
    if isinstance(body, RunCompletion) and after.latest is not None and after.latest.run_id != body.run_id:
        return "superseded"
    return "applied"


class ResultsService:
    """Projects consumed events into a :class:`~pipeline_state.profiles.huleedu.results.ports.ResultsStore`.

    ``max_attempts`` bounds retries after a lost compare-and-set; the last
    :class:`~pipeline_state.errors.ConcurrencyConflictError` propagates if all fail.
    """

    topics: tuple[str, ...] = CONSUMED_TOPICS

    def __init__(
        self,
        store: ResultsStore,
        *,
        clock: Clock | None = None,
        cache: CacheInvalidator | None = None,
        owners: OwnerLookup | None = None,
        retention: RetentionPolicy | None = None,
        source_service: str = DEFAULT_SOURCE_SERVICE,
        max_attempts: int = 8,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.store = store
        self.clock: Clock = clock or SystemClock()
        self.cache: CacheInvalidator = cache or NoopCacheInvalidator()
        self.owners = owners
        self.retention = retention or RetentionPolicy()
        self.source_service = source_service
        self.max_attempts = max_attempts

    # -- entry points ---------------------------------------------------------------------
    async def handle_message(self, topic: str, raw: bytes | str | Mapping[str, Any]) -> ResultsHandled:
        """Parse one message received on ``topic`` and project it. Raises
        :class:`~pipeline_state.errors.UnknownTopicError` for a topic not in :attr:`topics`
        and :class:`~pipeline_state.errors.InvalidMessageError` for input that breaks the
        wire contract; nothing is written then."""
        if topic not in self.topics:
            raise UnknownTopicError(topic)
        envelope, payload = parse_message(topic, raw, inbound_only=False)
        return await self.handle(fact_from_message(topic, envelope, payload))

    async def purge_inbox(self) -> int:
        """Forget processed event ids older than their type's retention, at the clock's now.
        Returns how many entries were purged."""
        return await self.store.purge_inbox(self.retention.cutoffs(self.clock.now()))

    # -- the unit of work -----------------------------------------------------------------
    async def handle(self, fact: ResultsFact) -> ResultsHandled:
        """Project one fact (see
        :func:`~pipeline_state.profiles.huleedu.results.projection.fact_from_message`) in one
        unit of work (:func:`~pipeline_state._unit_of_work.run_unit_of_work`)."""

        async def decide() -> _Projected:
            return await self._project(fact)

        async def committed(projected: _Projected, attempt: int) -> ResultsHandled:
            return await self._committed(fact, projected, attempt)

        return await run_unit_of_work(
            conflict_retries(self.max_attempts, log, "results version conflict", fact.batch_id),
            processed=functools.partial(self._processed, fact.event_id),
            decide=decide,
            commit=self._commit,
            committed=committed,
            duplicate=functools.partial(self._handled, fact, "duplicate"),
        )

    async def _processed(self, event_id: str) -> bool:
        return await self.store.inbox_entry(event_id) is not None

    async def _project(self, fact: ResultsFact) -> _Projected:
        """Read the batch's read model and project ``fact`` onto it: what to commit."""
        before = await self.store.load(fact.batch_id)
        now = self.clock.now()
        after = await self._with_owner(apply_fact(before, fact))
        due = pending_announcements(after)
        messages = self._announce(after, due, now)
        after = mark_announced(after, (r.run_id for r in due))
        label = _label(before, after, fact)
        changed = label != "unchanged"
        stored = None
        if changed:
            version = 1 if before is None else before.version + 1
            stored = attrs.evolve(after, version=version, updated_at=now)
        change = ResultsChange(
            batch_id=fact.batch_id,
            expected_version=None if before is None else before.version,
            batch=stored,
            at=now,
            inbox=InboxEntry(fact.event_id, fact.event_type, fact.batch_id, label, now),
            outbox=messages,
            class_deltas=class_deltas(before, after) if changed else (),
        )
        return _Projected(before, after, label, tuple(r.run_id for r in due), change)

    async def _commit(self, projected: _Projected) -> None:
        await self.store.commit(projected.change)

    async def _committed(self, fact: ResultsFact, projected: _Projected, attempt: int) -> ResultsHandled:
        """After the commit: the cache hook, the log line and what handling did."""
        before, after, label = projected.before, projected.after, projected.label
        stored = projected.change.batch
        cache_error = await self._invalidate(before, after) if stored is not None else None
        if label == "superseded":
            log.info(
                "completion of an older run of batch %s kept in its history only",
                fact.batch_id,
                extra={"batch_id": fact.batch_id, "correlation_id": fact.correlation_id},
            )
        return self._handled(
            fact,
            label,
            results=stored or before,
            messages=projected.change.outbox,
            announced=projected.announced,
            attempts=attempt,
            cache_error=cache_error,
        )

    async def _with_owner(self, batch: BatchResults) -> BatchResults:
        if batch.owner is not None or self.owners is None:
            return batch
        owner = await self.owners.owner(batch.batch_id)
        if owner is None:
            return batch
        fact = ResultsFact(batch.batch_id, owner.event_id, "owner_lookup", owner.event_id, owner)
        return apply_fact(batch, fact)

    def _announce(
        self, batch: BatchResults, due: tuple[RunCompletion, ...], now: datetime
    ) -> tuple[OutboxMessage, ...]:
        messages: list[OutboxMessage] = []
        for run in due:
            messages.extend(announcement(batch, run, now=now, source_service=self.source_service))
        return tuple(messages)

    async def _invalidate(self, before: BatchResults | None, after: BatchResults) -> str | None:
        keys = cache_keys(before, after)
        try:
            await self.cache.invalidate(keys)
        except Exception as exc:  # the hook is foreign code; the commit already stands
            log.warning("cache invalidation of %s failed: %s", keys, exc, extra={"batch_id": after.batch_id})
            return f"{type(exc).__name__}: {exc}"
        return None

    @staticmethod
    def _handled(
        fact: ResultsFact,
        result: str,
        attempts: int = 1,
        *,
        results: BatchResults | None = None,
        messages: tuple[OutboxMessage, ...] = (),
        announced: tuple[str, ...] = (),
        cache_error: str | None = None,
    ) -> ResultsHandled:
        return ResultsHandled(
            event_id=fact.event_id,
            event_type=fact.event_type,
            batch_id=fact.batch_id,
            correlation_id=fact.correlation_id,
            result=result,
            results=results,
            messages=messages,
            announced=announced,
            attempts=attempts,
            cache_error=cache_error,
        )
