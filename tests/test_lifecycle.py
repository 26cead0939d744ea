"""Lifecycle definitions: validation rules, the shipped lifecycles and the wire values."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from pipeline_state.errors import DefinitionError
from pipeline_state.lifecycle import (
    BATCH_LIFECYCLE,
    LIFECYCLES,
    PHASE_ACTIVE,
    PHASE_DONE,
    PHASE_LIFECYCLE,
    PHASE_TERMINAL,
    RUN_LIFECYCLE,
    BatchStatus,
    Lifecycle,
    PhaseStatus,
    PipelineExecutionStatus,
    RunStatus,
    Transition,
    define_lifecycle,
)

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
        "skip_by_config",
        "dispatch",
        "start",
        "succeed",
        "partially_succeed",
        "fail",
        "skip_dependency_failed",
        "resend",
        "cancel",
    )
    assert [t.trigger for t in PHASE_LIFECYCLE.moves_from("in_progress")] == [
        "succeed",
        "partially_succeed",
        "fail",
        "resend",
        "cancel",
    ]
    assert PHASE_LIFECYCLE.moves_from("failed") == ()
    assert PHASE_LIFECYCLE.moves_from("no_such_state") == ()
    assert PHASE_LIFECYCLE.is_final("failed")
    assert not PHASE_LIFECYCLE.is_final("in_progress")


def moves(lifecycle: Lifecycle) -> dict[tuple[str, str], str]:
    return {(t.trigger, s): t.dest for t in lifecycle.transitions for s in t.sources}


BATCH_OPEN = (
    "awaiting_content_validation",
    "awaiting_student_validation",
    "student_validation_completed",
    "ready_for_pipeline_execution",
    "processing_pipelines",
)


def test_batch_lifecycle_is_exactly_the_contract() -> None:
    lc = BATCH_LIFECYCLE
    assert lc.name == "batch"
    assert lc.states == (*BATCH_OPEN, "failed_critically", "cancelled", "archived")
    assert lc.initial == "awaiting_content_validation"
    assert lc.final == {"failed_critically", "cancelled", "archived"}
    expected = {
        ("provision_guest", "awaiting_content_validation"): "ready_for_pipeline_execution",
        ("provision_regular", "awaiting_content_validation"): "awaiting_student_validation",
        ("confirm_associations", "awaiting_student_validation"): "student_validation_completed",
        ("essays_ready", "student_validation_completed"): "ready_for_pipeline_execution",
        ("start_run", "ready_for_pipeline_execution"): "processing_pipelines",
        ("finish_run", "processing_pipelines"): "ready_for_pipeline_execution",
        ("archive", "ready_for_pipeline_execution"): "archived",
    }
    for state in BATCH_OPEN:
        expected[("fail_critically", state)] = "failed_critically"
        expected[("cancel", state)] = "cancelled"
    assert moves(lc) == expected


def test_run_lifecycle_is_exactly_the_contract() -> None:
    lc = RUN_LIFECYCLE
    assert lc.name == "run"
    assert lc.states == tuple(RunStatus)
    assert lc.initial == "active"
    assert lc.final == {"completed_successfully", "completed_with_failures", "failed_critically", "cancelled"}
    assert moves(lc) == {
        ("succeed", "active"): "completed_successfully",
        ("complete_with_failures", "active"): "completed_with_failures",
        ("fail", "active"): "failed_critically",
        ("cancel", "active"): "cancelled",
    }


def test_phase_lifecycle_is_exactly_the_contract() -> None:
    lc = PHASE_LIFECYCLE
    assert lc.name == "phase"
    assert lc.states == tuple(PhaseStatus)
    assert lc.initial == "requested_by_user"
    assert lc.final == PHASE_TERMINAL
    running = ("dispatch_initiated", "in_progress")
    expected = {
        ("plan", "requested_by_user"): "pending_dependencies",
        ("skip_by_config", "requested_by_user"): "skipped_by_user_config",
        ("dispatch", "pending_dependencies"): "dispatch_initiated",
        ("start", "dispatch_initiated"): "in_progress",
        ("skip_dependency_failed", "pending_dependencies"): "skipped_due_to_dependency_failure",
    }
    for state in running:
        expected[("succeed", state)] = "completed_successfully"
        expected[("partially_succeed", state)] = "completed_with_partial_success"
        expected[("fail", state)] = "failed"
        # Issue 11.4: an overdue phase's command is re-sent; the phase stays where it is.
        expected[("resend", state)] = state
    for state in ("requested_by_user", "pending_dependencies", *running):
        expected[("cancel", state)] = "cancelled"
    assert moves(lc) == expected


def test_shipped_lifecycles_are_registered_and_revalidate() -> None:
    assert dict(LIFECYCLES) == {"batch": BATCH_LIFECYCLE, "run": RUN_LIFECYCLE, "phase": PHASE_LIFECYCLE}
    for lc in LIFECYCLES.values():
        rebuilt = define_lifecycle(
            lc.name, states=lc.states, initial=lc.initial, final=lc.final, transitions=lc.transitions
        )
        assert rebuilt == lc
        assert all(type(s) is str for s in lc.states)


def test_batch_status_wire_values() -> None:
    assert [s.value for s in BatchStatus] == [
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
    assert BatchStatus("ready_for_pipeline_execution") is BatchStatus.READY_FOR_PIPELINE_EXECUTION
    assert isinstance(BatchStatus.READY_FOR_PIPELINE_EXECUTION, str)
    for status in BatchStatus:
        assert status.name == status.value.upper()


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
    status = BatchStatus(legacy)
    assert status.value == legacy
    assert legacy not in BATCH_LIFECYCLE.states


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
