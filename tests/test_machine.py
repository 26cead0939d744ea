"""Shared machines: the compiled table and the real ``transitions`` events agree everywhere."""

from __future__ import annotations

import pytest

from pipeline_state.errors import DefinitionError, IllegalTransitionError
from pipeline_state.lifecycle import (
    PHASE_TERMINAL,
    BatchStatus,
    Lifecycle,
    PhaseStatus,
    Transition,
)
from pipeline_state.machine import BATCH_MACHINE, PHASE_MACHINE, RUN_MACHINE, SharedMachine

MACHINES = (BATCH_MACHINE, RUN_MACHINE, PHASE_MACHINE)
UNKNOWN_STATE = "no_such_state"
UNKNOWN_TRIGGER = "no_such_trigger"


class Holder:
    """A plain state holder, never registered with any machine."""

    def __init__(self, state: object) -> None:
        self.state = state


def all_pairs() -> list[object]:
    params: list[object] = []
    for machine in MACHINES:
        lc = machine.lifecycle
        for state in (*lc.states, UNKNOWN_STATE):
            for trigger in (*lc.triggers, UNKNOWN_TRIGGER):
                params.append(pytest.param(machine, state, trigger, id=f"{lc.name}-{state}-{trigger}"))
    return params


@pytest.mark.parametrize(("machine", "state", "trigger"), all_pairs())
def test_table_and_real_event_agree(machine: SharedMachine, state: str, trigger: str) -> None:
    expected = {(s, t.trigger): t.dest for t in machine.lifecycle.transitions for s in t.sources}
    holder = Holder(state)
    if (state, trigger) in expected:
        dest = expected[(state, trigger)]
        assert machine.can(state, trigger)
        assert trigger in machine.allowed_triggers(state)
        assert machine.next_state(state, trigger) == dest
        assert machine.fire(holder, trigger) == dest
        assert holder.state == dest
        assert type(holder.state) is str
    else:
        assert not machine.can(state, trigger)
        assert trigger not in machine.allowed_triggers(state)
        with pytest.raises(IllegalTransitionError) as by_table:
            machine.next_state(state, trigger, batch_id="b-1")
        with pytest.raises(IllegalTransitionError) as by_event:
            machine.fire(holder, trigger, batch_id="b-1")
        assert holder.state == state  # a rejected move changes nothing
        for error in (by_table.value, by_event.value):
            assert error.lifecycle == machine.lifecycle.name
            assert error.state == state
            assert error.trigger == trigger
            assert error.batch_id == "b-1"
            assert "b-1" in str(error)


def test_machines_never_hold_models() -> None:
    for machine in MACHINES:
        assert machine.transitions_machine.models == []
    for _ in range(200):
        phase = Holder(PhaseStatus.REQUESTED_BY_USER)
        for trigger in ("plan", "dispatch", "start", "succeed"):
            PHASE_MACHINE.fire(phase, trigger)
        batch = Holder("awaiting_content_validation")
        for trigger in ("provision_regular", "confirm_associations", "essays_ready", "start_run"):
            BATCH_MACHINE.fire(batch, trigger)
        with pytest.raises(IllegalTransitionError):
            BATCH_MACHINE.fire(batch, "archive")
        RUN_MACHINE.fire(Holder("active"), "succeed")
    for machine in MACHINES:
        assert machine.transitions_machine.models == []
        assert not hasattr(Holder("active"), "trigger")


def test_fire_reads_an_enum_state_and_stores_the_plain_value() -> None:
    holder = Holder(BatchStatus.READY_FOR_PIPELINE_EXECUTION)
    assert BATCH_MACHINE.fire(holder, "start_run") == "processing_pipelines"
    assert holder.state == BatchStatus.PROCESSING_PIPELINES
    assert type(holder.state) is str


def test_rejected_fire_keeps_the_original_enum_state() -> None:
    holder = Holder(PhaseStatus.PENDING_DEPENDENCIES)
    with pytest.raises(IllegalTransitionError):
        PHASE_MACHINE.fire(holder, "succeed")
    assert holder.state is PhaseStatus.PENDING_DEPENDENCIES


def test_fire_without_state_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError):
        PHASE_MACHINE.fire(object(), "plan")


def test_next_state_accepts_enum_members() -> None:
    assert PHASE_MACHINE.next_state(PhaseStatus.IN_PROGRESS, "fail") == PhaseStatus.FAILED


def test_contract_phase_moves() -> None:
    m = PHASE_MACHINE
    assert not m.can("pending_dependencies", "succeed")
    with pytest.raises(IllegalTransitionError):
        m.next_state("pending_dependencies", "succeed")
    assert m.next_state("in_progress", "cancel") == "cancelled"
    assert m.next_state("dispatch_initiated", "succeed") == "completed_successfully"
    assert m.next_state("dispatch_initiated", "fail") == "failed"
    assert m.next_state("pending_dependencies", "skip_dependency_failed") == (
        "skipped_due_to_dependency_failure"
    )
    for terminal in PHASE_TERMINAL:
        assert m.allowed_triggers(terminal) == ()
    assert m.allowed_triggers("completed_successfully") == ()
    assert m.allowed_triggers("in_progress") == ("succeed", "partially_succeed", "fail", "resend", "cancel")
    assert m.next_state("dispatch_initiated", "resend") == "dispatch_initiated"


def test_contract_batch_moves() -> None:
    m = BATCH_MACHINE
    assert m.next_state("processing_pipelines", "finish_run") == "ready_for_pipeline_execution"
    assert not m.can("processing_pipelines", "archive")
    assert not m.can("processing_pipelines", "start_run")
    for final in ("failed_critically", "cancelled", "archived"):
        assert m.allowed_triggers(final) == ()
    # Legacy statuses are not lifecycle states: nothing moves from them.
    assert m.allowed_triggers(BatchStatus.COMPLETED_WITH_FAILURES) == ()
    assert not m.can(BatchStatus.COMPLETED_WITH_FAILURES, "cancel")


def test_contract_run_moves() -> None:
    assert RUN_MACHINE.allowed_triggers("active") == ("succeed", "complete_with_failures", "fail", "cancel")
    assert RUN_MACHINE.allowed_triggers("cancelled") == ()


def test_shared_machine_rechecks_a_hand_built_lifecycle() -> None:
    broken = Lifecycle(
        name="typo",
        states=("a", "b"),
        initial="aa",  # transitions would silently create this state
        final=frozenset({"b"}),
        transitions=(Transition("go", "a", "b"),),
    )
    with pytest.raises(DefinitionError, match="'aa'"):
        SharedMachine(broken)


def test_shared_machine_on_a_custom_lifecycle() -> None:
    lc = Lifecycle(
        name="door",
        states=("closed", "open", "gone"),
        initial="closed",
        final=frozenset({"gone"}),
        transitions=(
            Transition("open", "closed", "open"),
            Transition("close", "open", "closed"),
            Transition("remove", ("open", "closed"), "gone"),
        ),
    )
    m = SharedMachine(lc)
    door = Holder("closed")
    assert m.fire(door, "open") == "open"
    assert m.fire(door, "close") == "closed"
    assert m.fire(door, "remove") == "gone"
    assert m.allowed_triggers("closed") == ("open", "remove")
    assert "door" in repr(m)
