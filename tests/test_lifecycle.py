"""Lifecycle definitions: validation rules, the shipped lifecycles and the wire values."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pytest

from pipeline_state import BatchStatus
from pipeline_state._lifecycle import (
    ABSENT,
    BATCH_LIFECYCLE,
    LIFECYCLES,
    PHASE_ACTIVE,
    PHASE_DONE,
    PHASE_LIFECYCLE,
    PHASE_TERMINAL,
    RUN_LIFECYCLE,
    Effect,
    Guard,
    Lifecycle,
    PipelineExecutionStatus,
    Refusal,
    Refusals,
    Transition,
    Verdict,
    define_lifecycle,
)
from pipeline_state._machine import BATCH_MACHINE
from pipeline_state.errors import DefinitionError
from pipeline_state.ports import PhaseStatus, RunStatus
from pipeline_state.profiles.huleedu.events import HuleEduBatchStatus
from pipeline_state.profiles.huleedu.profile import HULEEDU_STATE_NAMES

T = Transition
VALID_STATES = ("a", "b", "c")
VALID_MOVES = (T("go", "a", "b"), T("finish", "b", "c"))


def build(
    *,
    states: Iterable[str] = VALID_STATES,
    initial: str = "a",
    final: Iterable[str] = ("c",),
    transitions: Iterable[Transition] = VALID_MOVES,
) -> Lifecycle:
    return define_lifecycle("toy", states=states, initial=initial, final=final, transitions=transitions)


def test_valid_toy_lifecycle_builds() -> None:
    lc = build()
    assert lc.states == VALID_STATES
    assert lc.initial == "a"
    assert lc.final == frozenset({"c"})
    assert lc.triggers == ("go", "finish")


INVALID = [
    pytest.param({"states": ()}, ["no states"], id="empty-states"),
    pytest.param({"states": ("a", "b", "b", "c")}, ["duplicate state", "'b'"], id="duplicate-state"),
    pytest.param({"states": ("a", "", "b", "c")}, ["invalid state name", "''"], id="empty-state-name"),
    pytest.param({"states": ("a", "*", "b", "c")}, ["invalid state name", "'*'"], id="wildcard-state"),
    pytest.param({"initial": ""}, ["no initial state"], id="initial-missing"),
    pytest.param({"initial": "x"}, ["initial state 'x'", "not a declared state"], id="initial-undeclared"),
    pytest.param({"final": ("c", "z")}, ["final state 'z'", "not a declared state"], id="final-undeclared"),
    pytest.param(
        {"transitions": (*VALID_MOVES, T("jump", "q", "c"))},
        ["trigger 'jump'", "source 'q'", "not a declared state"],
        id="source-undeclared",
    ),
    pytest.param(
        {"transitions": (*VALID_MOVES, T("jump", "a", "q"))},
        ["trigger 'jump'", "destination 'q'", "not a declared state"],
        id="dest-undeclared",
    ),
    pytest.param(
        {"transitions": (*VALID_MOVES, T("jump", (), "c"))},
        ["trigger 'jump'", "no source"],
        id="no-sources",
    ),
    pytest.param(
        {"transitions": (*VALID_MOVES, T("state", "a", "c"))},
        ["trigger name 'state'", "reserved"],
        id="reserved-trigger",
    ),
    pytest.param(
        {"transitions": (*VALID_MOVES, T("go", "a", "c"))},
        ["trigger 'go'", "state 'a'", "'b'", "'c'"],
        id="conflicting-dests",
    ),
    pytest.param(
        {"transitions": (*VALID_MOVES, T("reopen", "c", "a"))},
        ["final state 'c'", "'reopen'"],
        id="final-with-outgoing",
    ),
    pytest.param(
        {"transitions": (T("go", "a", "b"), T("skip", "a", "c"))},
        ["state 'b'", "dead end"],
        id="dead-end",
    ),
    pytest.param(
        {"states": ("a", "b", "c", "d"), "transitions": (*VALID_MOVES, T("leave", "d", "c"))},
        ["state 'd'", "unreachable", "'a'"],
        id="unreachable",
    ),
]


@pytest.mark.parametrize(("changes", "fragments"), INVALID)
def test_invalid_definition_is_rejected_naming_the_culprit(
    changes: dict[str, object], fragments: list[str]
) -> None:
    with pytest.raises(DefinitionError) as info:
        build(**changes)  # type: ignore[arg-type]
    assert info.value.definition == "toy"
    for fragment in fragments:
        assert fragment in info.value.problem
    assert "toy" in str(info.value)


def test_repeating_the_same_move_is_not_a_conflict() -> None:
    lc = build(transitions=(*VALID_MOVES, T("go", "a", "b")))
    assert lc.triggers == ("go", "finish")


def test_unreachable_cycle_is_rejected() -> None:
    # d and e feed each other but nothing leads to them from the initial state.
    with pytest.raises(DefinitionError, match=r"'d'.*unreachable"):
        build(
            states=("a", "b", "c", "d", "e"),
            transitions=(*VALID_MOVES, T("ping", "d", "e"), T("pong", "e", "d")),
        )


def test_transition_accepts_one_source_or_many_and_stores_plain_strings() -> None:
    single = T("plan", PhaseStatus.REQUESTED_BY_USER, PhaseStatus.PENDING_DEPENDENCIES)
    assert single.sources == ("requested_by_user",)
    assert type(single.sources[0]) is str
    assert type(single.dest) is str
    many = T("cancel", [RunStatus.ACTIVE, "other"], RunStatus.CANCELLED)
    assert many.sources == ("active", "other")


def test_lifecycle_helpers() -> None:
    assert PHASE_LIFECYCLE.triggers == (
        "plan",
        "dispatch",
        "skip_dependency_failed",
        "succeed",
        "partially_succeed",
        "fail",
        "abort",
        "mark_succeeded",
        "mark_failed",
        "expire",
        "cancel",
    )
    assert [t.trigger for t in PHASE_LIFECYCLE.moves_from("dispatch_initiated")] == [
        "succeed",
        "partially_succeed",
        "fail",
        "abort",
        "mark_succeeded",
        "mark_failed",
        "expire",
        "expire",
        "cancel",
    ]
    assert [t.dest for t in PHASE_LIFECYCLE.alternatives("dispatch_initiated", "expire")] == [
        "dispatch_initiated",
        "failed",
    ]
    assert PHASE_LIFECYCLE.moves_from("failed") == ()
    assert PHASE_LIFECYCLE.moves_from("no_such_state") == ()
    assert PHASE_LIFECYCLE.is_final("failed")
    assert not PHASE_LIFECYCLE.is_final("dispatch_initiated")


def _same(name: str) -> str:
    return name


def moves(
    lifecycle: Lifecycle, show: Callable[[str], str] = _same
) -> dict[tuple[str, str], str | tuple[str, ...]]:
    """``(trigger, source) -> dest``; guarded alternatives give their dests in order; every
    state and trigger under its name ``show`` gives."""
    table: dict[tuple[str, str], str | tuple[str, ...]] = {}
    for t in lifecycle.transitions:
        for s in t.sources:
            dests = tuple(show(a.dest) for a in lifecycle.alternatives(s, t.trigger))
            table[(show(t.trigger), show(s))] = dests[0] if len(dests) == 1 else dests
    return table


def guards(
    lifecycle: Lifecycle, show: Callable[[str], str] = _same
) -> dict[tuple[str, str], tuple[str, ...]]:
    """``(trigger, dest) -> guards`` of every transition (names as ``show`` gives them)."""
    return {(show(t.trigger), show(t.dest)): t.guards for t in lifecycle.transitions if t.guards}


BATCH_OPEN = (
    "awaiting_content_validation",
    "awaiting_student_validation",
    "student_validation_completed",
    "ready_for_pipeline_execution",
    "processing_pipelines",
)


def test_batch_lifecycle_is_exactly_the_contract() -> None:
    # The contract words the lifecycle as the shipped profile shows it (its state names).
    lc, show = BATCH_LIFECYCLE, HULEEDU_STATE_NAMES.show
    assert lc.name == "batch"
    assert tuple(map(show, lc.states)) == (*BATCH_OPEN, "failed_critically", "cancelled", "archived")
    assert lc.initial == "awaiting_content_validation"
    assert lc.final == {"failed_critically", "cancelled", "archived"}
    expected: dict[tuple[str, str], str | tuple[str, ...]] = {
        ("register", ABSENT): "awaiting_content_validation",
        ("provision_guest", "awaiting_content_validation"): "ready_for_pipeline_execution",
        ("provision_regular", "awaiting_content_validation"): "awaiting_student_validation",
        ("confirm_associations", "awaiting_student_validation"): "student_validation_completed",
        ("essays_ready", "student_validation_completed"): "ready_for_pipeline_execution",
        ("start_run", "ready_for_pipeline_execution"): "processing_pipelines",
        ("finish_run", "processing_pipelines"): "ready_for_pipeline_execution",
        ("cancel_run", "processing_pipelines"): "ready_for_pipeline_execution",
        ("archive", "ready_for_pipeline_execution"): "archived",
    }
    for state in BATCH_OPEN:
        expected[("fail_critically", state)] = "failed_critically"
        expected[("cancel", state)] = "cancelled"
    assert moves(lc, show) == expected
    assert guards(lc, show) == {
        ("register", "awaiting_content_validation"): ("items_within_limit",),
        ("provision_guest", "ready_for_pipeline_execution"): ("items_registered",),
        ("provision_regular", "awaiting_student_validation"): ("items_registered",),
        ("essays_ready", "ready_for_pipeline_execution"): ("items_registered",),
        ("start_run", "processing_pipelines"): (
            "no_active_run",
            "fresh_correlation",
            "plan_resolved",
            "admitted",
        ),
    }
    # The admission order of the contract: unknown batch, active run, not ready.
    assert lc.refusal(ABSENT, "start_run") == Refusal(Verdict.DENY, "batch_not_found", "no such batch")
    assert lc.refusal("processing_pipelines", "start_run") == Refusal(
        Verdict.DENY, "pipeline_already_active", "the batch has an active run"
    )
    not_ready = Refusal(Verdict.DENY, "batch_not_ready", "the batch is {state}")
    assert lc.refusal("cancelled", "start_run") == not_ready
    assert lc.refusal("archived", "cancel").verdict is Verdict.REJECT
    assert lc.guards["plan_resolved"].reasons == ("unknown_pipeline", "dependencies_not_completed")


def test_run_lifecycle_is_exactly_the_contract() -> None:
    lc = RUN_LIFECYCLE
    assert lc.name == "run"
    assert lc.states == tuple(RunStatus)
    assert lc.initial == "active"
    assert lc.final == {"completed_successfully", "completed_with_failures", "failed_critically", "cancelled"}
    assert moves(lc) == {
        ("accept", ABSENT): "active",
        ("record", ABSENT): "completed_successfully",
        ("finish", "active"): ("completed_successfully", "completed_with_failures", "failed_critically"),
        ("fail", "active"): "failed_critically",
        ("cancel", "active"): "cancelled",
    }
    assert guards(lc) == {
        ("record", "completed_successfully"): ("batch_idle", "dependencies_recorded"),
        ("finish", "completed_successfully"): ("all_succeeded",),
        ("finish", "completed_with_failures"): ("final_step_done",),
    }
    # Every way a run ends emits its completion and archives it, exactly once.
    for t in lc.transitions:
        if t.sources == ("active",):
            assert t.after[:3] == ("emit_completion", "notify_completion", "archive_run")


def test_phase_lifecycle_is_exactly_the_contract() -> None:
    lc = PHASE_LIFECYCLE
    assert lc.name == "phase"
    # in_progress and skipped_by_user_config parse, but no input enters them.
    assert lc.states == tuple(s for s in PhaseStatus if s not in {"in_progress", "skipped_by_user_config"})
    assert lc.initial == "requested_by_user"
    assert lc.final == PHASE_TERMINAL - {"skipped_by_user_config"}
    running = "dispatch_initiated"
    assert moves(lc) == {
        ("plan", "requested_by_user"): "pending_dependencies",
        # A phase with no item to process is skipped instead (the guarded alternative).
        ("dispatch", "pending_dependencies"): (running, "skipped_due_to_dependency_failure"),
        ("skip_dependency_failed", "pending_dependencies"): "skipped_due_to_dependency_failure",
        ("succeed", running): "completed_successfully",
        ("partially_succeed", running): "completed_with_partial_success",
        ("fail", running): "failed",
        ("abort", running): "failed",
        ("mark_succeeded", running): "completed_successfully",
        ("mark_failed", running): "failed",
        # Issue 11.4: an overdue phase's command is re-sent (the phase stays) until it times out.
        ("expire", running): (running, "failed"),
        ("cancel", "pending_dependencies"): "cancelled",
        ("cancel", running): "cancelled",
    }
    outcome = ("items_sent",)
    assert guards(lc) == {
        ("dispatch", running): ("below_parallel_limit", "inputs_ready", "has_inputs"),
        ("dispatch", "skipped_due_to_dependency_failure"): ("inputs_ready", "lacks_inputs"),
        ("succeed", "completed_successfully"): outcome,
        ("partially_succeed", "completed_with_partial_success"): outcome,
        ("fail", "failed"): outcome,
        ("expire", running): ("overdue", "resends_left"),
        ("expire", "failed"): ("overdue",),
    }
    assert lc.refusal("failed", "succeed") == Refusal(Verdict.IGNORE, "duplicate_outcome")
    assert lc.refusal("pending_dependencies", "fail") == Refusal(Verdict.IGNORE, "phase_not_dispatched")
    assert lc.refusal(ABSENT, "partially_succeed") == Refusal(Verdict.IGNORE, "phase_not_in_run")


def test_shipped_lifecycles_are_registered_and_revalidate() -> None:
    assert dict(LIFECYCLES) == {"batch": BATCH_LIFECYCLE, "run": RUN_LIFECYCLE, "phase": PHASE_LIFECYCLE}
    for lc in LIFECYCLES.values():
        rebuilt = define_lifecycle(
            lc.name,
            states=lc.states,
            initial=lc.initial,
            final=lc.final,
            transitions=lc.transitions,
            guards=lc.guards.values(),
            effects=lc.effects.values(),
            refusals=lc.refusals,
            doc=lc.doc,
        )
        assert rebuilt == lc
        assert all(type(s) is str for s in lc.states)
        assert lc.doc


G = Guard("ready", Verdict.HOLD, ())
E = Effect("ping")
GUARDED_INVALID = [
    pytest.param(
        {"transitions": (T("go", "a", "b", guards="nope"), T("finish", "b", "c"))},
        ["guard 'nope'", "not declared"],
        id="undeclared-guard",
    ),
    pytest.param(
        {"transitions": (T("go", "a", "b", after="nope"), T("finish", "b", "c"))},
        ["effect 'nope'", "not declared"],
        id="undeclared-effect",
    ),
    pytest.param(
        {"transitions": VALID_MOVES, "effects": (E,)},
        ["effect 'ping'", "no transition uses it"],
        id="unused-effect",
    ),
    pytest.param(
        {
            "transitions": (T("go", "a", "b"), T("go", "a", "c", guards="ready"), T("finish", "b", "c")),
            "guards": (G,),
        },
        ["'go'", "'a'", "guarded alternative"],
        id="unguarded-alternative-first",
    ),
    pytest.param(
        {"transitions": (T("go", ("", "a"), "b"), T("finish", "b", "c"))},
        ["creation transition"],
        id="absent-with-other-sources",
    ),
    pytest.param(
        {"refusals": {"go": Refusals(by_state={"a": Refusal(Verdict.IGNORE, "x")})}},
        ["refusal of 'go'", "'a' allows the trigger"],
        id="refusal-where-allowed",
    ),
    pytest.param(
        {"refusals": {"jump": Refusals()}},
        ["refusal for undeclared trigger 'jump'"],
        id="refusal-unknown-trigger",
    ),
]


@pytest.mark.parametrize(("changes", "fragments"), GUARDED_INVALID)
def test_guards_effects_and_refusals_are_checked(changes: dict[str, object], fragments: list[str]) -> None:
    arguments: dict[str, object] = {
        "states": VALID_STATES,
        "initial": "a",
        "final": ("c",),
        "transitions": VALID_MOVES,
        "guards": (),
        **changes,
    }
    with pytest.raises(DefinitionError) as info:
        define_lifecycle("toy", **arguments)  # type: ignore[arg-type]
    for fragment in fragments:
        assert fragment in info.value.problem


def test_guarded_alternatives_and_creation_build() -> None:
    lc = define_lifecycle(
        "toy",
        states=VALID_STATES,
        initial="a",
        final=("c",),
        guards=(G,),
        effects=(E,),
        transitions=(
            T("make", "", "a", after="ping"),
            T("go", "a", "b", guards="ready"),
            T("go", "a", "c"),
            T("finish", "b", "c"),
        ),
    )
    assert [t.dest for t in lc.alternatives("a", "go")] == ["b", "c"]
    assert lc.alternatives(ABSENT, "make")[0].creates
    assert lc.refusal("c", "go") == Refusal(Verdict.REJECT, "illegal_transition")


def test_batch_status_wire_values() -> None:
    # The contract's values are the shipped profile's wire enum: the engine's states under
    # the profile's names, then five legacy values.
    contract = [
        "awaiting_content_validation",
        "awaiting_student_validation",
        "student_validation_completed",
        "ready_for_pipeline_execution",
        "processing_pipelines",
        "failed_critically",
        "cancelled",
        "archived",
        "content_ingestion_failed",
        "awaiting_pipeline_configuration",
        "validation_timeout_processed",
        "completed_successfully",
        "completed_with_failures",
    ]
    assert [s.value for s in HuleEduBatchStatus] == contract
    assert [HULEEDU_STATE_NAMES.show(s.value) for s in BatchStatus] == contract[:8]
    assert BatchStatus("ready_for_pipeline_execution") is BatchStatus.READY_FOR_PIPELINE_EXECUTION
    assert isinstance(BatchStatus.READY_FOR_PIPELINE_EXECUTION, str)
    # The engine's statuses are exactly its lifecycle's states, valued by their names; the
    # profile renames two of them.
    assert tuple(BatchStatus) == BATCH_LIFECYCLE.states
    for status in BatchStatus:
        assert status.value == status.name.lower()
    renamed = {s for s in BatchStatus if HULEEDU_STATE_NAMES.show(s.value) != s.value}
    assert renamed == {BatchStatus.AWAITING_GROUP_VALIDATION, BatchStatus.GROUP_VALIDATION_COMPLETED}


@pytest.mark.parametrize(
    "legacy",
    [
        "content_ingestion_failed",
        "awaiting_pipeline_configuration",
        "validation_timeout_processed",
        "completed_successfully",
        "completed_with_failures",
    ],
)
def test_legacy_batch_statuses_parse_but_are_not_lifecycle_states(legacy: str) -> None:
    # They are the HuleEdu wire's, not the engine's: they parse there, and no state has them.
    assert HuleEduBatchStatus(legacy).value == legacy
    assert legacy not in BATCH_LIFECYCLE.states
    with pytest.raises(ValueError, match="is not a valid BatchStatus"):
        BatchStatus(legacy)
    assert BATCH_MACHINE.allowed_triggers(legacy) == ()


def test_run_status_wire_values() -> None:
    assert [s.value for s in RunStatus] == [
        "active",
        "completed_successfully",
        "completed_with_failures",
        "failed_critically",
        "cancelled",
    ]


def test_phase_status_wire_values_and_groups() -> None:
    assert PipelineExecutionStatus is PhaseStatus
    assert [s.value for s in PhaseStatus] == [
        "requested_by_user",
        "pending_dependencies",
        "dispatch_initiated",
        "in_progress",
        "completed_successfully",
        "completed_with_partial_success",
        "failed",
        "skipped_due_to_dependency_failure",
        "skipped_by_user_config",
        "cancelled",
    ]
    assert list(PhaseStatus)[4:] == sorted(PHASE_TERMINAL, key=list(PhaseStatus).index)
    assert {"dispatch_initiated", "in_progress"} == PHASE_ACTIVE
    assert {"completed_successfully", "completed_with_partial_success"} == PHASE_DONE
    assert PHASE_DONE <= PHASE_TERMINAL
    assert not PHASE_ACTIVE & PHASE_TERMINAL


@pytest.mark.parametrize("enum", [BatchStatus, RunStatus, PhaseStatus])
def test_status_value_is_the_plain_wire_string(enum: type[BatchStatus | RunStatus | PhaseStatus]) -> None:
    """``value`` reads the stored value directly (not through Enum's Python descriptor) and
    gives exactly what Enum would: the plain ``str``, the member's own lookup key."""
    for member in enum:
        value = member.value
        assert type(value) is str
        assert value == member._value_ == str(member)
        assert enum(value) is member
