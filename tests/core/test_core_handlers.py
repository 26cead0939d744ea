"""The typed handler registry covers every input ``decide`` accepts, registration and
requests included, and nothing else."""

from __future__ import annotations

import gc
from datetime import UTC, datetime

import pytest

from pipeline_state import BatchStatus, CancelRun, RetryPhase
from pipeline_state import _commands as commands
from pipeline_state._commands import Command, ExpireOverdue
from pipeline_state._decide import HANDLERS, HandlerRegistry, decide
from pipeline_state._model import evolve
from pipeline_state.errors import CorruptStateError, IllegalTransitionError
from pipeline_state.ports import BatchState, PhaseStatus
from pipeline_state.profiles.huleedu.events import (
    INBOUND_TOPICS,
    TOPICS,
    BatchRegistrationRequestV1,
    ClientBatchPipelineRequestV1,
    ELSBatchPhaseOutcomeV1,
    parse_payload,
)
from pipeline_state.profiles.huleedu.profile import huleedu_profile
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

OPERATOR_COMMANDS = (
    commands.CancelRun,
    commands.RetryPhase,
    commands.ExpireOverdue,
    commands.ArchiveBatch,
    commands.CancelBatch,
    commands.RecordPhaseCompletion,
    commands.RepublishOutbox,
)


def test_every_inbound_topic_and_operator_command_has_a_handler() -> None:
    inbound = huleedu_profile().inbound
    assert {t: e.model for t, e in inbound.topics.items()} == {t: TOPICS[t].model for t in INBOUND_TOPICS}
    kinds = {entry.kind for entry in inbound.topics.values()}
    assert len(kinds) == len(INBOUND_TOPICS)
    assert set(HANDLERS.kinds) == kinds | set(OPERATOR_COMMANDS)


def test_a_type_cannot_be_registered_twice() -> None:
    registry = HandlerRegistry()
    registry.register(commands.CancelRun, lambda inputs, p: pytest.fail("not called"))
    with pytest.raises(ValueError, match="CancelRun"):
        registry.register(commands.CancelRun, lambda inputs, p: pytest.fail("not called"))


