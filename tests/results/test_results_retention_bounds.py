"""The results inbox purge survives what it is given, found by an attack: a completion
retention the settings accepted (1e8 hours) made the purge's cutoff leave the calendar
(``OverflowError``), the purge task ended with it, and ``serve`` stopped every other part
with it one purge period after it started."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import pytest
from pipeline_state_service.results_consumer import purge_periodically
from pipeline_state_service.settings import MAX_RETENTION_HOURS, Settings, SettingsError

from pipeline_state import ManualClock
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.results import InMemoryResultsStore, ResultsService
from pipeline_state.profiles.huleedu.results.retention import RetentionPolicy

NOW = datetime(2026, 12, 6, tzinfo=UTC)


def test_the_settings_refuse_a_retention_past_a_hundred_years() -> None:
    assert Settings(results_completion_retention_hours=MAX_RETENTION_HOURS).results_completion_retention_hours
    with pytest.raises(SettingsError, match="RESULTS_COMPLETION_RETENTION_HOURS"):
        Settings(results_completion_retention_hours=1e8)


def test_a_cutoff_further_back_than_the_calendar_is_its_first_instant() -> None:
    policy = RetentionPolicy().with_retention(Topic.PIPELINE_COMPLETED.value, timedelta(days=999_999_999))
    cutoffs = policy.cutoffs(NOW)
    assert cutoffs[Topic.PIPELINE_COMPLETED.value] == datetime.min.replace(tzinfo=UTC)
    assert cutoffs[Topic.PHASE_OUTCOME.value] == NOW - timedelta(hours=24)


class _BrokenPurge(InMemoryResultsStore):
    """A store whose purge fails the first times with an error no store should raise."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.calls = 0

    async def purge_inbox(self, cutoffs: dict[str, datetime]) -> int:
        self.calls += 1
        if self.calls <= self.failures:
            raise RuntimeError("a defect of the purge")
        return await super().purge_inbox(cutoffs)


async def test_an_unexpected_purge_failure_is_logged_and_tried_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = _BrokenPurge(failures=2)
    service = ResultsService(store, clock=ManualClock(NOW))
    stop = asyncio.Event()
    with caplog.at_level(logging.ERROR):
        task = asyncio.create_task(purge_periodically(service, 0.01, stop))
        for _ in range(200):
            if store.calls > 2 or task.done():
                break
            await asyncio.sleep(0.01)
        assert not task.done()  # before: it ended with the first failure
        stop.set()
        await asyncio.wait_for(task, 5)
    assert store.calls > 2
    assert sum("purge failed unexpectedly" in r.getMessage() for r in caplog.records) == 2
