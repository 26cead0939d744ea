"""Lifecycles declared as data: the batch, run and phase state machines.

A :class:`Lifecycle` is an immutable value: its states, its initial state, its final
states and its transitions (a trigger moves a set of source states to one destination).
:func:`define_lifecycle` builds one and checks it, raising
:class:`~pipeline_state.errors.DefinitionError` when it is malformed, so a broken
definition fails at import time rather than while handling events.

This module only describes the machines; :mod:`pipeline_state.machine` executes them
and :mod:`pipeline_state.diagrams` draws them. State names are the wire values of the
status enums below, stored as plain ``str``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from enum import StrEnum
from types import MappingProxyType

import attrs

from pipeline_state.errors import DefinitionError

__all__ = [
    "BATCH_LIFECYCLE",
    "LIFECYCLES",
    "PHASE_ACTIVE",
    "PHASE_DONE",
    "PHASE_LIFECYCLE",
    "PHASE_TERMINAL",
    "RUN_LIFECYCLE",
    "BatchStatus",
    "Lifecycle",
    "PhaseStatus",
    "PipelineExecutionStatus",
    "RunStatus",
    "Transition",
    "define_lifecycle",
]


class BatchStatus(StrEnum):
    """Status of a batch (wire values).

    The first eight members are the states of :data:`BATCH_LIFECYCLE`; the last five are
    legacy values that other services may still send and that must parse.
    """

    AWAITING_CONTENT_VALIDATION = "awaiting_content_validation"
    AWAITING_STUDENT_VALIDATION = "awaiting_student_validation"
    STUDENT_VALIDATION_COMPLETED = "student_validation_completed"
    READY_FOR_PIPELINE_EXECUTION = "ready_for_pipeline_execution"
    PROCESSING_PIPELINES = "processing_pipelines"
    FAILED_CRITICALLY = "failed_critically"
    CANCELLED = "cancelled"
    ARCHIVED = "archived"
    # Legacy values: parse, but no lifecycle state uses them.
    CONTENT_INGESTION_FAILED = "content_ingestion_failed"
    AWAITING_PIPELINE_CONFIGURATION = "awaiting_pipeline_configuration"
    VALIDATION_TIMEOUT_PROCESSED = "validation_timeout_processed"
    COMPLETED_SUCCESSFULLY = "completed_successfully"
    COMPLETED_WITH_FAILURES = "completed_with_failures"


class RunStatus(StrEnum):
    """Status of one pipeline run (wire values)."""

    ACTIVE = "active"
    COMPLETED_SUCCESSFULLY = "completed_successfully"
    COMPLETED_WITH_FAILURES = "completed_with_failures"
    FAILED_CRITICALLY = "failed_critically"
    CANCELLED = "cancelled"


class PhaseStatus(StrEnum):
    """Execution status of one phase (pipeline step) within a run (wire values)."""

    REQUESTED_BY_USER = "requested_by_user"
    PENDING_DEPENDENCIES = "pending_dependencies"
    DISPATCH_INITIATED = "dispatch_initiated"
    IN_PROGRESS = "in_progress"
    COMPLETED_SUCCESSFULLY = "completed_successfully"
    COMPLETED_WITH_PARTIAL_SUCCESS = "completed_with_partial_success"
    FAILED = "failed"
    SKIPPED_DUE_TO_DEPENDENCY_FAILURE = "skipped_due_to_dependency_failure"
    SKIPPED_BY_USER_CONFIG = "skipped_by_user_config"
    CANCELLED = "cancelled"


PipelineExecutionStatus = PhaseStatus
"""The HuleEdu name of :class:`PhaseStatus`."""

PHASE_TERMINAL: frozenset[PhaseStatus] = frozenset(
    {
        PhaseStatus.COMPLETED_SUCCESSFULLY,
        PhaseStatus.COMPLETED_WITH_PARTIAL_SUCCESS,
        PhaseStatus.FAILED,
        PhaseStatus.SKIPPED_DUE_TO_DEPENDENCY_FAILURE,
        PhaseStatus.SKIPPED_BY_USER_CONFIG,
        PhaseStatus.CANCELLED,
    }
)
"""Phase statuses that never change again."""

PHASE_ACTIVE: frozenset[PhaseStatus] = frozenset({PhaseStatus.DISPATCH_INITIATED, PhaseStatus.IN_PROGRESS})
"""Phase statuses in which an outcome is expected from a worker service."""

PHASE_DONE: frozenset[PhaseStatus] = frozenset(
    {PhaseStatus.COMPLETED_SUCCESSFULLY, PhaseStatus.COMPLETED_WITH_PARTIAL_SUCCESS}
)
"""Phase statuses whose outputs can be reused (a later run prunes such a step)."""


def _name(value: str) -> str:
    """Return ``value`` as a plain ``str`` (a StrEnum member becomes its value)."""
    return str(value)


def _names(value: str | Iterable[str]) -> tuple[str, ...]:
    """Accept one state name or several; return them as a tuple of plain strings."""
    if isinstance(value, str):
        return (_name(value),)
    return tuple(_name(item) for item in value)


@attrs.frozen
class Transition:
    """A trigger that moves any of ``sources`` to ``dest``.

    ``sources`` accepts one name or an iterable of names; enum members are stored as
    their plain string values.
    """

    trigger: str = attrs.field(converter=_name)
    sources: tuple[str, ...] = attrs.field(converter=_names)
    dest: str = attrs.field(converter=_name)


@attrs.frozen
class Lifecycle:
    """A checked state machine definition. Build it with :func:`define_lifecycle`."""

    name: str
    states: tuple[str, ...]
    initial: str
    final: frozenset[str]
    transitions: tuple[Transition, ...]

    @property
    def triggers(self) -> tuple[str, ...]:
        """Every trigger once, in declaration order."""
        return tuple(dict.fromkeys(t.trigger for t in self.transitions))

    def moves_from(self, state: str) -> tuple[Transition, ...]:
        """The transitions that may fire from ``state``, in declaration order."""
        return tuple(t for t in self.transitions if state in t.sources)

    def is_final(self, state: str) -> bool:
        """Whether ``state`` is a final (terminal) state."""
        return state in self.final


# Wildcards that ``transitions`` interprets in sources/destinations; never valid names.
_RESERVED_STATE_NAMES = frozenset({"*", "="})
# The attribute that holds a model's state in the shared machines; it cannot be a trigger.
_RESERVED_TRIGGER_NAMES = frozenset({"state"})


def define_lifecycle(
    name: str,
    *,
    states: Iterable[str],
    initial: str,
    final: Iterable[str],
    transitions: Iterable[Transition],
) -> Lifecycle:
    """Build a :class:`Lifecycle` and check that it is well formed.

    Raises:
        DefinitionError: with ``definition=name`` and a ``problem`` naming the offending
            state or trigger, when: no states are declared; a state is declared twice or
            has a reserved name; the initial state is missing or undeclared; a final
            state is undeclared; a transition has no trigger or no source, or refers to an
            undeclared state; one trigger from one source leads to two different
            destinations; a final state has an outgoing transition; a non-final state has
            no outgoing transition (dead end); a state is unreachable from the initial
            state.
    """
    state_list = [_name(s) for s in states]
    final_list = [_name(s) for s in final]
    moves = tuple(transitions)

    def fail(problem: str) -> DefinitionError:
        return DefinitionError(name, problem)

    if not state_list:
        raise fail("no states declared")
    seen: set[str] = set()
    for state in state_list:
        if not state or state in _RESERVED_STATE_NAMES:
            raise fail(f"invalid state name {state!r}")
        if state in seen:
            raise fail(f"duplicate state {state!r}")
        seen.add(state)
    declared = frozenset(state_list)

    if not initial:
        raise fail("no initial state given")
    initial = _name(initial)
    if initial not in declared:
        raise fail(f"initial state {initial!r} is not a declared state")
    for state in final_list:
        if state not in declared:
            raise fail(f"final state {state!r} is not a declared state")
    final_set = frozenset(final_list)

    targets: dict[tuple[str, str], str] = {}
    for move in moves:
        if not move.trigger:
            raise fail("a transition has an empty trigger name")
        if move.trigger in _RESERVED_TRIGGER_NAMES:
            raise fail(f"trigger name {move.trigger!r} is reserved")
        if not move.sources:
            raise fail(f"trigger {move.trigger!r} has no source state")
        if move.dest not in declared:
            raise fail(f"trigger {move.trigger!r}: destination {move.dest!r} is not a declared state")
        for source in move.sources:
            if source not in declared:
                raise fail(f"trigger {move.trigger!r}: source {source!r} is not a declared state")
            previous = targets.setdefault((source, move.trigger), move.dest)
            if previous != move.dest:
                raise fail(
                    f"trigger {move.trigger!r} from state {source!r} leads to both "
                    f"{previous!r} and {move.dest!r}"
                )

    outgoing: dict[str, list[str]] = {state: [] for state in state_list}
    for source, trigger in targets:
        outgoing[source].append(trigger)
    for state in state_list:
        if state in final_set and outgoing[state]:
            raise fail(f"final state {state!r} has an outgoing transition {outgoing[state][0]!r}")
        if state not in final_set and not outgoing[state]:
            raise fail(f"state {state!r} is not final and has no outgoing transition (dead end)")

    reached = {initial}
    queue = deque([initial])
    while queue:
        current = queue.popleft()
        for trigger in outgoing[current]:
            dest = targets[(current, trigger)]
            if dest not in reached:
                reached.add(dest)
                queue.append(dest)
    for state in state_list:
        if state not in reached:
            raise fail(f"state {state!r} is unreachable from the initial state {initial!r}")

    return Lifecycle(
        name=name,
        states=tuple(state_list),
        initial=initial,
        final=final_set,
        transitions=moves,
    )


_B = BatchStatus
_BATCH_STATES = (
    _B.AWAITING_CONTENT_VALIDATION,
    _B.AWAITING_STUDENT_VALIDATION,
    _B.STUDENT_VALIDATION_COMPLETED,
    _B.READY_FOR_PIPELINE_EXECUTION,
    _B.PROCESSING_PIPELINES,
    _B.FAILED_CRITICALLY,
    _B.CANCELLED,
    _B.ARCHIVED,
)
_BATCH_FINAL = (_B.FAILED_CRITICALLY, _B.CANCELLED, _B.ARCHIVED)
_BATCH_OPEN = tuple(s for s in _BATCH_STATES if s not in _BATCH_FINAL)

BATCH_LIFECYCLE: Lifecycle = define_lifecycle(
    "batch",
    states=_BATCH_STATES,
    initial=_B.AWAITING_CONTENT_VALIDATION,
    final=_BATCH_FINAL,
    transitions=(
        Transition("provision_guest", _B.AWAITING_CONTENT_VALIDATION, _B.READY_FOR_PIPELINE_EXECUTION),
        Transition("provision_regular", _B.AWAITING_CONTENT_VALIDATION, _B.AWAITING_STUDENT_VALIDATION),
        Transition("confirm_associations", _B.AWAITING_STUDENT_VALIDATION, _B.STUDENT_VALIDATION_COMPLETED),
        Transition("essays_ready", _B.STUDENT_VALIDATION_COMPLETED, _B.READY_FOR_PIPELINE_EXECUTION),
        Transition("start_run", _B.READY_FOR_PIPELINE_EXECUTION, _B.PROCESSING_PIPELINES),
        Transition("finish_run", _B.PROCESSING_PIPELINES, _B.READY_FOR_PIPELINE_EXECUTION),
        Transition("fail_critically", _BATCH_OPEN, _B.FAILED_CRITICALLY),
        Transition("cancel", _BATCH_OPEN, _B.CANCELLED),
        Transition("archive", _B.READY_FOR_PIPELINE_EXECUTION, _B.ARCHIVED),
    ),
)
"""Lifecycle of a batch: content validation, student validation, then runs until it ends."""

_R = RunStatus
RUN_LIFECYCLE: Lifecycle = define_lifecycle(
    "run",
    states=tuple(RunStatus),
    initial=_R.ACTIVE,
    final=(s for s in RunStatus if s is not _R.ACTIVE),
    transitions=(
        Transition("succeed", _R.ACTIVE, _R.COMPLETED_SUCCESSFULLY),
        Transition("complete_with_failures", _R.ACTIVE, _R.COMPLETED_WITH_FAILURES),
        Transition("fail", _R.ACTIVE, _R.FAILED_CRITICALLY),
        Transition("cancel", _R.ACTIVE, _R.CANCELLED),
    ),
)
"""Lifecycle of a run: active until it ends in one of four final statuses."""

_P = PhaseStatus
_PHASE_RUNNING = (_P.DISPATCH_INITIATED, _P.IN_PROGRESS)
PHASE_LIFECYCLE: Lifecycle = define_lifecycle(
    "phase",
    states=tuple(PhaseStatus),
    initial=_P.REQUESTED_BY_USER,
    final=PHASE_TERMINAL,
    transitions=(
        Transition("plan", _P.REQUESTED_BY_USER, _P.PENDING_DEPENDENCIES),
        Transition("skip_by_config", _P.REQUESTED_BY_USER, _P.SKIPPED_BY_USER_CONFIG),
        Transition("dispatch", _P.PENDING_DEPENDENCIES, _P.DISPATCH_INITIATED),
        Transition("start", _P.DISPATCH_INITIATED, _P.IN_PROGRESS),
        Transition("succeed", _PHASE_RUNNING, _P.COMPLETED_SUCCESSFULLY),
        Transition("partially_succeed", _PHASE_RUNNING, _P.COMPLETED_WITH_PARTIAL_SUCCESS),
        Transition("fail", _PHASE_RUNNING, _P.FAILED),
        Transition("skip_dependency_failed", _P.PENDING_DEPENDENCIES, _P.SKIPPED_DUE_TO_DEPENDENCY_FAILURE),
        # The deadline passed without an outcome: the command is sent again (same event id)
        # and the phase stays where it is, with a fresh deadline.
        Transition("resend", _P.DISPATCH_INITIATED, _P.DISPATCH_INITIATED),
        Transition("resend", _P.IN_PROGRESS, _P.IN_PROGRESS),
        Transition(
            "cancel",
            (_P.REQUESTED_BY_USER, _P.PENDING_DEPENDENCIES, _P.DISPATCH_INITIATED, _P.IN_PROGRESS),
            _P.CANCELLED,
        ),
    ),
)
"""Lifecycle of one phase of a run: planned, dispatched (its command re-sent while no
outcome comes, up to the profile's ``max_resends``), then one terminal outcome."""

LIFECYCLES: Mapping[str, Lifecycle] = MappingProxyType(
    {lc.name: lc for lc in (BATCH_LIFECYCLE, RUN_LIFECYCLE, PHASE_LIFECYCLE)}
)
"""The shipped lifecycles by name."""
