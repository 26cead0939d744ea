"""An outcome whose correlation id belongs to no run (a worker lost it) is applied to the
active run and flagged ``correlation_mismatch`` (contract, §2). Once that run is over, the
same outcome again must change nothing: a worker's retry under a fresh event id, or the very
envelope redelivered after the inbox purge (a consumer group reset).

Were defects (fixed; found by an attack on exactly-once): the repeat named no run either,
so on a ready batch it waited for ``run_start`` and failed the next run's phase without that
run's worker ever answering; redelivered after the purge, it completed the next run under
the event ids of the first run's completion; and while a later run was active, it was
applied to that run as another mismatch. The batch's summary now keeps the pair (run, foreign
correlation id) (``Past.answered``), so the repeat is ``stale_run`` once its run is not the
active one. The stories take any store: ``tests/sql/test_sql_mismatched_outcome_repeats.py``
plays them on SQLite and PostgreSQL.
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import attrs

from pipeline_state import InMemoryBus, InMemoryStore, ManualClock, OutboxRelay, PipelineService
from pipeline_state.ports import Retention, Store, purge_expired
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

DAY = 86_400.0
LOST = "00000000-0000-4000-8000-00000000dead"  # the correlation id the worker sends: of no run


@attrs.define
class Story:
    service: PipelineService
    store: Store
    bus: InMemoryBus
    relay: OutboxRelay
    clock: ManualClock
    failed: tuple[str, dict[str, Any]]
    """The spellcheck outcome run 1's worker sent under :data:`LOST`."""
    env: HuleEduEnvelopes = attrs.field(factory=HuleEduEnvelopes)

    async def request(self) -> str:
        """Start the next ``nlp`` run; its correlation id."""
        correlation = str(uuid.uuid4())
        started = await self.service.handle_message(
            *self.env.request("b1", "nlp", correlation_id=correlation)
        )
        assert started.label == "applied", started.label
        return correlation

    async def spellcheck_of(self, correlation: str) -> str:
        state = await self.service.get_batch("b1")
        [run] = [r for r in state.runs() if r.correlation_id == correlation]
        phase = run.phase("spellcheck")
        assert phase is not None
        return phase.status.value


async def first_run_failed_by_a_mismatched_outcome(store: Store) -> Story:
    """Run 1 (``nlp``): its spellcheck fails, reported under a lost correlation id: applied
    to run 1 and flagged, which completes it (nlp skipped); the batch is ready again."""
    clock = ManualClock(datetime(2025, 3, 1, tzinfo=UTC))
    bus = InMemoryBus()
    service = PipelineService(store, clock=clock)
    env = HuleEduEnvelopes()
    ids = env.item_ids("b1", 2)
    await service.handle_message(*env.register("b1", items=2))
    await service.handle_message(*env.provisioned("b1", ids))
    story = Story(service, store, bus, OutboxRelay(store, bus, clock), clock, ("", {}), env)
    await story.request()
    story.failed = env.outcome("b1", "spellcheck", LOST, failed=ids, status="failed_critically")
    applied = await service.handle_message(*story.failed)
    assert applied.decision is not None
    assert "correlation_mismatch" in applied.decision.flags
    assert Topic.PIPELINE_COMPLETED.value in [m.topic for m in applied.messages]
    assert (await service.get_batch("b1")).status.value == "ready_for_pipeline_execution"
    await story.relay.drain()
    return story


async def a_retry_under_a_fresh_id_is_stale(store: Store) -> None:
    """The worker retries its applied outcome under a fresh event id after run 1 completed:
    ignored (no run is active: as any archived run's outcome), never kept waiting; run 2's
    spellcheck waits for run 2's worker."""
    story = await first_run_failed_by_a_mismatched_outcome(store)
    topic, envelope = story.failed
    again = await story.service.handle_message(topic, {**envelope, "event_id": str(uuid.uuid4())})
    assert (again.label, again.waiting) == ("ignored:no_active_run", None)
    assert await store.list_waiting("b1") == []  # type: ignore[attr-defined]
    second = await story.request()
    assert await story.spellcheck_of(second) == "dispatch_initiated"


