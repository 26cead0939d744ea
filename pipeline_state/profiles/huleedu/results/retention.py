"""How long the results inbox remembers processed event ids, per event type.

The inbox turns a redelivered event id into a no-op. Entries older than their type's
retention are purged by :meth:`pipeline_state.profiles.huleedu.results.service.ResultsService.purge_inbox`,
driven by the injected clock. A repeat arriving after its entry was purged is still
harmless: merging a fact twice changes nothing and a run is announced only once (the read
model records announced runs).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from types import MappingProxyType

import attrs

from pipeline_state.profiles.huleedu.events import Topic

from .projection import DISPATCH_TOPICS

__all__ = ["DEFAULT_RETENTION", "RetentionPolicy"]

DEFAULT_RETENTION: Mapping[str, timedelta] = MappingProxyType(
    {
        Topic.PIPELINE_COMPLETED.value: timedelta(hours=72),
        Topic.PHASE_OUTCOME.value: timedelta(hours=24),
        Topic.ESSAYS_REGISTERED.value: timedelta(hours=72),
        **{topic: timedelta(hours=24) for topic in DISPATCH_TOPICS},
        Topic.PHASE_SKIPPED.value: timedelta(hours=24),
    }
)
"""Completions 72 hours, phase outcomes 24 hours, registrations 72 hours, phase commands
(dispatches) and pruned-phase notices 24 hours: every topic the projection consumes."""


def _frozen(value: Mapping[str, timedelta]) -> Mapping[str, timedelta]:
    for event_type, ttl in value.items():
        if ttl <= timedelta(0):
            raise ValueError(f"retention of {event_type!r} must be positive, got {ttl}")
    return MappingProxyType(dict(value))


@attrs.frozen
class RetentionPolicy:
    """Retention per event type (the topic); types not listed are kept until purged by
    other means."""

    by_event_type: Mapping[str, timedelta] = attrs.field(default=DEFAULT_RETENTION, converter=_frozen)

    def retention(self, event_type: str) -> timedelta | None:
        return self.by_event_type.get(event_type)

    def with_retention(self, event_type: str, ttl: timedelta) -> RetentionPolicy:
        """This policy with ``event_type`` kept for ``ttl``."""
        return RetentionPolicy({**self.by_event_type, event_type: ttl})

    def cutoffs(self, now: datetime) -> dict[str, datetime]:
        """For each event type, the instant before which its entries expire at ``now`` (the
        earliest instant there is when the retention reaches back further)."""
        return {event_type: _before(now, ttl) for event_type, ttl in self.by_event_type.items()}


def _before(now: datetime, ttl: timedelta) -> datetime:
    try:
        return now - ttl
    except OverflowError:  # back past year 1: nothing is that old
        return datetime.min.replace(tzinfo=now.tzinfo)
