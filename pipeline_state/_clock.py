"""The clocks: the real UTC clock and a manual one for tests and replays.

Both satisfy :class:`~pipeline_state.ports.Clock`. They live in the core because the
services default to :class:`SystemClock`; the in-memory adapters (:mod:`pipeline_state._memory`)
re-export them.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

__all__ = ["ManualClock", "SystemClock"]


class SystemClock:
    """The real UTC clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that only moves when told to; starts at a fixed instant by default."""

    def __init__(self, start: datetime | None = None) -> None:
        if start is not None and not isinstance(start, datetime):
            raise TypeError(f"ManualClock needs a datetime start, got {type(start).__name__}")
        self._now = start or datetime(2025, 1, 1, tzinfo=UTC)
        if self._now.tzinfo is None:
            raise ValueError("ManualClock needs a timezone-aware start")

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> datetime:
        if not math.isfinite(seconds):
            raise ValueError(f"a clock advances by a finite number of seconds, got {seconds!r}")
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        try:
            self._now += timedelta(seconds=seconds)
        except OverflowError:
            raise ValueError(f"advancing by {seconds!r} seconds leaves the range of datetime") from None
        return self._now

    def set(self, instant: datetime) -> None:
        if instant < self._now:
            raise ValueError("a clock cannot go backwards")
        self._now = instant
