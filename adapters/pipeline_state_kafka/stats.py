"""Counters the running service keeps, read by the summary and by tests."""

from __future__ import annotations

import time

import attrs

__all__ = ["ServiceStats"]


@attrs.define
class ServiceStats:
    """Monotonic counters of one service process (plain integers: one event loop writes them)."""

    consumed: int = 0
    handled: int = 0
    duplicates: int = 0
    ignored: int = 0
    deferred: int = 0
    waiting_dead_lettered: int = 0
    dead_lettered: int = 0
    retries: int = 0
    offset_commits: int = 0
    commit_failures: int = 0
    published: int = 0
    publish_failures: int = 0
    parked: int = 0
    expired: int = 0
    miskeyed: int = 0
    """Records handled whose Kafka key is not their batch id (the contract keys batch events
    by it; a fetch's lanes keep a batch's records in order only when they share a key)."""
    started_at: float = attrs.field(factory=time.monotonic)

    def as_dict(self) -> dict[str, int]:
        return {
            name: value
            for name, value in attrs.asdict(self).items()
            if name != "started_at" and isinstance(value, int)
        }