def test_an_unknown_input_type_is_a_type_error() -> None:
    command = Command(payload=object(), event_id="e1", correlation_id="c1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="no handler for object"):
        decide(None, command, profile=huleedu_profile(), now=datetime(2025, 1, 1, tzinfo=UTC))


def test_a_subclass_of_a_wire_model_gets_its_base_handler() -> None:
    class Adapted(BatchRegistrationRequestV1):
        pass

    payload = Adapted(batch_id="b1", user_id="u1", course_code="ENG5", expected_essay_count=2)
    decision = decide(
        None,
        Command(payload=payload, event_id="e1", correlation_id="c1"),
        profile=huleedu_profile(),
        now=datetime(2025, 1, 1, tzinfo=UTC),
    )
    assert decision.state is not None
    assert decision.state.status.value == "awaiting_content_validation"
    assert [(m.entity, m.trigger, m.source) for m in decision.moves] == [("batch", "register", "")]


# -- states no input produces (stored by hand, an old version or a bug) -------------------------
NOW = datetime(2025, 1, 1, tzinfo=UTC)
CORR = "5f0c1d2e-3a4b-4c5d-8e6f-708192a3b4c5"


def _running(batch_id: str = "b1") -> tuple[BatchState, str]:
    """A ready guest batch with an nlp run whose spellcheck is dispatched."""
    profile = huleedu_profile()
    env = HuleEduEnvelopes()
    state: BatchState | None = None
    ids = env.item_ids(batch_id, 2)
    for topic, message in (
        env.register(batch_id, items=2),
        env.provisioned(batch_id, ids),
        env.request(batch_id, "nlp", prompt_payload={"prompt_ref": "p1"}),
    ):
        payload = parse_payload(topic, message["data"])
        command = Command(payload=payload, event_id=str(message["event_id"]), correlation_id=CORR)
        state = decide(state, command, profile=profile, now=NOW).state
    assert state is not None
    assert state.active_run is not None
    return state, ids[0]


def _cmd(payload: object) -> Command:
    return Command(payload=payload, event_id="e-x", correlation_id="c-x")  # type: ignore[arg-type]


def test_a_request_on_a_ready_row_that_still_holds_a_run_is_denied() -> None:
    state, _ = _running()
    inconsistent = evolve(state, status=BatchStatus.READY_FOR_PIPELINE_EXECUTION)
    request = ClientBatchPipelineRequestV1(batch_id="b1", requested_pipeline="nlp", user_id="u1")

    decision = decide(inconsistent, _cmd(request), profile=huleedu_profile(), now=NOW)

    assert decision.denial is not None
    assert decision.denial.reason == "pipeline_already_active"
    assert decision.state is inconsistent


def test_a_run_ending_on_a_ready_row_raises_instead_of_leaving_the_batch_behind() -> None:
    state, essay = _running()
    inconsistent = evolve(state, status=BatchStatus.READY_FOR_PIPELINE_EXECUTION)
    run = state.active_run
    assert run is not None
    spell = ELSBatchPhaseOutcomeV1(
        batch_id="b1",
        phase_name="spellcheck",
        phase_status="failed_critically",
        failed_essay_ids=[essay],
        correlation_id=run.correlation_id,
    )
    with pytest.raises(IllegalTransitionError) as caught:
        decide(inconsistent, _cmd(spell), profile=huleedu_profile(), now=NOW)
    assert (caught.value.lifecycle, caught.value.trigger) == ("batch", "finish_run")


def test_a_stored_phase_in_a_status_the_lifecycle_never_enters_is_corrupt_state() -> None:
    state, _ = _running()
    run = state.active_run
    assert run is not None
    phases = tuple(
        evolve(p, status=PhaseStatus.IN_PROGRESS) if p.name == "spellcheck" else p for p in run.phases
    )
    stored = evolve(state, active_run=evolve(run, phases=phases))
    for payload in (ExpireOverdue("b1"), CancelRun("b1")):
        with pytest.raises(CorruptStateError, match="in_progress"):
            decide(stored, _cmd(payload), profile=huleedu_profile(), now=NOW)


def test_a_subclass_resolved_once_does_not_block_registering_it_later() -> None:
    class Adapted(commands.CancelRun):
        pass

    registry = HandlerRegistry()
    calls: list[str] = []
    registry.register(commands.CancelRun, lambda inputs, p: calls.append("base") or pytest.fail("stop"))
    with pytest.raises(pytest.fail.Exception):
        registry.decide(None, _cmd(Adapted("b1")), profile=huleedu_profile(), now=NOW)
    registry.register(Adapted, lambda inputs, p: calls.append("own") or pytest.fail("stop"))
    with pytest.raises(pytest.fail.Exception):
        registry.decide(None, _cmd(Adapted("b1")), profile=huleedu_profile(), now=NOW)
    assert calls == ["base", "own"]


def test_a_decision_leaves_no_reference_cycle_behind() -> None:
    # Every cycle left by decide is work for the garbage collector on each delivery.
    state, essay = _running()
    run = state.active_run
    assert run is not None
    spell = ELSBatchPhaseOutcomeV1(
        batch_id="b1",
        phase_name="spellcheck",
        phase_status="completed_successfully",
        processed_essays=[{"essay_id": essay, "text_storage_id": None}],
        correlation_id=run.correlation_id,
    )
    retry = RetryPhase("b1", "spellcheck", user_id="u1")
    ready = evolve(state, status=BatchStatus.READY_FOR_PIPELINE_EXECUTION, active_run=None)
    gc.collect()
    gc.disable()
    try:
        for before, payload in ((state, spell), (ready, retry), (state, ExpireOverdue("b1"))):
            decision = decide(before, _cmd(payload), profile=huleedu_profile(), now=NOW)
            assert decision.moves or decision.ignored
            del decision
            assert gc.collect() == 0, payload
    finally:
        gc.enable()
