"""Fixtures of the results projection tests: a clock, a store, a cache recorder, a service."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pipeline_state import ManualClock
from pipeline_state.profiles.huleedu.results import (
    InMemoryResultsStore,
    RecordingCacheInvalidator,
    ResultsService,
)

# The test modules import their message builders from results_events.py next to this file.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

__all__: list[str] = []


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def store() -> InMemoryResultsStore:
    return InMemoryResultsStore()


@pytest.fixture
def cache() -> RecordingCacheInvalidator:
    return RecordingCacheInvalidator()


@pytest.fixture
def results(
    store: InMemoryResultsStore, clock: ManualClock, cache: RecordingCacheInvalidator
) -> ResultsService:
    return ResultsService(store, clock=clock, cache=cache)
