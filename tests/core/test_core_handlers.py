"""The typed handler registry covers every input ``decide`` accepts, registration and
requests included, and nothing else."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pipeline_state import commands
from pipeline_state.commands import Command
from pipeline_state.decide import HANDLERS, HandlerRegistry, decide
from pipeline_state.events import INBOUND_TOPICS, TOPICS, BatchRegistrationRequestV1
from pipeline_state.profile import huleedu_profile

OPERATOR_COMMANDS = (
    commands.CancelRun,
    commands.RetryPhase,
    commands.ExpireOverdue,
    commands.ArchiveBatch,
    commands.CancelBatch,
    commands.RecordPhaseCompletion,
)


def test_every_inbound_model_and_operator_command_has_a_handler() -> None:
    inbound = {TOPICS[topic].model for topic in INBOUND_TOPICS}
    assert set(HANDLERS.kinds) >= inbound | set(OPERATOR_COMMANDS)
    assert set(HANDLERS.kinds) - inbound - set(OPERATOR_COMMANDS) == set()


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
