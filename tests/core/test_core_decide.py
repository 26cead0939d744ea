"""``decide()`` on its own: pure, deterministic, and explicit about what it did."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from core_flow import new_id

from pipeline_state._commands import Command
from pipeline_state._decide import Decision, decide
from pipeline_state.errors import BatchNotFoundError
from pipeline_state.ports import BatchState
from pipeline_state.profiles.huleedu.events import Topic, parse_message
from pipeline_state.profiles.huleedu.profile import huleedu_profile
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

PROFILE = huleedu_profile()
NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def command(delivery: tuple[str, dict[str, Any]]) -> Command:
    envelope, payload = parse_message(*delivery)
    return Command(payload, str(envelope.event_id), str(envelope.correlation_id))


def run(state: BatchState | None, delivery: tuple[str, dict[str, Any]]) -> Decision:
    return decide(state, command(delivery), profile=PROFILE, now=NOW)


def ready_state(env: HuleEduEnvelopes) -> BatchState:
    registered = run(None, env.register("b1")).state
    assert registered is not None
    ready = run(registered, env.provisioned("b1", env.item_ids("b1", 3))).state
    assert ready is not None
    return ready


def test_registration_creates_version_one_and_emits_one_event() -> None:
    decision = run(None, HuleEduEnvelopes().register("b1"))

    assert decision.state is not None
    assert decision.state.version == 1
    assert decision.state.created_at == NOW
    assert decision.changed
    [emit] = decision.emits
    assert (emit.topic, emit.key) == (Topic.ESSAYS_REGISTERED.value, "b1")


def test_same_input_gives_the_same_decision() -> None:
    env = HuleEduEnvelopes()
    state = ready_state(env)
    request = command(env.request("b1", "comprehensive"))

    first = decide(state, request, profile=PROFILE, now=NOW)
    second = decide(state, request, profile=PROFILE, now=NOW)

    assert first == second
    assert first.run_id is not None
    assert first.state is not None
    assert first.state.version == state.version + 1


def test_ignored_input_returns_the_same_state_object_and_a_reason() -> None:
    env = HuleEduEnvelopes()
    state = ready_state(env)

    decision = run(state, env.items_ready("b1", env.item_ids("b1", 3)))

    assert decision.state is state
    assert not decision.changed
    assert decision.emits == ()
    assert decision.ignored == "unexpected:essays_ready in ready_for_pipeline_execution"


def test_denial_is_a_decision_with_events_but_no_change() -> None:
    env = HuleEduEnvelopes()
    state = ready_state(env)

    decision = run(state, env.request("b1", "astrology"))

    assert decision.state is state
    assert not decision.changed
    assert decision.denial is not None
    assert decision.denial.reason == "unknown_pipeline"
    assert [e.topic for e in decision.emits] == [
        Topic.PIPELINE_DENIED.value,
        Topic.TEACHER_NOTIFICATION.value,
    ]


def test_request_for_an_unknown_batch_is_denied_without_state() -> None:
    decision = run(None, HuleEduEnvelopes().request("ghost", "nlp"))

    assert decision.state is None
    assert decision.denial is not None
    assert decision.denial.reason == "batch_not_found"


def test_anything_else_for_an_unknown_batch_raises() -> None:
    with pytest.raises(BatchNotFoundError):
        run(None, HuleEduEnvelopes().outcome("ghost", "nlp", new_id(), processed=["e1"]))


def test_run_id_derives_from_the_request_event_id() -> None:
    env = HuleEduEnvelopes()
    state = ready_state(env)
    event_id = new_id()

    first = run(state, env.request("b1", "nlp", event_id=event_id))
    second = run(state, env.request("b1", "nlp", event_id=event_id))
    other = run(state, env.request("b1", "nlp"))

    assert first.run_id == second.run_id
    assert first.run_id != other.run_id


def test_time_comes_only_from_now() -> None:
    env = HuleEduEnvelopes()
    state = ready_state(env)
    later = datetime(2030, 1, 1, tzinfo=UTC)

    decision = decide(state, command(env.request("b1", "nlp")), profile=PROFILE, now=later)

    assert decision.state is not None
    assert decision.state.updated_at == later
    assert decision.state.active_run is not None
    assert decision.state.active_run.accepted_at == later
