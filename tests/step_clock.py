"""A clock that can be stepped anywhere, backwards included (``ManualClock`` only moves
forward): for the tests of what a corrected or skewed wall clock does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

TRUE = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
"""The true time of the clock-step stories."""
AHEAD = TRUE + timedelta(days=365)
"""A clock one year ahead, later corrected back to :data:`TRUE`."""


class StepClock:
    """A clock (the ``Clock`` port) that can be stepped anywhere, backwards included."""

    def __init__(self, start: datetime) -> None:
        self._now = start

    def now(self) -> datetime:
        return self._now

    def set(self, instant: datetime) -> None:
        self._now = instant

    def advance(self, seconds: float) -> datetime:
        self._now += timedelta(seconds=seconds)
        return self._now
