"""A run-starting request delivered again after the retention purge forgot its inbox entry
(a consumer group reset to the earliest offset, a late re-injection, an HTTP retry past the
inbox's retention).

Was a defect (fixed): it was decided anew and started a second run under the first run's
run id (both derive from the request's event id), emitting under the event ids of the first
handling's messages: the history held two runs with one id, and when the first run had
failed, the new run's phase command carried the very event id of the first one's, which a
worker that drops repeated event ids drops (the run then waited for its deadline, and its
re-sends reused that id too). Now the batch's summary lists its archived runs' ids
(``Past.runs``) and such a request is answered as a duplicate (its decision ignored as
``already_handled``): nothing emitted, nothing written but its inbox entry. The same
holds while the run it started is active.

The SQL stores run the same stories in ``tests/sql/test_sql_request_redelivered_after_purge.py``.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import UTC, datetime

import attrs

from pipeline_state import (
    HandleResult,
    InMemoryBus,
    InMemoryStore,
    ManualClock,
    OutboxRelay,
    PipelineService,
    RetryPhase,
)
from pipeline_state._commands import Command, RecordPhaseCompletion
from pipeline_state._decide import ALREADY_HANDLED, decide
from pipeline_state.ports import Retention, Store, purge_expired
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

DAY = 86_400.0


@attrs.define
class Story:
    """A batch whose first run ended (completed, or failed at spellcheck), the inbox purged
    a month later; ``request`` is the message that started the run."""

    service: PipelineService
    store: Store
    bus: InMemoryBus
    relay: OutboxRelay
    clock: ManualClock
    request: tuple[str, dict[str, object]]

    async def deliver(self, message: tuple[str, dict[str, object]]) -> object:
        result = await self.service.handle_message(*message)
        await self.relay.drain()
        return result

    def reused_ids(self) -> dict[str, list[str]]:
        """Event ids carried by more than one distinct message."""
        seen: dict[str, set[tuple[str, str]]] = defaultdict(set)
        for m in self.bus.messages():
            seen[m.event_id].add((m.topic, repr(m.value.get("data"))))
        return {k: sorted(t for t, _ in v) for k, v in seen.items() if len(v) > 1}


def assert_already_handled(result: object) -> None:
    """``result`` answers a duplicate the state recognised (the inbox had forgotten it)."""
    assert isinstance(result, HandleResult)
    assert result.duplicate
    assert result.decision is not None
    assert result.decision.ignored == ALREADY_HANDLED


async def first_run(store: Store, *, fail_spellcheck: bool, purge: bool = True) -> Story:
    clock = ManualClock(datetime(2025, 3, 1, tzinfo=UTC))
    service, bus = PipelineService(store, clock=clock), InMemoryBus()
    story = Story(service, store, bus, OutboxRelay(store, bus, clock), clock, ("", {}))
    env, corr = HuleEduEnvelopes(), str(uuid.uuid4())
    items = env.item_ids("b1", 1)
    story.request = env.request("b1", "nlp", correlation_id=corr)
    if fail_spellcheck:
        outcomes = [env.outcome("b1", "spellcheck", corr, status="failed_critically", failed=items)]
    else:
        outcomes = [
            env.outcome("b1", "spellcheck", corr, processed=items),
            env.outcome("b1", "nlp", corr, processed=items),
        ]
    for delivery in (env.register("b1", items=1), env.provisioned("b1", items), story.request, *outcomes):
        clock.advance(1)
        await story.deliver(delivery)
    assert len(bus.messages(Topic.PIPELINE_COMPLETED.value)) == 1
    if purge:
        clock.advance(31 * DAY)
        assert (await purge_expired(store, Retention(), clock.now())).inbox >= 3
    return story


async def check_a_completed_run_is_not_started_again(store: Store) -> None:
    story = await first_run(store, fail_spellcheck=False)
    sent = len(story.bus.messages())
    result = await story.deliver(story.request)
    assert_already_handled(result)
    assert len(story.bus.messages()) == sent, "the redelivered request emitted"
    history = await story.service.get_batch("b1")
    assert len(history.history) == 1
    assert history.active_run is None
    assert not story.reused_ids()


async def check_a_failed_run_is_not_started_again(store: Store) -> None:
    story = await first_run(store, fail_spellcheck=True)
    commands = story.bus.messages(Topic.SPELLCHECK.value)
    assert len(commands) == 1
    result = await story.deliver(story.request)
    assert_already_handled(result)
    assert story.bus.messages(Topic.SPELLCHECK.value) == commands
    assert not story.reused_ids()
    # A new request (its own event id) still starts a run, whose command has its own id.
    fresh = HuleEduEnvelopes().request("b1", "nlp", correlation_id=str(uuid.uuid4()))
    started = await story.deliver(fresh)
    assert isinstance(started, HandleResult)
    assert started.ignored is None
    assert len({m.event_id for m in story.bus.messages(Topic.SPELLCHECK.value)}) == 2
    assert not story.reused_ids()


async def check_a_retry_is_not_started_again(store: Store) -> None:
    """An operator's retry of a phase starts a run too (its id derived from the retry's event
    id): the same retry, again after the purge, is a duplicate - also once its run completed
    and was archived, though its ``after_runs`` (the runs archived when it was asked) no longer
    matches (it was refused: a keyed client never got its first answer back)."""
    story = await first_run(store, fail_spellcheck=True, purge=False)
    retry = RetryPhase("b1", "spellcheck", "ops", retry_reason="worker fixed", after_runs=1)
    corr = str(uuid.uuid4())
    first = await story.service.execute(retry, event_id="retry-1", correlation_id=corr)
    assert first.ignored is None
    await story.relay.drain()
    env = HuleEduEnvelopes()
    await story.deliver(env.outcome("b1", "spellcheck", corr, processed=env.item_ids("b1", 1)))
    shown = await story.service.get_batch("b1")
    assert shown.active_run is None
    assert len(shown.history) == 2  # the retry's run archived: two runs now, after_runs was 1
    story.clock.advance(31 * DAY)
    await purge_expired(story.store, Retention(), story.clock.now())
    sent = len(story.bus.messages())
    again = await story.service.execute(retry, event_id="retry-1", correlation_id=corr)
    assert_already_handled(again)
    await story.relay.drain()
    assert len(story.bus.messages()) == sent
    assert len((await story.service.get_batch("b1")).history) == 2


async def check_a_recorded_completion_is_not_recorded_again(store: Store) -> None:
    """An operator's report of a phase done outside the engine, on an idle batch, is archived
    as a run of its own named after the report's event id: the same report, again after the
    purge, is a duplicate, not a second recorded run."""
    story = await first_run(store, fail_spellcheck=True, purge=False)
    report = RecordPhaseCompletion("b1", "spellcheck", success=True)
    first = await story.service.execute(report, event_id="report-1")
    assert first.ignored is None
    assert len((await story.service.get_batch("b1")).history) == 2
    story.clock.advance(31 * DAY)
    await purge_expired(story.store, Retention(), story.clock.now())
    again = await story.service.execute(report, event_id="report-1")
    assert_already_handled(again)
    assert len((await story.service.get_batch("b1")).history) == 2


async def test_a_completed_run_is_not_started_again() -> None:
    await check_a_completed_run_is_not_started_again(InMemoryStore())


async def test_a_failed_run_is_not_started_again_and_a_new_request_still_is() -> None:
    await check_a_failed_run_is_not_started_again(InMemoryStore())


async def test_a_retry_is_not_started_again() -> None:
    await check_a_retry_is_not_started_again(InMemoryStore())


async def test_a_recorded_completion_is_not_recorded_again() -> None:
    await check_a_recorded_completion_is_not_recorded_again(InMemoryStore())


async def test_the_request_of_the_active_run_is_not_decided_again() -> None:
    """The request of a run still active, decided again (its inbox entry gone): ignored, not
    denied as ``pipeline_already_active`` (a denial emitted under the first handling's event
    ids)."""
    store = InMemoryStore()
    clock = ManualClock(datetime(2025, 3, 1, tzinfo=UTC))
    service = PipelineService(store, clock=clock)
    env = HuleEduEnvelopes()
    items = env.item_ids("b1", 1)
    request = env.request("b1", "nlp", correlation_id=str(uuid.uuid4()))
    for delivery in (env.register("b1", items=1), env.provisioned("b1", items), request):
        await service.handle_message(*delivery)
    state = await store.load("b1")
    assert state is not None
    assert state.active_run is not None
    envelope, value = service.profile.inbound.parse(*request)
    command = Command(value, str(envelope.event_id), str(envelope.correlation_id))
    decision = decide(state, command, profile=service.profile, now=clock.now())
    assert decision.ignored == ALREADY_HANDLED
    assert decision.emits == ()
    assert decision.state is state
