"""The service's unit of work: inbox dedupe, compare-and-set with retry from a fresh read,
nothing written on bad input, store outages and the transition log."""

from __future__ import annotations

from typing import Any

import pytest
from core_flow import Flow, new_id

from pipeline_state import (
    CancelBatch,
    InMemoryRuntime,
    InMemoryStore,
    InvalidMessageError,
    PipelineService,
    StoreUnavailableError,
)
from pipeline_state.errors import ConcurrencyConflictError
from pipeline_state.ports import Change
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes


class RacingStore(InMemoryStore):
    """An in-memory store that lets another writer commit between a handler's load and its
    commit, once: the first commit triggers ``rival`` (a real service call on this very
    store) before the compare-and-set runs."""

    def __init__(self) -> None:
        super().__init__()
        self.rival: Any = None
        self.commits = 0
        self.conflicts = 0

    async def commit(self, change: Change) -> None:
        self.commits += 1
        rival, self.rival = self.rival, None
        if rival is not None:
            await rival()
        try:
            await super().commit(change)
        except ConcurrencyConflictError:
            self.conflicts += 1
            raise


async def test_redelivered_event_id_has_no_effect(flow: Flow) -> None:
    await flow.ready("b1")
    delivery = flow.env.request("b1", "nlp")
    first = await flow.rt.service.handle_message(*delivery)
    state = await flow.state("b1")
    pending = await flow.rt.store.pending_count()

    again = await flow.rt.service.handle_message(*delivery)

    assert not first.duplicate
    assert again.duplicate
    assert again.ignored == "duplicate_event"
    assert again.messages == ()
    assert await flow.state("b1") == state
    assert await flow.rt.store.pending_count() == pending


async def test_lost_race_is_retried_from_a_fresh_read() -> None:
    store = RacingStore()
    rt = InMemoryRuntime()
    service = PipelineService(store, profile=rt.service.profile, clock=rt.clock)
    env = HuleEduEnvelopes()
    ids = env.item_ids("b1", 3)
    for delivery in (env.register("b1"), env.provisioned("b1", ids)):
        await service.handle_message(*delivery)
    corr = new_id()
    await service.handle_message(*env.request("b1", "comprehensive", correlation_id=corr))
    await service.handle_message(*env.outcome("b1", "spellcheck", corr, processed=ids))
    version = (await service.get_batch("b1")).version

    # cj_assessment's outcome lands while nlp's outcome is being decided.
    async def rival() -> None:
        await service.handle_message(*env.outcome("b1", "cj_assessment", corr, processed=ids))

    store.rival = rival
    result = await service.handle_message(*env.outcome("b1", "nlp", corr, processed=ids))

    assert store.conflicts == 1
    assert result.attempts == 2
    state = await service.get_batch("b1")
    assert state.version == version + 2
    assert state.active_run is not None
    assert state.active_run.phase_statuses["cj_assessment"] == "completed_successfully"
    assert state.active_run.phase_statuses["nlp"] == "completed_successfully"
    assert state.active_run.phase_statuses["ai_feedback"] == "dispatch_initiated"
    # The loser's first decision was thrown away: one ai_feedback command in the outbox.
    topics = [m.topic for m in store.outbox_messages()]
    assert topics.count(Topic.AI_FEEDBACK.value) == 1


async def test_persistent_conflict_gives_up_after_max_attempts() -> None:
    class AlwaysLosing(InMemoryStore):
        async def commit(self, change: Change) -> None:
            raise ConcurrencyConflictError(change.batch_id, change.expected_version, -1)

    service = PipelineService(AlwaysLosing(), max_attempts=3)

    with pytest.raises(ConcurrencyConflictError):
        await service.handle_message(*HuleEduEnvelopes().register("b1"))


async def test_store_unavailable_raises_and_writes_nothing(flow: Flow) -> None:
    await flow.ready("b1")
    before = await flow.state("b1")
    delivery = flow.env.request("b1", "nlp")
    flow.rt.store.available = False

    with pytest.raises(StoreUnavailableError):
        await flow.rt.deliver(*delivery)
    with pytest.raises(StoreUnavailableError):
        await flow.rt.snapshot("b1")

    flow.rt.store.available = True
    assert await flow.state("b1") == before
    assert await flow.rt.store.pending_count() == 0
    # Once the store is back, the same message is processed normally.
    assert await flow.rt.deliver(*delivery) != []


async def test_transition_log_records_every_move_with_the_correlation_id(flow: Flow) -> None:
    await flow.ready("b1")
    corr = new_id()
    topic, value = flow.env.request("b1", "nlp", correlation_id=corr)
    await flow.rt.deliver(topic, value)

    rows = [r for r in flow.rt.store.transitions("b1") if r.event_id == value["event_id"]]

    moves = [(r.entity, r.name, r.trigger, r.source, r.dest) for r in rows]
    assert moves[0] == ("batch", "b1", "start_run", "ready_for_pipeline_execution", "processing_pipelines")
    assert ("phase", "spellcheck", "dispatch", "pending_dependencies", "dispatch_initiated") in moves
    assert ("phase", "nlp", "plan", "requested_by_user", "pending_dependencies") in moves
    assert {r.correlation_id for r in rows} == {corr}
    run = (await flow.state("b1")).active_run
    assert run is not None
    assert {r.run_id for r in rows if r.entity != "batch"} == {run.run_id}
    assert {r.at for r in rows} == {flow.rt.clock.now()}


async def test_ignored_input_writes_an_inbox_row_but_no_state(flow: Flow) -> None:
    await flow.ready("b1")
    await flow.rt.execute(CancelBatch("b1"))  # no run can start: an outcome is not early
    before = await flow.state("b1")
    rows = len(flow.rt.store.transitions("b1"))
    topic, value = flow.env.outcome("b1", "spellcheck", new_id(), processed=["b1-e0"])

    result = await flow.rt.service.handle_message(topic, value)

    assert result.ignored == "no_active_run"
    assert result.messages == ()
    assert await flow.state("b1") == before
    assert len(flow.rt.store.transitions("b1")) == rows
    entry = await flow.rt.store.inbox_entry(value["event_id"])
    assert entry is not None
    assert (entry.topic, entry.batch_id, entry.result) == (topic, "b1", "ignored:no_active_run")


@pytest.mark.parametrize("depth", [40, 100_000])
async def test_a_decoded_message_is_bounded_like_raw_bytes(depth: int) -> None:
    """Found by review: a mapping handed to the service skipped the intake limits, and one
    nested deep enough raised ``RecursionError`` while it was encoded for the waiting set."""
    nested: dict[str, object] = {}
    for _ in range(depth):
        nested = {"n": nested}
    topic, envelope = HuleEduEnvelopes().register("b1", items=1)
    service = PipelineService(InMemoryStore())
    with pytest.raises(InvalidMessageError):
        await service.handle_message(topic, {**envelope, "metadata": nested})
    [result] = await service.handle_many([(topic, {**envelope, "metadata": nested})])
    assert isinstance(result, InvalidMessageError)
    assert await service.store.load("b1") is None
