"""Issue 10.4: a command that would exceed the producer's size limit is never built. The
limits guarantee it by construction (checked when a profile is built), and the engine
measures a command that could exceed it (a state stored before the bounds) and fails the
phase with ``command_too_large`` instead, so the run completes."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from pipeline_state import DefinitionError, InMemoryStore, ManualClock, PipelineService
from pipeline_state._commands import Command
from pipeline_state._decide import decide
from pipeline_state._model import evolve
from pipeline_state._profile import COMMAND_OVERHEAD_BYTES, DEFAULT_MAX_COMMAND_BYTES, command_size_bound
from pipeline_state._wire import MAX_ID_LENGTH, MAX_ITEM_ID_LENGTH
from pipeline_state.ports import ItemRef
from pipeline_state.profiles.huleedu.events import (
    HULEEDU_COMMAND_FIELDS,
    MAX_ESSAYS_PER_BATCH,
    Topic,
    parse_message,
)
from pipeline_state.profiles.huleedu.profile import huleedu_profile
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

KAFKA_DEFAULT_MAX_REQUEST_SIZE = 1_048_576
NOW = datetime(2025, 1, 1, tzinfo=UTC)


def _fold(profile, deliveries):  # type: ignore[no-untyped-def]
    state = None
    decision = None
    for topic, value in deliveries:
        envelope, payload = parse_message(topic, value)
        command = Command(payload, str(envelope.event_id), str(envelope.correlation_id))
        decision = decide(state, command, profile=profile, now=NOW)
        state = decision.state
    return state, decision


def test_the_default_limits_fit_the_producers_default_request_size() -> None:
    worst = command_size_bound(MAX_ESSAYS_PER_BATCH, HULEEDU_COMMAND_FIELDS)
    assert worst <= DEFAULT_MAX_COMMAND_BYTES < KAFKA_DEFAULT_MAX_REQUEST_SIZE
    assert huleedu_profile().measure_above_items >= MAX_ESSAYS_PER_BATCH


def test_a_profile_whose_worst_command_does_not_fit_is_refused_naming_the_numbers() -> None:
    with pytest.raises(DefinitionError) as caught:
        huleedu_profile(max_command_bytes=100_000)
    text = str(caught.value)
    assert "max_command_bytes=100000" in text
    assert str(command_size_bound(MAX_ESSAYS_PER_BATCH, HULEEDU_COMMAND_FIELDS)) in text
    assert "allow at most 109 items" in text
    huleedu_profile(max_command_bytes=100_000, max_items_per_batch=109)
    with pytest.raises(DefinitionError):
        huleedu_profile(max_items_per_batch=MAX_ESSAYS_PER_BATCH + 1)


async def test_the_largest_valid_command_encodes_within_the_bound() -> None:
    # Worst case: every id at its bound in 4-byte characters, the most essays per batch.
    env = HuleEduEnvelopes()
    big = "😀"
    batch_id = big * MAX_ID_LENGTH
    essays = [f"{i:04d}" + big * (MAX_ITEM_ID_LENGTH - 4) for i in range(MAX_ESSAYS_PER_BATCH)]
    service = PipelineService(InMemoryStore(), clock=ManualClock())
    register = env.register(batch_id, items=MAX_ESSAYS_PER_BATCH)  # a guest batch: ready once provisioned
    register[1]["data"].update(essay_ids=essays, course_code=big * 64, language=big * 64)  # type: ignore[union-attr]
    await service.handle_message(*register)
    provisioned = env.provisioned(batch_id, essays)
    for ref in provisioned[1]["data"]["essays_for_processing"]:  # type: ignore[index]
        ref["text_storage_id"] = "t" + big * (MAX_ITEM_ID_LENGTH - 1)
    await service.handle_message(*provisioned)
    request = await service.handle_message(
        *env.request(batch_id, "comprehensive", prompt_payload={"prompt_ref": "p"})
    )
    assert request.decision is not None
    assert request.decision.run_id is not None
    run = (await service.get_batch(batch_id)).active_run
    assert run is not None
    outcome = env.outcome(batch_id, "spellcheck", run.correlation_id, processed=essays)
    for ref in outcome[1]["data"]["processed_essays"]:  # type: ignore[index]
        ref["text_storage_id"] = "s" + big * (MAX_ITEM_ID_LENGTH - 1)
    result = await service.handle_message(*outcome)

    commands = [m for m in result.messages if m.topic in (Topic.CJ_ASSESSMENT.value, Topic.NLP.value)]
    assert len(commands) == 2
    for message in commands:
        encoded = json.dumps(message.value, separators=(",", ":"), ensure_ascii=False).encode()
        assert len(message.value["data"]["essays_to_process"]) == MAX_ESSAYS_PER_BATCH
        assert (
            len(encoded)
            <= command_size_bound(MAX_ESSAYS_PER_BATCH, HULEEDU_COMMAND_FIELDS)
            <= DEFAULT_MAX_COMMAND_BYTES
        )
        assert (
            len(encoded)
            - len(json.dumps(message.value["data"]["essays_to_process"], ensure_ascii=False).encode())
            < COMMAND_OVERHEAD_BYTES
        )


def test_a_command_too_large_fails_its_phase_and_the_run_completes() -> None:
    # Measured: a 30,000-essay batch's command was parked and its run stayed active for ever.
    env = HuleEduEnvelopes()
    profile = huleedu_profile()
    state, _ = _fold(profile, [env.register("b1", items=2), env.provisioned("b1", env.item_ids("b1", 2))])
    assert state is not None
    # A state stored before the bounds existed: 30,000 essays.
    legacy = tuple(ItemRef(f"essay-{i:05d}", f"text-{i:05d}") for i in range(30_000))
    state = evolve(state, items=legacy, expected_items=30_000)
    topic, value = env.request("b1", "nlp", prompt_payload={"prompt_ref": "p"})
    envelope, payload = parse_message(topic, value)

    decision = decide(
        state,
        Command(payload, str(envelope.event_id), str(envelope.correlation_id)),
        profile=profile,
        now=NOW,
    )

    topics = [e.topic for e in decision.emits]
    assert Topic.SPELLCHECK.value not in topics
    assert Topic.PIPELINE_COMPLETED.value in topics
    assert decision.state is not None
    assert decision.state.active_run is None
    run = decision.archived[-1]
    assert run.status.value == "failed_critically"
    spell = run.phase("spellcheck")
    assert spell is not None
    assert (spell.status.value, spell.error) == ("failed", "command_too_large")
    assert len(spell.failed_item_ids) == 30_000
    assert run.phase_statuses["nlp"] == "skipped_due_to_dependency_failure"
    completed = next(e.payload for e in decision.emits if e.topic == Topic.PIPELINE_COMPLETED.value)
    assert completed.failed_essay_count == 30_000  # type: ignore[attr-defined]


def test_a_large_but_fitting_legacy_command_is_measured_and_sent() -> None:
    env = HuleEduEnvelopes()
    profile = huleedu_profile()
    state, _ = _fold(profile, [env.register("b1", items=2), env.provisioned("b1", env.item_ids("b1", 2))])
    assert state is not None
    legacy = tuple(ItemRef(f"e{i}", None) for i in range(profile.measure_above_items + 1))
    state = evolve(state, items=legacy)
    topic, value = env.request("b1", "nlp", prompt_payload={"prompt_ref": "p"})
    envelope, payload = parse_message(topic, value)

    decision = decide(
        state,
        Command(payload, str(envelope.event_id), str(envelope.correlation_id)),
        profile=profile,
        now=NOW,
    )

    assert [e.topic for e in decision.emits].count(Topic.SPELLCHECK.value) == 1
