"""Issue 11.2: early facts wait, durably, and are re-attempted in arrival order when their
batch moves on; only a fact still waiting after the window expires (a request into its
denial, anything else into a dead letter naming what it waited for)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

import pytest

from pipeline_state import HandleResult, InMemoryRuntime, InMemoryStore, ManualClock, PipelineService
from pipeline_state._commands import Command
from pipeline_state._service import ExpiredFact
from pipeline_state._waiting import waits_for
from pipeline_state.profiles.huleedu.events import Topic, parse_message
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

Delivery = tuple[str, dict[str, Any]]


def command(delivery: Delivery) -> Command:
    envelope, payload = parse_message(*delivery)
    return Command(payload, str(envelope.event_id), str(envelope.correlation_id))


async def inbox(rt: InMemoryRuntime, delivery: Delivery) -> str | None:
    entry = await rt.store.inbox_entry(delivery[1]["event_id"])
    return None if entry is None else entry.result


async def status(rt: InMemoryRuntime, batch_id: str) -> str:
    """The batch's status as the profile names it (the HuleEdu wire's words)."""
    return rt.service.profile.state_names.show((await rt.service.get_batch(batch_id)).status.value)


# -- what waits -------------------------------------------------------------------------------
async def test_provisioning_before_registration_waits_then_applies(
    rt: InMemoryRuntime, env: HuleEduEnvelopes
) -> None:
    ids = env.item_ids("b1", 2)
    provisioned = env.provisioned("b1", ids)

    result = await rt.service.handle_message(*provisioned)

    assert result.waiting == "batch_registration"
    assert result.decision is None
    assert not result.duplicate
    assert result.label == "deferred:batch_registration"
    assert await inbox(rt, provisioned) == "deferred:batch_registration"
    assert await rt.store.count_waiting() == 1
    (fact,) = await rt.store.list_waiting()
    assert (fact.event_id, fact.topic, fact.batch_id, fact.waits_for) == (
        provisioned[1]["event_id"],
        provisioned[0],
        "b1",
        "batch_registration",
    )
    # Redelivered while waiting: a duplicate, still one waiting fact.
    again = await rt.service.handle_message(*provisioned)
    assert again.duplicate
    assert await rt.store.count_waiting() == 1

    registered = await rt.service.handle_message(*env.register("b1", items=2))

    assert [r.label for r in registered.resumed if isinstance(r, HandleResult)] == ["applied"]
    assert await status(rt, "b1") == "ready_for_pipeline_execution"
    assert await inbox(rt, provisioned) == "applied"
    assert await rt.store.count_waiting() == 0


async def test_shuffled_story_starts_the_run(rt: InMemoryRuntime, env: HuleEduEnvelopes) -> None:
    """Request, then provisioning, then registration (the measured backlog, shuffled):
    the request waits with the readiness fact and the run starts."""
    ids = env.item_ids("b1", 2)
    request = env.request("b1", "nlp")
    assert await rt.deliver(*request) == []
    assert await rt.deliver(*env.provisioned("b1", ids)) == []
    out = await rt.deliver(*env.register("b1", items=2))

    assert await status(rt, "b1") == "processing_pipelines"
    assert await inbox(rt, request) == "applied"
    assert await rt.store.count_waiting() == 0
    await rt.relay.drain()
    assert Topic.SPELLCHECK.value in [m.topic for m in rt.bus.messages()]
    assert Topic.PIPELINE_DENIED.value not in [m.topic for m in rt.bus.messages()]
    assert out[0]["topic"] == Topic.ESSAYS_REGISTERED.value


async def test_request_registration_then_provisioning_still_starts(
    rt: InMemoryRuntime, env: HuleEduEnvelopes
) -> None:
    """A request that arrived before its batch existed keeps waiting while the batch can
    still become ready."""
    ids = env.item_ids("b1", 2)
    request = env.request("b1", "nlp")
    await rt.deliver(*request)
    await rt.deliver(*env.register("b1", items=2))
    assert await inbox(rt, request) == "deferred:batch_registration"
    assert await rt.store.count_waiting() == 1

    await rt.deliver(*env.provisioned("b1", ids))

    assert await status(rt, "b1") == "processing_pipelines"
    assert await inbox(rt, request) == "applied"


async def test_request_for_a_known_batch_simply_not_ready_is_denied_now(
    rt: InMemoryRuntime, env: HuleEduEnvelopes
) -> None:
    await rt.deliver(*env.register("b1", items=2))
    request = env.request("b1", "nlp")

    out = await rt.deliver(*request)

    assert [m["topic"] for m in out] == [Topic.PIPELINE_DENIED.value, Topic.TEACHER_NOTIFICATION.value]
    assert out[0]["value"]["data"]["denial_reason"] == "batch_not_ready"
    assert await inbox(rt, request) == "denied:batch_not_ready"
    assert await rt.store.count_waiting() == 0


async def test_request_waits_with_waiting_readiness_facts(rt: InMemoryRuntime, env: HuleEduEnvelopes) -> None:
    ids = env.item_ids("b1", 2)
    await rt.deliver(*env.register("b1", items=2, group_id="class-7"))
    ready = env.items_ready("b1", ids)
    await rt.deliver(*ready)  # early: the batch awaits content validation
    request = env.request("b1", "nlp")

    assert await rt.deliver(*request) == []
    assert await inbox(rt, request) == "deferred:batch_state:ready_for_pipeline_execution"
    assert await inbox(rt, ready) == "deferred:batch_state:student_validation_completed"

    await rt.deliver(*env.provisioned("b1", ids))
    assert await status(rt, "b1") == "awaiting_student_validation"
    await rt.deliver(*env.group_confirmed("b1", "class-7", ids))

    assert await status(rt, "b1") == "processing_pipelines"
    assert await inbox(rt, ready) == "applied"
    assert await inbox(rt, request) == "applied"


async def test_early_readiness_facts_apply_in_arrival_order(
    rt: InMemoryRuntime, env: HuleEduEnvelopes
) -> None:
    ids = env.item_ids("b1", 2)
    await rt.deliver(*env.register("b1", items=2, group_id="class-7"))
    before = await rt.service.get_batch("b1")
    ready = env.items_ready("b1", ids)
    associations = env.group_confirmed("b1", "class-7", ids)
    await rt.deliver(*ready)
    await rt.deliver(*associations)
    state = await rt.service.get_batch("b1")
    assert state.status is before.status  # nothing applied yet (the version moved on)
    assert await inbox(rt, associations) == "deferred:batch_state:awaiting_student_validation"

    result = await rt.service.handle_message(*env.provisioned("b1", ids))

    assert [r.event_id for r in result.resumed if isinstance(r, HandleResult)] == [
        associations[1]["event_id"],
        ready[1]["event_id"],
    ]
    assert await status(rt, "b1") == "ready_for_pipeline_execution"
    log = [(t.trigger, t.event_id) for t in rt.store.transitions("b1")]
    # The transition log keeps the engine's trigger names.
    assert [t for t, _ in log] == ["register", "provision_regular", "confirm_associations", "items_ready"]


async def test_outcome_for_a_phase_not_dispatched_yet_waits_for_the_dispatch(
    rt: InMemoryRuntime, env: HuleEduEnvelopes
) -> None:
    ids = env.item_ids("b1", 2)
    await rt.deliver(*env.register("b1", items=2))
    await rt.deliver(*env.provisioned("b1", ids))
    corr = str(uuid.uuid4())
    await rt.deliver(*env.request("b1", "nlp", correlation_id=corr))
    nlp = env.outcome("b1", "nlp", corr, processed=ids, suffix="spellcheck")

    assert await rt.deliver(*nlp) == []
    assert await inbox(rt, nlp) == "deferred:phase_dispatch:nlp"

    await rt.deliver(*env.outcome("b1", "spellcheck", corr, processed=ids))

    assert await inbox(rt, nlp) == "applied"
    state = await rt.service.get_batch("b1")
    assert state.status.value == "ready_for_pipeline_execution"
    assert state.history[-1].status.value == "completed_successfully"
    await rt.relay.drain()
    assert len(rt.bus.messages(Topic.PIPELINE_COMPLETED.value)) == 1


def test_waits_for_reads_the_lifecycles(env: HuleEduEnvelopes) -> None:
    profile = InMemoryRuntime().service.profile
    assert waits_for(None, command(env.register("b1")), profile) is None
    assert waits_for(None, command(env.validation_errors("b1")), profile) == "batch_registration"
    assert waits_for(None, command(env.request("b1", "nlp")), profile) == "batch_registration"
    unknown_phase = env.outcome("b1", "astrology", str(uuid.uuid4()))
    assert waits_for(None, command(unknown_phase), profile) is None


async def test_late_or_impossible_facts_do_not_wait(rt: InMemoryRuntime, env: HuleEduEnvelopes) -> None:
    ids = env.item_ids("b1", 2)
    await rt.deliver(*env.register("b1", items=2))  # a guest batch
    await rt.deliver(*env.provisioned("b1", ids))
    profile = rt.service.profile
    ready = await rt.service.get_batch("b1")
    # The source state of these triggers is behind the batch, or never on its path.
    for late in (
        env.provisioned("b1", ids),
        env.group_confirmed("b1", "c", ids),
        env.items_ready("b1", ids),
        env.validation_errors("b1", critical=False),
    ):
        assert waits_for(ready, command(late), profile) is None
    assert (
        waits_for(ready, command(env.request("b1", "nlp")), profile, waiting=["batch_registration"]) is None
    )
    await rt.deliver(*env.validation_errors("b1"))
    failed = await rt.service.get_batch("b1")
    assert waits_for(failed, command(env.request("b1", "nlp")), profile, deferred=True) is None
    assert waits_for(failed, command(env.validation_errors("b1")), profile) is None


# -- expiry -----------------------------------------------------------------------------------
async def test_expired_fact_is_handed_over_for_the_dlq_then_forgotten(
    rt: InMemoryRuntime, env: HuleEduEnvelopes
) -> None:
    provisioned = env.provisioned("ghost", ["e1"])
    await rt.deliver(*provisioned)
    rt.clock.advance(rt.service.waiting_window_seconds - 1)
    assert await rt.service.expired_waiting() == []
    rt.clock.advance(2)

    expired = await rt.service.expired_waiting()

    assert [e.event_id for e in expired] == [provisioned[1]["event_id"]]
    (fact,) = expired
    assert fact.topic == provisioned[0]
    assert "batch_registration" in fact.reason
    assert parse_message(fact.topic, fact.raw)[0].event_id == uuid.UUID(provisioned[1]["event_id"])
    assert await rt.store.count_waiting() == 1  # still there until forgotten
    assert await rt.service.forget_waiting([fact.event_id]) == 1
    assert await rt.store.count_waiting() == 0
    assert await inbox(rt, provisioned) == "dead_lettered:batch_registration"
    assert rt.service.counters["waiting_dead_lettered"] == 1


async def test_sweep_writes_the_dead_letter_before_forgetting(
    rt: InMemoryRuntime, env: HuleEduEnvelopes
) -> None:
    first, second = env.provisioned("g1", ["e1"]), env.outcome("g2", "spellcheck", str(uuid.uuid4()))
    await rt.deliver(*first)
    await rt.deliver(*second)
    rt.clock.advance(rt.service.waiting_window_seconds + 1)
    written: list[ExpiredFact] = []

    async def broken(fact: ExpiredFact) -> None:
        raise RuntimeError("broker down")

    with pytest.raises(RuntimeError):
        await rt.service.sweep_waiting(broken)
    assert await rt.store.count_waiting() == 2  # nothing forgotten without its dead letter

    async def dead_letter(fact: ExpiredFact) -> None:
        written.append(fact)

    report = await rt.service.sweep_waiting(dead_letter)

    assert [f.event_id for f in written] == [first[1]["event_id"], second[1]["event_id"]]
    assert report.dead_lettered == 2
    assert await rt.store.count_waiting() == 0


async def test_expired_request_for_a_registered_batch_is_denied_not_ready(
    rt: InMemoryRuntime, env: HuleEduEnvelopes
) -> None:
    request = env.request("b1", "nlp")
    await rt.deliver(*request)
    await rt.deliver(*env.register("b1", items=2))
    rt.clock.advance(rt.service.waiting_window_seconds + 1)

    report = await rt.service.sweep_waiting(_never)

    assert report.denied == 1
    assert await inbox(rt, request) == "denied:batch_not_ready"
    await rt.relay.drain()
    (denied,) = rt.bus.messages(Topic.PIPELINE_DENIED.value)
    assert denied.value["data"]["denial_reason"] == "batch_not_ready"


async def test_sweep_resumes_a_fact_whose_wakeup_was_missed(env: HuleEduEnvelopes) -> None:
    """A fact stored while another writer moved its batch (a race between processes) is
    re-attempted by the sweep, before anything expires."""
    store = InMemoryStore()
    clock = ManualClock()
    service = PipelineService(store, clock=clock)
    await service.handle_message(*env.provisioned("b1", ["b1-e0"]))
    # Another process registers the batch without seeing the waiting fact.
    blind = PipelineService(_Blind(store), clock=clock)
    await blind.handle_message(*env.register("b1", items=1))
    assert await store.count_waiting() == 1

    report = await service.sweep_waiting(_never)

    assert report.resumed == 1
    assert (await service.get_batch("b1")).status.value == "ready_for_pipeline_execution"


def test_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="waiting_window_seconds"):
        PipelineService(InMemoryStore(), waiting_window_seconds=0)


async def _never(fact: ExpiredFact) -> None:
    raise AssertionError(f"nothing should be dead-lettered: {fact}")


class _Blind(InMemoryStore):
    """A view of a store that does not see waiting facts (a writer that raced a deferral)."""

    def __init__(self, inner: InMemoryStore) -> None:
        self.__dict__ = inner.__dict__

    async def load_with_waiting(self, batch_id: str) -> tuple[Any, bool]:
        return await self.load(batch_id), False

    async def load_for_event(self, batch_id: str, event_id: str) -> tuple[bool, Any, bool]:
        seen, state, _ = await super().load_for_event(batch_id, event_id)
        return seen, state, False

    async def load_for_events(
        self, events: Sequence[tuple[str, str]]
    ) -> tuple[frozenset[str], dict[str, Any]]:
        processed, read = await super().load_for_events(events)
        return processed, {b: (state, False) for b, (state, _) in read.items()}


# -- correlation flag -------------------------------------------------------------------------
async def test_correlation_mismatch_is_counted_logged_and_noted(
    rt: InMemoryRuntime, env: HuleEduEnvelopes, caplog: pytest.LogCaptureFixture
) -> None:
    ids = env.item_ids("b1", 2)
    await rt.deliver(*env.register("b1", items=2))
    await rt.deliver(*env.provisioned("b1", ids))
    await rt.deliver(*env.request("b1", "nlp"))
    foreign = env.outcome("b1", "spellcheck", str(uuid.uuid4()), processed=ids)

    with caplog.at_level(logging.WARNING, logger="pipeline_state.service"):
        result = await rt.service.handle_message(*foreign)

    assert result.decision is not None
    assert "correlation_mismatch" in result.decision.flags
    assert rt.service.counters["correlation_mismatch"] == 1
    assert any("correlation_mismatch" in r.getMessage() for r in caplog.records)
    notes = [t.note for t in rt.store.transitions("b1") if t.event_id == foreign[1]["event_id"]]
    assert "correlation_mismatch" in notes


# -- found by review --------------------------------------------------------------------------
async def test_an_outcome_before_its_batch_and_run_waits_for_the_run(
    rt: InMemoryRuntime, env: HuleEduEnvelopes
) -> None:
    """The outcome waited for the registration, then was ignored as ``no_active_run`` the
    moment the batch existed: the successful outcome was lost and the run timed out."""
    ids = env.item_ids("b1", 2)
    corr = str(uuid.uuid4())
    outcome = env.outcome("b1", "spellcheck", corr, processed=ids)
    assert (await rt.service.handle_message(*outcome)).waiting == "batch_registration"
    await rt.deliver(*env.register("b1", items=2))
    assert [f.waits_for for f in await rt.store.list_waiting()] == ["run_start"]
    await rt.deliver(*env.provisioned("b1", ids))
    started = await rt.service.handle_message(*env.request("b1", "nlp", correlation_id=corr))

    # The run starts, dispatches spellcheck, and the waiting outcome applies at once.
    assert [r.label for r in started.resumed if isinstance(r, HandleResult)] == ["applied"]
    assert await rt.store.count_waiting() == 0
    assert await inbox(rt, outcome) == "applied"
    run = (await rt.service.get_batch("b1")).active_run
    assert run is not None
    assert {p.name: p.status.value for p in run.phases} == {
        "spellcheck": "completed_successfully",
        "nlp": "dispatch_initiated",
    }


async def test_an_outcome_of_an_archived_run_does_not_wait(
    rt: InMemoryRuntime, env: HuleEduEnvelopes
) -> None:
    ids = env.item_ids("b1", 1)
    await rt.deliver(*env.register("b1", items=1))
    await rt.deliver(*env.provisioned("b1", ids))
    corr = str(uuid.uuid4())
    await rt.deliver(*env.request("b1", "nlp", correlation_id=corr))
    await rt.deliver(*env.outcome("b1", "spellcheck", corr, processed=ids))
    await rt.deliver(*env.outcome("b1", "nlp", corr, processed=ids))  # the run completes
    late = await rt.service.handle_message(*env.outcome("b1", "nlp", corr, processed=ids))
    assert late.waiting is None
    assert late.ignored is not None


async def test_a_waiting_fact_names_what_it_waits_for_now(rt: InMemoryRuntime, env: HuleEduEnvelopes) -> None:
    """The reason was the one of the first deferral: associations that waited for the
    registration still said so (and would be dead-lettered so) once the batch existed."""
    ids = env.item_ids("b1", 2)
    associations = env.group_confirmed("b1", "c1", ids)
    assert (await rt.service.handle_message(*associations)).waiting == "batch_registration"
    await rt.deliver(*env.register("b1", items=2, group_id="c1"))
    (fact,) = await rt.store.list_waiting()
    assert fact.waits_for == "batch_state:awaiting_student_validation"
    rt.clock.advance(rt.service.waiting_window_seconds + 1)
    letters: list[ExpiredFact] = []

    async def dead_letter(expired: ExpiredFact) -> None:
        letters.append(expired)

    await rt.service.sweep_waiting(dead_letter)
    (letter,) = letters
    assert letter.reason.startswith(
        f"waited {rt.service.waiting_window_seconds:g}s for batch_state:awaiting_student_validation "
    )


async def test_waiting_requests_do_not_hold_back_a_request_for_a_batch_simply_not_ready(
    rt: InMemoryRuntime, env: HuleEduEnvelopes
) -> None:
    ids = env.item_ids("b1", 2)
    for _ in range(2):
        assert (await rt.service.handle_message(*env.request("b1", "nlp"))).waiting == "batch_registration"
    await rt.deliver(*env.register("b1", items=2, group_id="c1"))  # regular: needs students
    await rt.deliver(*env.provisioned("b1", ids))
    third = await rt.service.handle_message(*env.request("b1", "nlp"))
    assert third.waiting is None
    assert third.decision is not None
    assert third.decision.denial is not None
    assert third.decision.denial.reason == "batch_not_ready"
