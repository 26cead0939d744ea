"""The clocks: the real UTC clock and a manual one for tests and replays.

Both satisfy :class:`~pipeline_state.ports.Clock`. They live in the core because the
services default to :class:`SystemClock`; the in-memory adapters (:mod:`pipeline_state._memory`)
re-export them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

__all__ = ["ManualClock", "SystemClock"]


class SystemClock:
    """The real UTC clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that only moves when told to; starts at a fixed instant by default."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2025, 1, 1, tzinfo=UTC)
        if self._now.tzinfo is None:
            raise ValueError("ManualClock needs a timezone-aware start")

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> datetime:
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        self._now += timedelta(seconds=seconds)
        return self._now

    def set(self, instant: datetime) -> None:
        if instant < self._now:
            raise ValueError("a clock cannot go backwards")
        self._now = instant
