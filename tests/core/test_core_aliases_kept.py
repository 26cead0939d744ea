"""The retention purge and redeliveries the inbox forgot, recognised only by the
batch's summary (``Past.answered`` / ``Past.reported``), which keeps just the latest
:data:`~pipeline_state._model.ALIASES_KEPT` of them.

``docs/guarantees.md`` promises that an outcome once applied under a lost correlation id
"counts as the run's: the same outcome again (a retry under a fresh event_id, a redelivery
after the inbox purge) is stale once the run is over, never applied to a later run"; and
``_model.Past``'s doc that the same operator report again, its inbox entry purged, "was
handled already". Both hold only for the latest 16 such answers of a batch (documented there): an older one,
redelivered after the purge, is applied again to the run active then. The tests of an older
one are strict xfails: they show the limit, and fail the suite once it is lifted.
The stories take any store: ``tests/sql/test_sql_aliases_kept.py`` plays them on
SQLite and PostgreSQL.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from pipeline_state import InMemoryBus, InMemoryStore, ManualClock, OutboxRelay, PipelineService
from pipeline_state._commands import RecordPhaseCompletion
from pipeline_state._model import ALIASES_KEPT
from pipeline_state.ports import Retention, Store, purge_expired
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

DAY = 86_400.0


async def _ready_batch(
    store: Store,
) -> tuple[PipelineService, OutboxRelay, InMemoryBus, ManualClock, list[str]]:
    clock = ManualClock(datetime(2025, 3, 1, tzinfo=UTC))
    service, bus = PipelineService(store, clock=clock), InMemoryBus()
    relay = OutboxRelay(store, bus, clock)
    env = HuleEduEnvelopes()
    ids = env.item_ids("b1", 2)
    await service.handle_message(*env.register("b1", items=2))
    await service.handle_message(*env.provisioned("b1", ids))
    await relay.drain()
    return service, relay, bus, clock, ids


async def _purge_and_start_a_run(
    store: Store,
    service: PipelineService,
    relay: OutboxRelay,
    bus: InMemoryBus,
    clock: ManualClock,
    env: HuleEduEnvelopes,
) -> int:
    """31 days on, the inbox purged, a new run started: the completions published so far."""
    clock.advance(31 * DAY)
    await purge_expired(store, Retention(), clock.now())
    request = env.request("b1", "nlp", correlation_id=str(uuid.uuid4()))
    assert (await service.handle_message(*request)).label == "applied"
    await relay.drain()
    return len(bus.messages(Topic.PIPELINE_COMPLETED.value))


async def an_old_mismatched_outcome_redelivered_after_purge_is_stale(
    store: Store, runs: int = ALIASES_KEPT + 1
) -> None:
    """ALIASES_KEPT + 1 runs, each failed by a spellcheck outcome under a lost (fresh)
    correlation id: applied and flagged. 31 days on, the inbox purged, run N+2 is started
    and run 1's outcome is delivered again (the very envelope: a consumer group reset).
    It must be stale (its run is over), not applied to run N+2 as a new mismatch."""
    service, relay, bus, clock, ids = await _ready_batch(store)
    env = HuleEduEnvelopes()
    first: tuple[str, dict[str, Any]] | None = None
    for _ in range(runs):
        request = env.request("b1", "nlp", correlation_id=str(uuid.uuid4()))
        assert (await service.handle_message(*request)).label == "applied"
        lost = env.outcome("b1", "spellcheck", str(uuid.uuid4()), failed=ids, status="failed_critically")
        applied = await service.handle_message(*lost)
        assert applied.decision is not None
        assert "correlation_mismatch" in applied.decision.flags
        first = first or lost
        await relay.drain()
        clock.advance(60)
    assert first is not None
    completions = await _purge_and_start_a_run(store, service, relay, bus, clock, env)

    again = await service.handle_message(*first)

    await relay.drain()
    state = await service.get_batch("b1")
    assert state.active_run is not None, "run 1's redelivered outcome completed the current run"
    phase = state.active_run.phase("spellcheck")
    assert phase is not None
    assert phase.status.value == "dispatch_initiated", phase
    assert len(bus.messages(Topic.PIPELINE_COMPLETED.value)) == completions
    assert again.label == "ignored:stale_run", again.label


async def an_old_report_redelivered_after_purge_is_already_handled(
    store: Store, runs: int = ALIASES_KEPT + 1
) -> None:
    """ALIASES_KEPT + 1 runs, each ended by an operator's report that its active spellcheck
    failed (applied to the active run's phase: no run of its own; nlp skipped, the run
    completes). 31 days on, the inbox purged, run N+2 is started and the first report comes
    again (same event id: ``execute`` repeated, a replayed HTTP call). It was handled
    already, so it must change nothing, not fail run N+2's spellcheck."""
    service, relay, bus, clock, _ids = await _ready_batch(store)
    env = HuleEduEnvelopes()
    first_corr = ""
    for n in range(runs):
        corr = str(uuid.uuid4())
        first_corr = first_corr or corr
        assert (
            await service.handle_message(*env.request("b1", "nlp", correlation_id=corr))
        ).label == "applied"
        report = RecordPhaseCompletion("b1", "spellcheck", success=False)
        done = await service.execute(report, event_id=f"report-{n}", correlation_id=corr)
        assert done.ignored is None, done
        assert (await service.get_batch("b1")).active_run is None
        await relay.drain()
        clock.advance(60)
    completions = await _purge_and_start_a_run(store, service, relay, bus, clock, env)

    again = await service.execute(
        RecordPhaseCompletion("b1", "spellcheck", success=False),
        event_id="report-0",
        correlation_id=first_corr,
    )

    await relay.drain()
    state = await service.get_batch("b1")
    assert state.active_run is not None, "the first run's report, repeated, failed the current run"
    assert len(bus.messages(Topic.PIPELINE_COMPLETED.value)) == completions
    assert again.duplicate, again


@pytest.mark.xfail(
    strict=True,
    reason="known limit: a batch remembers the latest 16 aliases (Past.answered / Past.reported); "
    "an older one, its inbox entry purged, is applied again (docs/guarantees.md)",
)
async def test_an_older_mismatched_outcome_redelivered_after_purge_is_not_applied_to_a_later_run() -> None:
    await an_old_mismatched_outcome_redelivered_after_purge_is_stale(InMemoryStore())


@pytest.mark.xfail(
    strict=True,
    reason="known limit: a batch remembers the latest 16 aliases (Past.answered / Past.reported); "
    "an older one, its inbox entry purged, is applied again (docs/guarantees.md)",
)
async def test_an_older_report_repeated_after_purge_does_not_fail_a_later_run() -> None:
    await an_old_report_redelivered_after_purge_is_already_handled(InMemoryStore())


async def test_the_latest_aliases_keep_their_repeats_stale() -> None:
    """The control: with ALIASES_KEPT runs (nothing evicted) both repeats are recognised."""
    await an_old_mismatched_outcome_redelivered_after_purge_is_stale(InMemoryStore(), ALIASES_KEPT)
    await an_old_report_redelivered_after_purge_is_already_handled(InMemoryStore(), ALIASES_KEPT)
