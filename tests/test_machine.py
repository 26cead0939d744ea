"""Shared machines: the compiled table fires exactly as ``transitions`` itself would.

The oracle is a real ``transitions.Machine`` built independently from each lifecycle, with
a model whose guard methods answer as a test case says and whose effect methods log their
calls: for every state, trigger and guard outcome, the bound machine must pick the same
destination and run the same effects in the same order.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from transitions import Machine, MachineError

from pipeline_state._lifecycle import (
    ABSENT,
    PHASE_TERMINAL,
    Effect,
    Guard,
    Lifecycle,
    Transition,
    Verdict,
    define_lifecycle,
)
from pipeline_state._machine import (
    BATCH_MACHINE,
    PHASE_MACHINE,
    RUN_MACHINE,
    BoundMachine,
    Option,
    Refused,
    SharedMachine,
)
from pipeline_state._names import StateNames
from pipeline_state.errors import DefinitionError, IllegalTransitionError

MACHINES = (BATCH_MACHINE, RUN_MACHINE, PHASE_MACHINE)
UNKNOWN_STATE = "no_such_state"
UNKNOWN_TRIGGER = "no_such_trigger"
ORACLE_ABSENT = "__absent__"


class Case:
    """The context a bound machine fires on: which guards fail, and the effects' log."""

    def __init__(self, failing: frozenset[str]) -> None:
        self.failing = failing
        self.log: list[str] = []


def bound(machine: SharedMachine) -> BoundMachine[Case]:
    lc = machine.lifecycle

    def guard(name: str) -> Any:
        return lambda case: f"no:{name}" if name in case.failing else None

    def effect(name: str) -> Any:
        return lambda case: case.log.append(name)

    return machine.bind(
        guards={name: guard(name) for name in lc.guards},
        effects={name: effect(name) for name in lc.effects},
    )


class OracleModel:
    """A ``transitions`` model: guard methods read ``failing``; effect methods log."""

    def __init__(self, lc: Lifecycle, state: str, failing: frozenset[str]) -> None:
        self.log: list[str] = []
        for name in lc.guards:
            setattr(self, name, lambda name=name: name not in failing)
        for name in lc.effects:
            setattr(self, name, lambda name=name: self.log.append(name))
        self.start = state


def oracle(lc: Lifecycle, state: str, trigger: str, failing: frozenset[str]) -> tuple[str, list[str]] | None:
    """Fire ``trigger`` with a real ``transitions`` model; ``None`` when it did not move."""
    model = OracleModel(lc, state, failing)
    start = ORACLE_ABSENT if state == ABSENT else state
    Machine(
        model=model,
        states=[*lc.states, ORACLE_ABSENT],
        initial=start,
        transitions=[
            {
                "trigger": t.trigger,
                "source": [ORACLE_ABSENT if s == ABSENT else s for s in t.sources],
                "dest": t.dest,
                "conditions": list(t.guards),
                "before": list(t.before),
                "after": list(t.after),
            }
            for t in lc.transitions
        ],
        auto_transitions=False,
    )
    try:
        moved = getattr(model, trigger)()
    except (MachineError, AttributeError):
        return None
    if not moved:
        return None
    return model.state, model.log  # type: ignore[attr-defined]


def cases() -> list[object]:
    params: list[object] = []
    for machine in MACHINES:
        lc = machine.lifecycle
        for state in (ABSENT, *lc.states, UNKNOWN_STATE):
            for trigger in (*lc.triggers, UNKNOWN_TRIGGER):
                guards = sorted({g for t in lc.alternatives(state, trigger) for g in t.guards})
                # Every subset of the guards that matter here fails in one case or another.
                subsets = [
                    frozenset(c) for n in range(len(guards) + 1) for c in itertools.combinations(guards, n)
                ]
                for failing in subsets:
                    label = "+".join(sorted(failing)) or "all-hold"
                    params.append(
                        pytest.param(
                            machine, state, trigger, failing, id=f"{lc.name}-{state}-{trigger}-{label}"
                        )
                    )
    return params


