"""Found by an attack, all held: the machinery that unsticks runs when messages are lost or
workers never answer - deadlines, re-sends, the waiting set, parked outbox rows, operator
exits - in memory.

Time moves with the runtime's ManualClock only (no sleeps)."""

from __future__ import annotations

from typing import Any

from core_flow import Flow, one, topics

from pipeline_state import (
    Catalog,
    InMemoryBus,
    InMemoryRuntime,
    ManualClock,
    OutboxRelay,
    PipelineService,
)
from pipeline_state._commands import CancelBatch, CancelRun
from pipeline_state._memory import InMemoryStore
from pipeline_state._service import ExpiredFact
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.profile import huleedu_profile
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

COMPLETED = Topic.PIPELINE_COMPLETED.value

CATALOG = Catalog.from_dict(
    {
        "pipelines": {
            "nlp": {
                "steps": [
                    {"name": "spellcheck", "deadline_seconds": 60},
                    {"name": "nlp", "depends_on": ["spellcheck"], "deadline_seconds": 60},
                ]
            }
        }
    }
)


def _flow(max_resends: int = 2) -> Flow:
    return Flow(
        InMemoryRuntime(huleedu_profile(catalog=CATALOG, max_resends=max_resends)), HuleEduEnvelopes()
    )


def _completions(flow: Flow, batch_id: str) -> list[dict[str, Any]]:
    out = []
    for m in flow.rt.bus.messages(COMPLETED):
        data = m.value["data"]
        if data["batch_id"] == batch_id:
            out.append(data)
    return out


# -- lost command: re-send, re-send, timeout, exactly one completion -------------------------


async def test_lost_command_resent_then_timeout_completes_once() -> None:
    """Held: the spellcheck command is lost in transit (published, the worker never got it).
    Each deadline re-sends the same event id (max_resends=2), then the phase fails with
    ``timeout``; the run completes failed exactly once, the batch is ready again, a worker
    answering afterwards changes nothing, and the next request is accepted."""
    flow = _flow()
    await flow.ready("b1")
    started = await flow.start("b1", "nlp")
    first = [m for m in flow.rt.bus.messages() if m.topic.startswith("huleedu.els.spellcheck")]
    assert len(first) == 1
    command_id = first[0].event_id
    for _ in range(2):
        flow.rt.clock.advance(60)
        out = await flow.rt.expire_overdue()
        assert [m["value"]["event_id"] for m in out] == [command_id]
        assert _completions(flow, "b1") == []
    flow.rt.clock.advance(60)
    out = await flow.rt.expire_overdue()
    assert COMPLETED in topics(out)
    assert one(out, COMPLETED)["final_status"] == "failed_critically"
    # Further sweeps find nothing.
    flow.rt.clock.advance(3600)
    assert await flow.rt.expire_overdue() == []
    # The worker answers late (with the run's correlation id, and with a lost one).
    ids = flow.env.item_ids("b1", 3)
    late = await flow.outcome("b1", "spellcheck", started.correlation_id, processed=ids)
    assert COMPLETED not in topics(late)
    assert len(_completions(flow, "b1")) == 1
    state = await flow.state("b1")
    assert state.status.value == "ready_for_pipeline_execution"
    assert state.active_run is None
    again = await flow.start("b1", "nlp")
    assert again.run_id != started.run_id


async def test_worker_answer_after_resend_completes_once() -> None:
    """Held: the worker answers the original and then the re-sent command (two outcomes,
    fresh event ids, same run): the phase completes once; the second answer is ignored."""
    flow = _flow()
    ids = await flow.ready("b1")
    started = await flow.start("b1", "nlp")
    flow.rt.clock.advance(60)
    await flow.rt.expire_overdue()  # re-send
    await flow.outcome("b1", "spellcheck", started.correlation_id, processed=ids)
    await flow.outcome("b1", "spellcheck", started.correlation_id, processed=ids)
    await flow.outcome("b1", "nlp", started.correlation_id, processed=ids)
    await flow.outcome("b1", "nlp", started.correlation_id, processed=ids)
    assert [c["final_status"] for c in _completions(flow, "b1")] == ["completed_successfully"]
    flow.rt.clock.advance(3600)
    assert await flow.rt.expire_overdue() == []


# -- the sweep's limit: fairness ----------------------------------------------------------------


async def test_batches_beyond_the_limit_are_swept_later() -> None:
    """Held: six batches overdue at once, swept two at a time: the batches beyond the limit
    are reached by later sweeps (a re-sent batch's deadline moves behind the others), and
    every run completes exactly once."""
    flow = _flow(max_resends=1)
    for n in range(6):
        await flow.ready(f"b{n}")
        await flow.start(f"b{n}", "nlp")
    service = flow.rt.service
    for _ in range(12):
        flow.rt.clock.advance(61)
        for result in await service.expire_overdue(limit=2):
            assert not result.duplicate
        await flow.rt.relay.drain()
    for n in range(6):
        assert len(_completions(flow, f"b{n}")) == 1, n
        assert (await flow.state(f"b{n}")).active_run is None