async def a_retry_while_the_next_run_is_active_is_stale(store: Store) -> None:
    """The same retry while run 2 is active, its spellcheck dispatched: not applied to run 2
    as another mismatch (run 2's worker has not answered)."""
    story = await first_run_failed_by_a_mismatched_outcome(store)
    second = await story.request()
    topic, envelope = story.failed
    again = await story.service.handle_message(topic, {**envelope, "event_id": str(uuid.uuid4())})
    assert again.label == "ignored:stale_run"
    assert await story.spellcheck_of(second) == "dispatch_initiated"
    # A lost id of run 2's own worker is still applied to run 2, flagged.
    ids = story.env.item_ids("b1", 2)
    other = "00000000-0000-4000-8000-00000000beef"
    applied = await story.service.handle_message(*story.env.outcome("b1", "spellcheck", other, processed=ids))
    assert applied.decision is not None
    assert applied.decision.flags == ("correlation_mismatch",)
    assert await story.spellcheck_of(second) == "completed_successfully"


async def a_redelivery_after_the_purge_is_stale(store: Store) -> None:
    """The very envelope delivered again after the inbox purge: ignored, not kept waiting,
    so run 2 completes only when its own worker answers, under event ids of its own."""
    story = await first_run_failed_by_a_mismatched_outcome(store)
    story.clock.advance(31 * DAY)
    await purge_expired(store, Retention(), story.clock.now())
    again = await story.service.handle_message(*story.failed)
    assert (again.label, again.waiting) == ("ignored:no_active_run", None)
    second = await story.request()
    assert await story.spellcheck_of(second) == "dispatch_initiated"
    ids = story.env.item_ids("b1", 2)
    spell = story.env.outcome("b1", "spellcheck", second, failed=ids, status="failed_critically")
    assert (await story.service.handle_message(*spell)).label == "applied"
    await story.relay.drain()
    completions = [m for m in story.bus.messages() if m.topic == Topic.PIPELINE_COMPLETED.value]
    assert len(completions) == 2
    assert Counter(m.event_id for m in completions).most_common(1)[0][1] == 1


async def test_a_retry_under_a_fresh_id_after_the_run_is_stale() -> None:
    await a_retry_under_a_fresh_id_is_stale(InMemoryStore())


async def test_a_retry_while_the_next_run_is_active_is_stale() -> None:
    await a_retry_while_the_next_run_is_active_is_stale(InMemoryStore())


async def test_a_redelivery_after_the_purge_is_stale() -> None:
    await a_redelivery_after_the_purge_is_stale(InMemoryStore())


async def test_the_summary_keeps_only_the_latest_aliases() -> None:
    """``Past.answered`` keeps the latest 16 pairs: the document stays small whatever a
    misbehaving worker sends over many runs."""
    from pipeline_state._model import ALIASES_KEPT, Past, run_key

    past = Past()
    for n in range(ALIASES_KEPT + 4):
        past = past.answering(f"run-{n}", f"lost-{n}")
    assert len(past.answered) == ALIASES_KEPT
    assert past.answered[-1] == (run_key(f"run-{ALIASES_KEPT + 3}"), f"lost-{ALIASES_KEPT + 3}")
    assert past.is_archived(f"lost-{ALIASES_KEPT + 3}")
    assert not past.is_archived(f"lost-{ALIASES_KEPT + 3}", f"run-{ALIASES_KEPT + 3}")  # its run is active
    assert not past.is_archived("lost-0")  # forgotten
    assert past.answering(f"run-{ALIASES_KEPT + 3}", f"lost-{ALIASES_KEPT + 3}") == past
    # An entry seen again moves last: it is the latest, dropped last.
    again = past.answering("run-4", "lost-4")
    assert again.answered[-1] == (run_key("run-4"), "lost-4")
    assert len(again.answered) == ALIASES_KEPT
    assert again.answered[0] == past.answered[1]  # run-4's entry was the oldest