@pytest.mark.parametrize(("machine", "state", "trigger", "failing"), cases())
def test_bound_machine_fires_as_transitions_does(
    machine: SharedMachine, state: str, trigger: str, failing: frozenset[str]
) -> None:
    lc = machine.lifecycle
    case = Case(failing)
    applied: list[str] = []
    result = bound(machine).fire(case, state, trigger, lambda c, o: applied.append(o.dest))
    expected = oracle(lc, state, trigger, failing)
    if expected is None:
        assert isinstance(result, Refused)
        assert case.log == []
        assert applied == []
        assert (result.lifecycle, result.state, result.trigger) == (lc.name, state, trigger)
        if result.guard is None:
            assert not machine.can(state, trigger)
            declared = lc.refusal(state, trigger)
            assert result.verdict is declared.verdict
        else:
            assert result.guard in failing
            assert result.reason == f"no:{result.guard}"
            assert result.verdict is lc.guards[result.guard].verdict
    else:
        dest, log = expected
        assert isinstance(result, Option)
        assert applied == [dest]
        assert result.dest == dest
        assert case.log == log
        before = len(result.transition.before)
        assert log[:before] == list(result.transition.before)


def test_every_shipped_guard_reason_and_refusal_is_declared() -> None:
    for machine in MACHINES:
        lc = machine.lifecycle
        for guard in lc.guards.values():
            assert guard.doc, guard.name
            assert guard.verdict is Verdict.HOLD or guard.reasons, guard.name
        for effect in lc.effects.values():
            assert effect.doc, effect.name


def test_machines_never_hold_models() -> None:
    for machine in MACHINES:
        assert machine.transitions_machine.models == []
        for _ in range(50):
            bound(machine).fire(
                Case(frozenset()), machine.lifecycle.initial, machine.lifecycle.triggers[0], lambda c, o: None
            )
        assert machine.transitions_machine.models == []


def test_bind_requires_exactly_the_declared_names() -> None:
    lc = PHASE_MACHINE.lifecycle
    guards = {name: (lambda case: None) for name in lc.guards}
    effects = {name: (lambda case: None) for name in lc.effects}
    missing = dict(guards)
    missing.pop("items_sent")
    with pytest.raises(DefinitionError, match="no implementation for guard 'items_sent'"):
        PHASE_MACHINE.bind(guards=missing, effects=effects)
    with pytest.raises(DefinitionError, match="effect 'nope' is implemented but not declared"):
        PHASE_MACHINE.bind(guards=guards, effects={**effects, "nope": lambda case: None})


def test_refusal_reasons_name_the_trigger_and_state() -> None:
    machine = bound(BATCH_MACHINE)
    refused = machine.select(Case(frozenset()), "cancelled", "items_ready")
    assert refused == Refused(
        "batch", "cancelled", "items_ready", Verdict.IGNORE, "unexpected:items_ready in cancelled"
    )
    # A profile's names word the reason; the refusal still names the engine's trigger and state.
    names = StateNames({"items_ready": "essays_ready", "cancelled": "called_off"})
    shown = machine.select(Case(frozenset()), "cancelled", "items_ready", names)
    assert shown == Refused(
        "batch", "cancelled", "items_ready", Verdict.IGNORE, "unexpected:essays_ready in called_off"
    )
    # Cached per names: the engine's wording is not overwritten by the profile's, nor back.
    again = machine.select(Case(frozenset()), "cancelled", "items_ready")
    assert again == refused
    rejected = bound(BATCH_MACHINE).select(Case(frozenset()), "archived", "cancel")
    assert isinstance(rejected, Refused)
    assert rejected.verdict is Verdict.REJECT
    error = rejected.error(batch_id="b-1")
    assert isinstance(error, IllegalTransitionError)
    assert (error.lifecycle, error.state, error.trigger, error.batch_id) == (
        "batch",
        "archived",
        "cancel",
        "b-1",
    )