# -- the operator's ways out -------------------------------------------------------------------


async def test_cancel_run_of_a_silent_phase_completes_once() -> None:
    """Held: with deadlines opted out (a silent worker blocks the batch), cancelling the run
    is the way out: one completion (cancelled), the batch is ready, a late answer is stale."""
    flow = Flow(
        InMemoryRuntime(huleedu_profile(catalog=CATALOG, deadlines={"spellcheck": None})),
        HuleEduEnvelopes(),
    )
    ids = await flow.ready("b1")
    started = await flow.start("b1", "nlp")
    flow.rt.clock.advance(10 * 3600)
    assert await flow.rt.expire_overdue() == []
    stalled = await flow.rt.store.stalled_runs(flow.rt.clock.now(), 3600)
    assert [s.batch_id for s in stalled] == ["b1"]
    cancel_id = "5f0f0f0f-0000-4000-8000-000000000001"
    await flow.rt.execute(CancelRun("b1", reason="worker silent"), event_id=cancel_id)
    assert await flow.rt.execute(CancelRun("b1", reason="worker silent"), event_id=cancel_id) == []
    await flow.outcome("b1", "spellcheck", started.correlation_id, processed=ids)
    assert [c["final_status"] for c in _completions(flow, "b1")] == ["cancelled"]
    assert (await flow.state("b1")).status.value == "ready_for_pipeline_execution"


async def test_cancel_batch_mid_run_completes_the_run_once() -> None:
    """Held: cancelling the batch itself mid-run completes the run (one completion event)
    and leaves no deadline behind to sweep."""
    flow = _flow()
    await flow.ready("b1")
    await flow.start("b1", "nlp")
    await flow.rt.execute(CancelBatch("b1", reason="gone"))
    assert [c["final_status"] for c in _completions(flow, "b1")] == ["cancelled"]
    flow.rt.clock.advance(3600)
    assert await flow.rt.expire_overdue() == []
    state = await flow.state("b1")
    assert state.active_run is None


async def test_critical_validation_error_mid_run_completes_the_run_once() -> None:
    """Held: a critical validation error reaching a processing batch does not leave its run
    open for ever: either it is ignored (the run carries on and times out), or it ends the
    run with one completion event. Whichever: exactly one completion, no active run left
    after the deadlines."""
    flow = _flow(max_resends=0)
    await flow.ready("b1")
    await flow.start("b1", "nlp")
    await flow.rt.deliver(*flow.env.validation_errors("b1"))
    for _ in range(4):
        flow.rt.clock.advance(61)
        await flow.rt.expire_overdue()
    assert len(_completions(flow, "b1")) == 1
    assert (await flow.state("b1")).active_run is None


# -- parked outbox row with the phase command ---------------------------------------------------


async def test_parked_phase_command_shows_as_stalled_and_the_deadline_still_fires() -> None:
    """Held: the bus refuses the spellcheck command until the relay parks it. The stalled
    view names the parked row; the deadline re-sends it (unparks it, same event id) and,
    once the bus is back, it is published; with no answer the run completes once."""
    clock = ManualClock()
    store = InMemoryStore()
    bus = InMemoryBus()
    service = PipelineService(store, profile=huleedu_profile(catalog=CATALOG, max_resends=1), clock=clock)
    relay = OutboxRelay(store, bus, clock, max_attempts=1)
    env = HuleEduEnvelopes()
    ids = env.item_ids("b1", 2)
    for delivery in (env.register("b1", items=2), env.provisioned("b1", ids)):
        await service.handle_message(*delivery)
    await relay.drain()
    bus.available = False
    await service.handle_message(*env.request("b1", "nlp"))
    report = await relay.drain()
    assert report.parked >= 1
    parked = await store.parked()
    command_ids = [r.message.event_id for r in parked if "spellcheck" in r.message.topic]
    assert len(command_ids) == 1
    clock.advance(59)
    stalled = await store.stalled_runs(clock.now(), 30)
    assert [s.batch_id for s in stalled] == ["b1"]
    assert command_ids[0] in [r.message.event_id for r in stalled[0].parked]
    bus.available = True
    await relay.drain()
    assert [m.event_id for m in bus.messages() if "spellcheck" in m.topic] == []  # still parked
    clock.advance(1)
    await service.expire_overdue()
    await relay.drain()
    assert [m.event_id for m in bus.messages() if "spellcheck" in m.topic] == command_ids
    clock.advance(60)
    await service.expire_overdue()
    await relay.drain()
    done = [m.value["data"] for m in bus.messages(COMPLETED)]
    assert [d["final_status"] for d in done] == ["failed_critically"]
    assert (await store.load("b1")).active_run is None  # type: ignore[union-attr]


# -- early facts whose batch never registers ----------------------------------------------------


