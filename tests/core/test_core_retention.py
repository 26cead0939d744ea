"""The retention policy (:class:`~pipeline_state.ports.Retention`) and
:func:`~pipeline_state.ports.purge_expired` on the in-memory store: what it refuses, what it
forgets and what a forgotten event does."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from pipeline_state import (
    InMemoryBus,
    InMemoryStore,
    ManualClock,
    OutboxRelay,
    PipelineService,
)
from pipeline_state.ports import PurgeCutoffs, Purged, Retention, purge_expired
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

NOW = datetime(2025, 3, 1, tzinfo=UTC)
DAY = 86_400.0


@pytest.mark.parametrize("seconds", [0, -1, math.nan, math.inf, 10 * 365 * DAY + 1])
def test_a_period_that_is_not_a_positive_span_of_at_most_ten_years_is_refused(seconds: float) -> None:
    with pytest.raises(ValueError, match="retention inbox must be more than 0"):
        Retention(inbox=seconds)


@pytest.mark.parametrize("value", [True, "30", [1]])
def test_a_period_that_is_not_a_number_is_refused(value: object) -> None:
    with pytest.raises(TypeError, match="retention published must be a number"):
        Retention(published=value)  # type: ignore[arg-type]


def test_the_log_is_kept_at_least_as_long_as_the_inbox() -> None:
    with pytest.raises(ValueError, match="at least the inbox's"):
        Retention(inbox=2 * DAY, transitions=DAY)
    with pytest.raises(ValueError, match="at least the inbox's"):
        Retention(inbox=None, transitions=DAY)
    assert Retention(inbox=DAY, transitions=DAY).transitions == DAY


def test_cutoffs_are_the_periods_back_from_now() -> None:
    cutoffs = Retention(published=DAY, inbox=2 * DAY, transitions=3 * DAY).cutoffs(NOW)
    assert cutoffs == PurgeCutoffs(NOW - timedelta(days=1), NOW - timedelta(days=2), NOW - timedelta(days=3))
    assert Retention().cutoffs(NOW).logged_before is None


async def test_purge_expired_checks_its_bounds_and_does_nothing_when_everything_is_kept() -> None:
    store = InMemoryStore()
    with pytest.raises(ValueError, match="rows_per_round"):
        await purge_expired(store, Retention(), NOW, rows_per_round=0)
    with pytest.raises(ValueError, match="max_rounds"):
        await purge_expired(store, Retention(), NOW, max_rounds=0)
    store.available = False  # a store that is not even asked
    assert await purge_expired(store, Retention(None, None, None), NOW) == Purged()


async def test_the_memory_store_forgets_and_a_forgotten_outcome_changes_nothing() -> None:
    clock = ManualClock(NOW)
    store = InMemoryStore()
    service, bus = PipelineService(store, clock=clock), InMemoryBus()
    relay = OutboxRelay(store, bus, clock)
    env, corr = HuleEduEnvelopes(), str(uuid.uuid4())
    items = env.item_ids("b1", 1)
    outcomes = [
        env.outcome("b1", "spellcheck", corr, processed=items),
        env.outcome("b1", "nlp", corr, processed=items),
    ]
    for delivery in (
        env.register("b1", items=1),
        env.provisioned("b1", items),
        env.request("b1", "nlp", correlation_id=corr),
        *outcomes,
    ):
        await service.handle_message(*delivery)
        await relay.drain()
    logged = len(store.transitions())
    assert len(bus.messages(Topic.PIPELINE_COMPLETED.value)) == 1
    clock.advance(31 * DAY)
    purged = await purge_expired(store, Retention(transitions=31 * DAY - 1), clock.now(), rows_per_round=2)
    assert purged == Purged(outbox=0, inbox=5, transitions=logged)
    assert store.transitions() == []
    sent = bus.count()
    for delivery in outcomes:
        result = await service.handle_message(*delivery)
        assert not result.duplicate
        assert result.decision is not None
        assert result.decision.ignored == "no_active_run"
    await relay.drain()
    assert bus.count() == sent