def test_contract_phase_moves() -> None:
    m = PHASE_MACHINE
    assert not m.can("pending_dependencies", "succeed")
    with pytest.raises(IllegalTransitionError):
        m.next_state("pending_dependencies", "succeed")
    assert m.next_state("dispatch_initiated", "cancel") == "cancelled"
    with pytest.raises(IllegalTransitionError):  # guarded: only a bound machine fires it
        m.next_state("dispatch_initiated", "succeed")
    for terminal in PHASE_TERMINAL:
        assert m.allowed_triggers(terminal) == ()
    # No input enters in_progress: nothing is declared from it.
    assert m.allowed_triggers("in_progress") == ()
    assert [t.dest for t in m.alternatives("dispatch_initiated", "expire")] == [
        "dispatch_initiated",
        "failed",
    ]


def test_contract_batch_moves() -> None:
    m = BATCH_MACHINE
    assert m.next_state("processing_pipelines", "finish_run") == "ready_for_pipeline_execution"
    assert m.allowed_triggers(ABSENT) == ("register",)
    assert not m.can("processing_pipelines", "archive")
    assert not m.can("processing_pipelines", "start_run")
    for final in ("failed_critically", "cancelled", "archived"):
        assert m.allowed_triggers(final) == ()
    # Values that are not lifecycle states (a wire's legacy statuses): nothing moves from them.
    assert m.allowed_triggers("completed_with_failures") == ()
    assert not m.can("completed_with_failures", "cancel")


def test_contract_run_moves() -> None:
    assert RUN_MACHINE.allowed_triggers(ABSENT) == ("accept", "record")
    assert RUN_MACHINE.allowed_triggers("active") == ("finish", "fail", "cancel")
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
    lc = define_lifecycle(
        "door",
        states=("closed", "open", "gone"),
        initial="closed",
        final=("gone",),
        guards=(Guard("unlocked", Verdict.IGNORE, "locked", "the door is not locked"),),
        effects=(Effect("creak", "the hinges creak"),),
        transitions=(
            Transition("open", "closed", "open", guards="unlocked", after="creak"),
            Transition("close", "open", "closed"),
            Transition("remove", ("open", "closed"), "gone"),
        ),
    )
    m = SharedMachine(lc)
    creaks: list[str] = []
    door = m.bind(
        guards={"unlocked": lambda ctx: None if ctx["unlocked"] else "locked"},
        effects={"creak": lambda ctx: creaks.append("creak")},
    )
    state = "closed"

    def move(ctx: dict[str, bool], option: Option[dict[str, bool]]) -> None:
        nonlocal state
        state = option.dest

    refused = door.fire({"unlocked": False}, state, "open", move)
    assert isinstance(refused, Refused)
    assert (refused.verdict, refused.reason) == (Verdict.IGNORE, "locked")
    assert state == "closed"
    assert creaks == []
    door.fire({"unlocked": True}, state, "open", move)
    assert state == "open"
    assert creaks == ["creak"]
    door.fire({"unlocked": True}, state, "remove", move)
    assert state == "gone"
    assert m.allowed_triggers("closed") == ("open", "remove")
    assert "door" in repr(m)
    assert "door" in repr(door)


@pytest.mark.parametrize("machine", MACHINES, ids=lambda m: m.lifecycle.name)
def test_bound_options_carry_what_applying_a_move_needs(machine: SharedMachine) -> None:
    """Each bound alternative knows, once and for all, the state it leaves, its trigger,
    whether it creates the entity and its destination as the binder's status value."""
    lc = machine.lifecycle
    plain = bound(machine)
    converted = machine.bind(
        guards={name: (lambda case: None) for name in lc.guards},
        effects={name: (lambda case: None) for name in lc.effects},
        status=lambda dest: ("status", dest),
    )
    for state in (ABSENT, *lc.states):
        for trigger in machine.allowed_triggers(state):
            failing: frozenset[str] = frozenset()
            chosen = plain.select(Case(failing), state, trigger)
            assert isinstance(chosen, Option)
            assert (chosen.source, chosen.trigger, chosen.status) == (state, trigger, chosen.dest)
            assert chosen.creates is chosen.transition.creates is (state == ABSENT)
            other = converted.select(Case(failing), state, trigger)
            assert isinstance(other, Option)
            assert other.status == ("status", other.dest)