async def test_early_fact_of_a_batch_never_registered_dead_letters_exactly_once() -> None:
    """Held: a provisioning fact for a batch that never registers waits, then is handed to
    the dead-letter callback exactly once over many sweeps, and leaves the waiting set; a
    pipeline request waiting with it is denied (never silent), not dead-lettered."""
    clock = ManualClock()
    store = InMemoryStore()
    service = PipelineService(store, clock=clock, waiting_window_seconds=60)
    env = HuleEduEnvelopes()
    ids = env.item_ids("ghost", 2)
    provisioned = env.provisioned("ghost", ids)
    await service.handle_message(*provisioned)
    request = env.request("ghost", "nlp")
    res = await service.handle_message(*request)
    assert res.waiting is not None
    dead: list[ExpiredFact] = []

    async def dead_letter(fact: ExpiredFact) -> None:
        dead.append(fact)

    for _ in range(5):
        clock.advance(30)
        await service.sweep_waiting(dead_letter, limit=1)
    assert [d.topic for d in dead] == [provisioned[0]]
    assert await store.count_waiting() == 0
    entry = await store.inbox_entry(dead[0].event_id)
    assert entry is not None
    assert entry.result.startswith("dead_lettered:")
    # The request was answered with its denial (an outbox row), not dead-lettered.
    assert any(m.topic == Topic.PIPELINE_DENIED.value for m in store.outbox_messages())


# -- early facts of a run that times out; retry-phase as the way out ------------------------------


async def test_early_outcome_of_a_phase_skipped_by_timeout_leaves_the_waiting_set() -> None:
    """Held: an nlp outcome arrives early (spellcheck still active) and waits for
    ``phase_dispatch:nlp``; spellcheck then times out, nlp is skipped and the run completes
    once. The early fact is settled in that change (stale now), not left to expire into the
    dead letters later."""
    flow = _flow(max_resends=0)
    ids = await flow.ready("b1")
    started = await flow.start("b1", "nlp")
    out = await flow.outcome("b1", "nlp", started.correlation_id, processed=ids)
    assert out == []
    assert await flow.rt.store.count_waiting() == 1
    flow.rt.clock.advance(60)
    await flow.rt.expire_overdue()
    assert len(_completions(flow, "b1")) == 1
    assert await flow.rt.store.count_waiting() == 0


async def test_retry_phase_after_a_timeout_unblocks_and_prunes() -> None:
    """Held: after spellcheck timed out (run failed), the operator retries the phase: a new
    run with a fresh deadline; the worker answers it; the next nlp request prunes
    spellcheck and dispatches nlp. A late answer to the first run is stale throughout."""
    from pipeline_state._commands import RetryPhase

    flow = _flow(max_resends=0)
    ids = await flow.ready("b1")
    first = await flow.start("b1", "nlp")
    flow.rt.clock.advance(60)
    await flow.rt.expire_overdue()
    await flow.rt.execute(RetryPhase("b1", "spellcheck", "teacher-1", retry_reason="timed out"))
    state = await flow.state("b1")
    assert state.active_run is not None
    retry_corr = state.active_run.correlation_id
    late = await flow.outcome("b1", "spellcheck", first.correlation_id, processed=ids)
    assert COMPLETED not in topics(late)
    await flow.outcome("b1", "spellcheck", retry_corr, processed=ids)
    assert [c["final_status"] for c in _completions(flow, "b1")] == [
        "failed_critically",
        "completed_successfully",
    ]
    third = await flow.start("b1", "nlp")
    state = await flow.state("b1")
    assert state.active_run is not None
    assert [p.name for p in state.active_run.phases] == ["nlp"]
    flow.rt.clock.advance(60)
    await flow.rt.expire_overdue()
    assert len(_completions(flow, "b1")) == 3
    assert third.run_id != first.run_id


async def test_keep_published_bound_does_not_lose_the_command_to_resend() -> None:
    """Held: the in-memory store remembers only ``keep_published=2`` published messages; the
    spellcheck command of b0 is pushed out by other batches' traffic before its deadline.
    The re-send still finds it (pinned while its batch has a deadline) and publishes it
    again with the same event id."""
    clock = ManualClock()
    store = InMemoryStore(keep_published=2)
    bus = InMemoryBus()
    service = PipelineService(store, profile=huleedu_profile(catalog=CATALOG, max_resends=2), clock=clock)
    relay = OutboxRelay(store, bus, clock)
    env = HuleEduEnvelopes()
    for n in range(4):
        batch_id = f"b{n}"
        ids = env.item_ids(batch_id, 2)
        for delivery in (
            env.register(batch_id, items=2),
            env.provisioned(batch_id, ids),
            env.request(batch_id, "nlp"),
        ):
            await service.handle_message(*delivery)
            await relay.drain()
    commands = [m for m in bus.messages(Topic.SPELLCHECK.value) if m.key == "b0"]
    assert len(commands) == 1
    for round_ in range(2):
        assert commands[0].event_id not in store._published  # pushed out of the bound
        clock.advance(60)
        await service.expire_overdue()
        await relay.drain()
        for n in range(3):  # more traffic pushes the message out again
            await service.handle_message(*env.register(f"x{round_}{n}", items=1))
            await relay.drain()
    resent = [m.event_id for m in bus.messages(Topic.SPELLCHECK.value) if m.key == "b0"]
    assert resent == [commands[0].event_id] * 3
