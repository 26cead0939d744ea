"""Lifecycles declared as data: the batch, run and phase state machines.

A :class:`Lifecycle` is an immutable value: its states, its initial state, its final
states and its transitions (a trigger moves a set of source states to one destination).
:func:`define_lifecycle` builds one and checks it, raising
:class:`~pipeline_state.errors.DefinitionError` when it is malformed, so a broken
definition fails at import time rather than while handling events.

This module only describes the machines; :mod:`pipeline_state._machine` executes them
and :mod:`pipeline_state._diagrams` draws them. State names are the wire values of the
status enums below, stored as plain ``str``.
"""

from __future__ import annotations

import operator
from collections import deque
from collections.abc import Iterable, Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Final, TypeVar

import attrs

from pipeline_state.errors import DefinitionError

__all__ = [
    "ABSENT",
    "BATCH_LIFECYCLE",
    "ITEMS_READY",
    "LIFECYCLES",
    "PHASE_ACTIVE",
    "PHASE_DONE",
    "PHASE_LIFECYCLE",
    "PHASE_SKIPPED",
    "PHASE_TERMINAL",
    "RUN_LIFECYCLE",
    "BatchStatus",
    "Effect",
    "Guard",
    "Lifecycle",
    "PhaseStatus",
    "PipelineExecutionStatus",
    "Refusal",
    "Refusals",
    "RunStatus",
    "Transition",
    "Verdict",
    "define_lifecycle",
]


class _Status(StrEnum):
    """A status enum whose ``value`` is read by a C-level getter.

    ``Enum.value`` is a descriptor written in Python: every read costs a Python call, and
    decisions, views and stores read statuses all the time. The value is the member's
    stored ``_value_``, as ``Enum.value`` returns it (set on the class once it is built:
    in the class body, the enum machinery would take it for a member).
    """


setattr(_Status, "value", property(operator.attrgetter("_value_")))  # noqa: B010


class BatchStatus(_Status):
    """Status of a batch: the states of :data:`BATCH_LIFECYCLE`.

    The two group-validation states (a batch waits for its items to be matched to the
    members of its group) carry the engine's names; a profile whose wire knew them by
    other names gives those in :attr:`~pipeline_state._profile.Profile.state_names`. Values
    a profile's wire carries beyond these (statuses of older services) belong to the
    profile's own wire models, not to the engine.
    """

    AWAITING_CONTENT_VALIDATION = "awaiting_content_validation"
    AWAITING_GROUP_VALIDATION = "awaiting_group_validation"
    GROUP_VALIDATION_COMPLETED = "group_validation_completed"
    READY_FOR_PIPELINE_EXECUTION = "ready_for_pipeline_execution"
    PROCESSING_PIPELINES = "processing_pipelines"
    FAILED_CRITICALLY = "failed_critically"
    CANCELLED = "cancelled"
    ARCHIVED = "archived"


class RunStatus(_Status):
    """Status of one pipeline run (wire values)."""

    ACTIVE = "active"
    COMPLETED_SUCCESSFULLY = "completed_successfully"
    COMPLETED_WITH_FAILURES = "completed_with_failures"
    FAILED_CRITICALLY = "failed_critically"
    CANCELLED = "cancelled"


class PhaseStatus(_Status):
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
"""The wire contract's name of :class:`PhaseStatus`."""

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

PHASE_SKIPPED: frozenset[PhaseStatus] = frozenset(
    {PhaseStatus.SKIPPED_DUE_TO_DEPENDENCY_FAILURE, PhaseStatus.SKIPPED_BY_USER_CONFIG}
)
"""Phase statuses of a step that did not run."""


ABSENT: Final = ""
"""The pseudo-state of an entity that does not exist yet: the source of a creation
transition (a batch's ``register``, a run's ``accept``). Never stored, never a state."""


class Verdict(StrEnum):
    """What the engine answers when a guard is false or a trigger is not allowed."""

    IGNORE = "ignore"
    """Nothing changes; the decision says why (``Decision.ignored``): normal under
    at-least-once delivery."""
    DENY = "deny"
    """A request is refused: denial events are emitted and nothing else changes."""
    REJECT = "reject"
    """The input can never be right here: a typed error is raised and nothing changes."""
    HOLD = "hold"
    """Not now: an internal move waits for a later decision; nothing is reported."""


def _name(value: str) -> str:
    """Return ``value`` as a plain ``str`` (a StrEnum member becomes its value)."""
    return str(value)


def _names(value: str | Iterable[str]) -> tuple[str, ...]:
    """Accept one name or several; return them as a tuple of plain strings."""
    if isinstance(value, str):
        return (_name(value),)
    return tuple(_name(item) for item in value)


@attrs.frozen
class Guard:
    """A named condition a transition requires.

    ``reasons`` are the reasons the engine gives when the condition is false, with
    ``verdict`` saying what happens then; ``open_reasons`` marks a guard whose reasons come
    from pluggable code (a profile's admission guards) and are only examples here.
    """

    name: str
    verdict: Verdict
    reasons: tuple[str, ...] = attrs.field(converter=_names)
    doc: str = ""
    open_reasons: bool = False


@attrs.frozen
class Effect:
    """A named action a transition performs (emit, dispatch, archive, notify...)."""

    name: str
    doc: str = ""


@attrs.frozen
class Refusal:
    """What a trigger does in a state where the lifecycle does not allow it.

    ``reason`` and ``detail`` (the human-readable part of a denial) may name ``{trigger}``
    and ``{state}``. A :data:`Verdict.REJECT` refusal raises
    :class:`~pipeline_state.errors.IllegalTransitionError`.
    """

    verdict: Verdict
    reason: str = ""
    detail: str = ""


_REJECT = Refusal(Verdict.REJECT, "illegal_transition")


def _frozen_map(mapping: Mapping[str, Refusal]) -> Mapping[str, Refusal]:
    return MappingProxyType({_name(k): v for k, v in mapping.items()})


@attrs.frozen
class Refusals:
    """A trigger's refusals: one per state (``ABSENT`` included) and a default."""

    default: Refusal = _REJECT
    by_state: Mapping[str, Refusal] = attrs.field(factory=dict, converter=_frozen_map)

    def for_state(self, state: str) -> Refusal:
        return self.by_state.get(state, self.default)


@attrs.frozen
class Transition:
    """A trigger that moves any of ``sources`` to ``dest`` when every guard holds.

    ``before`` effects run before the move is made, ``after`` effects once it is made (the
    order ``transitions`` gives its callbacks). Several transitions may share a trigger and
    a source when all but the last are guarded: the first whose guards hold is taken.
    ``sources`` accepts one name or several; enum members are stored as plain strings.
    """

    trigger: str = attrs.field(converter=_name)
    sources: tuple[str, ...] = attrs.field(converter=_names)
    dest: str = attrs.field(converter=_name)
    guards: tuple[str, ...] = attrs.field(default=(), converter=_names)
    before: tuple[str, ...] = attrs.field(default=(), converter=_names)
    after: tuple[str, ...] = attrs.field(default=(), converter=_names)
    doc: str = ""

    @property
    def effects(self) -> tuple[str, ...]:
        """Every effect, ``before`` then ``after``."""
        return self.before + self.after

    @property
    def creates(self) -> bool:
        """Whether this transition brings the entity into existence (its source is ``ABSENT``)."""
        return self.sources == (ABSENT,)


@attrs.frozen
class Lifecycle:
    """A checked state machine definition. Build it with :func:`define_lifecycle`."""

    name: str
    states: tuple[str, ...]
    initial: str
    final: frozenset[str]
    transitions: tuple[Transition, ...]
    guards: Mapping[str, Guard] = attrs.field(factory=lambda: MappingProxyType({}))
    effects: Mapping[str, Effect] = attrs.field(factory=lambda: MappingProxyType({}))
    refusals: Mapping[str, Refusals] = attrs.field(factory=lambda: MappingProxyType({}))
    doc: str = ""

    @property
    def triggers(self) -> tuple[str, ...]:
        """Every trigger once, in declaration order."""
        return tuple(dict.fromkeys(t.trigger for t in self.transitions))

    def moves_from(self, state: str) -> tuple[Transition, ...]:
        """The transitions that may fire from ``state``, in declaration order."""
        return tuple(t for t in self.transitions if state in t.sources)

    def alternatives(self, state: str, trigger: str) -> tuple[Transition, ...]:
        """The transitions ``trigger`` may take from ``state``, in the order they are tried."""
        return tuple(t for t in self.transitions if t.trigger == trigger and state in t.sources)

    def refusal(self, state: str, trigger: str) -> Refusal:
        """What ``trigger`` does in ``state`` when no transition allows it there."""
        declared = self.refusals.get(trigger)
        return _REJECT if declared is None else declared.for_state(state)

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
    guards: Iterable[Guard] = (),
    effects: Iterable[Effect] = (),
    refusals: Mapping[str, Refusals] | None = None,
    doc: str = "",
) -> Lifecycle:
    """Build a :class:`Lifecycle` and check that it is well formed.

    Raises:
        DefinitionError: with ``definition=name`` and a ``problem`` naming the offending
            state, trigger, guard or effect, when: no states are declared; a state is
            declared twice or has a reserved name; the initial state is missing or
            undeclared; a final state is undeclared; a transition has no trigger or no
            source, or refers to an undeclared state; a creation transition (source
            :data:`ABSENT`) has another source too; one trigger from one source leads to
            two destinations unless every alternative but the last is guarded; a
            transition names an undeclared guard or effect, or a guard or effect is
            declared and never used; a refusal names an undeclared trigger or state, or a
            state the trigger is allowed from; a final state has an outgoing transition; a
            non-final state has no outgoing transition (dead end); a state is unreachable
            from the initial state or a creation transition.
    """
    state_list = [_name(s) for s in states]
    final_list = [_name(s) for s in final]
    moves = tuple(transitions)
    guard_table = _table(name, "guard", guards)
    effect_table = _table(name, "effect", effects)
    refusal_table = dict(refusals or {})

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

    targets = _check_moves(name, moves, declared, guard_table, effect_table)
    _check_refusals(name, refusal_table, moves, declared)

    outgoing: dict[str, list[str]] = {state: [] for state in state_list}
    for source, trigger in targets:
        if source != ABSENT:
            outgoing[source].append(trigger)
    for state in state_list:
        if state in final_set and outgoing[state]:
            raise fail(f"final state {state!r} has an outgoing transition {outgoing[state][0]!r}")
        if state not in final_set and not outgoing[state]:
            raise fail(f"state {state!r} is not final and has no outgoing transition (dead end)")

    roots = [initial, *(t.dest for t in moves if t.creates)]
    reached = set(roots)
    queue = deque(roots)
    while queue:
        current = queue.popleft()
        for move in moves:
            if current in move.sources and move.dest not in reached:
                reached.add(move.dest)
                queue.append(move.dest)
    for state in state_list:
        if state not in reached:
            raise fail(f"state {state!r} is unreachable from the initial state {initial!r}")

    return Lifecycle(
        name=name,
        states=tuple(state_list),
        initial=initial,
        final=final_set,
        transitions=moves,
        guards=MappingProxyType(guard_table),
        effects=MappingProxyType(effect_table),
        refusals=MappingProxyType(refusal_table),
        doc=doc,
    )


_Named = TypeVar("_Named", Guard, Effect)


def _table(lifecycle: str, kind: str, items: Iterable[_Named]) -> dict[str, _Named]:
    table: dict[str, _Named] = {}
    for item in items:
        if not item.name:
            raise DefinitionError(lifecycle, f"a {kind} has an empty name")
        if item.name in table:
            raise DefinitionError(lifecycle, f"duplicate {kind} {item.name!r}")
        table[item.name] = item
    return table


def _check_moves(
    name: str,
    moves: tuple[Transition, ...],
    declared: frozenset[str],
    guards: Mapping[str, Guard],
    effects: Mapping[str, Effect],
) -> dict[tuple[str, str], list[Transition]]:
    """Check each transition; return the alternatives of every ``(source, trigger)``."""

    def fail(problem: str) -> DefinitionError:
        return DefinitionError(name, problem)

    targets: dict[tuple[str, str], list[Transition]] = {}
    used_guards: set[str] = set()
    used_effects: set[str] = set()
    for move in moves:
        if not move.trigger:
            raise fail("a transition has an empty trigger name")
        if move.trigger in _RESERVED_TRIGGER_NAMES:
            raise fail(f"trigger name {move.trigger!r} is reserved")
        if not move.sources:
            raise fail(f"trigger {move.trigger!r} has no source state")
        if move.dest not in declared:
            raise fail(f"trigger {move.trigger!r}: destination {move.dest!r} is not a declared state")
        if ABSENT in move.sources and len(move.sources) > 1:
            raise fail(f"trigger {move.trigger!r}: a creation transition has only the ABSENT source")
        for guard in move.guards:
            if guard not in guards:
                raise fail(f"trigger {move.trigger!r}: guard {guard!r} is not declared")
            used_guards.add(guard)
        for effect in move.effects:
            if effect not in effects:
                raise fail(f"trigger {move.trigger!r}: effect {effect!r} is not declared")
            used_effects.add(effect)
        for source in move.sources:
            if source != ABSENT and source not in declared:
                raise fail(f"trigger {move.trigger!r}: source {source!r} is not a declared state")
            options = targets.setdefault((source, move.trigger), [])
            if move in options:
                continue  # the very same move declared twice is harmless
            if options and not options[-1].guards:
                raise fail(
                    f"trigger {move.trigger!r} from state {source!r} leads to both "
                    f"{options[-1].dest!r} and {move.dest!r} (only a guarded alternative may "
                    "come before another)"
                )
            options.append(move)
    for kind, table, used in (("guard", guards, used_guards), ("effect", effects, used_effects)):
        for unused in table.keys() - used:
            raise fail(f"{kind} {unused!r} is declared but no transition uses it")
    return targets


def _check_refusals(
    name: str, refusals: Mapping[str, Refusals], moves: tuple[Transition, ...], declared: frozenset[str]
) -> None:
    triggers = {t.trigger for t in moves}
    for trigger, refusal in refusals.items():
        if trigger not in triggers:
            raise DefinitionError(name, f"refusal for undeclared trigger {trigger!r}")
        allowed = {s for t in moves if t.trigger == trigger for s in t.sources}
        for state in refusal.by_state:
            if state != ABSENT and state not in declared:
                raise DefinitionError(name, f"refusal of {trigger!r}: {state!r} is not a declared state")
            if state in allowed:
                raise DefinitionError(name, f"refusal of {trigger!r}: {state!r} allows the trigger")


_B = BatchStatus
_BATCH_STATES = (
    _B.AWAITING_CONTENT_VALIDATION,
    _B.AWAITING_GROUP_VALIDATION,
    _B.GROUP_VALIDATION_COMPLETED,
    _B.READY_FOR_PIPELINE_EXECUTION,
    _B.PROCESSING_PIPELINES,
    _B.FAILED_CRITICALLY,
    _B.CANCELLED,
    _B.ARCHIVED,
)
_BATCH_FINAL = (_B.FAILED_CRITICALLY, _B.CANCELLED, _B.ARCHIVED)
_BATCH_OPEN = tuple(s for s in _BATCH_STATES if s not in _BATCH_FINAL)
_UNEXPECTED = Refusals(Refusal(Verdict.IGNORE, "unexpected:{trigger} in {state}"))
_ITEMS_REGISTERED = "items_registered"

ITEMS_READY: Final = "items_ready"
"""The batch trigger of :class:`~pipeline_state._inputs.ItemsReady` (a grouped batch's items
passed validation)."""

BATCH_LIFECYCLE: Lifecycle = define_lifecycle(
    "batch",
    states=_BATCH_STATES,
    initial=_B.AWAITING_CONTENT_VALIDATION,
    final=_BATCH_FINAL,
    guards=(
        Guard(
            "items_within_limit",
            Verdict.REJECT,
            "too_many_items",
            "the registration names no more items than the profile allows",
        ),
        Guard(
            _ITEMS_REGISTERED,
            Verdict.REJECT,
            ("duplicate_items", "too_many_items", "unregistered_items"),
            "the fact names only registered items, each once",
        ),
        Guard(
            "no_active_run",
            Verdict.DENY,
            "pipeline_already_active",
            "the batch holds no active run (only a state stored inconsistently could, when ready)",
        ),
        Guard(
            "fresh_correlation",
            Verdict.DENY,
            "correlation_reused",
            "the request's correlation id names no earlier run of the batch (that run's late "
            "outcomes would be taken for the new run's)",
        ),
        Guard(
            "plan_resolved",
            Verdict.DENY,
            ("unknown_pipeline", "dependencies_not_completed"),
            "the requested pipeline (or retried phase) is defined and its plan resolves",
        ),
        Guard(
            "admitted",
            Verdict.DENY,
            ("prompt_not_attached", "insufficient_credits", "rate_limit_exceeded"),
            "every admission guard of the profile lets the request through, in order",
            open_reasons=True,
        ),
    ),
    effects=(
        Effect("announce_registration", "emit the registration event"),
        Effect("keep_items", "keep the items the fact names"),
        Effect("request_matching", "send the profile's group-matching command"),
        Effect("attach_prompt", "keep the prompt reference the request carries"),
        Effect("accept_run", "create the run (run: accept)"),
        Effect("cancel_active_run", "cancel the active run, if any (run: cancel)"),
        Effect("fail_active_run", "fail the active run, if any (run: fail)"),
    ),
    transitions=(
        Transition(
            "register",
            ABSENT,
            _B.AWAITING_CONTENT_VALIDATION,
            guards="items_within_limit",
            after="announce_registration",
        ),
        Transition(
            "provision_guest",
            _B.AWAITING_CONTENT_VALIDATION,
            _B.READY_FOR_PIPELINE_EXECUTION,
            guards=_ITEMS_REGISTERED,
            before="keep_items",
        ),
        Transition(
            "provision_regular",
            _B.AWAITING_CONTENT_VALIDATION,
            _B.AWAITING_GROUP_VALIDATION,
            guards=_ITEMS_REGISTERED,
            before="keep_items",
            after="request_matching",
        ),
        Transition("confirm_associations", _B.AWAITING_GROUP_VALIDATION, _B.GROUP_VALIDATION_COMPLETED),
        Transition(
            ITEMS_READY,
            _B.GROUP_VALIDATION_COMPLETED,
            _B.READY_FOR_PIPELINE_EXECUTION,
            guards=_ITEMS_REGISTERED,
            before="keep_items",
        ),
        Transition(
            "start_run",
            _B.READY_FOR_PIPELINE_EXECUTION,
            _B.PROCESSING_PIPELINES,
            guards=("no_active_run", "fresh_correlation", "plan_resolved", "admitted"),
            before="attach_prompt",
            after="accept_run",
        ),
        Transition("finish_run", _B.PROCESSING_PIPELINES, _B.READY_FOR_PIPELINE_EXECUTION),
        Transition(
            "cancel_run",
            _B.PROCESSING_PIPELINES,
            _B.READY_FOR_PIPELINE_EXECUTION,
            before="cancel_active_run",
        ),
        Transition(
            "fail_critically",
            _BATCH_OPEN,
            _B.FAILED_CRITICALLY,
            before="fail_active_run",
            doc="critical validation errors (non-critical ones are ignored before any trigger)",
        ),
        Transition("cancel", _BATCH_OPEN, _B.CANCELLED, before="cancel_active_run"),
        Transition("archive", _B.READY_FOR_PIPELINE_EXECUTION, _B.ARCHIVED),
    ),
    refusals={
        "register": Refusals(Refusal(Verdict.IGNORE, "already_registered")),
        "provision_guest": _UNEXPECTED,
        "provision_regular": _UNEXPECTED,
        "confirm_associations": _UNEXPECTED,
        ITEMS_READY: _UNEXPECTED,
        "fail_critically": _UNEXPECTED,
        "start_run": Refusals(
            Refusal(Verdict.DENY, "batch_not_ready", "the batch is {state}"),
            {
                ABSENT: Refusal(Verdict.DENY, "batch_not_found", "no such batch"),
                _B.PROCESSING_PIPELINES: Refusal(
                    Verdict.DENY, "pipeline_already_active", "the batch has an active run"
                ),
            },
        ),
    },
    doc="A batch: content validation, group validation, then runs one at a time until it ends.",
)
"""Lifecycle of a batch: content validation, group validation, then runs until it ends."""

_R = RunStatus
_RUN_ENDED = ("emit_completion", "notify_completion", "archive_run")
RUN_LIFECYCLE: Lifecycle = define_lifecycle(
    "run",
    states=tuple(RunStatus),
    initial=_R.ACTIVE,
    final=(s for s in RunStatus if s is not _R.ACTIVE),
    guards=(
        Guard("all_succeeded", Verdict.HOLD, (), "every phase completed successfully"),
        Guard(
            "final_step_done",
            Verdict.HOLD,
            (),
            "the pipeline's final step completed, with or without failures, or was pruned as done before",
        ),
        Guard(
            "batch_idle",
            Verdict.IGNORE,
            "unexpected:record_phase_completion in {state}",
            "the batch is ready for a pipeline (no run is active)",
        ),
        Guard(
            "dependencies_recorded",
            Verdict.IGNORE,
            "dependencies_not_completed",
            "every dependency of the phase has recorded outputs",
        ),
    ),
    effects=(
        Effect("plan_phases", "create a phase per step to run (phase: plan)"),
        Effect("announce_pruned", "emit a skip event per step already completed"),
        Effect("notify_started", "notify the owner that processing started"),
        Effect(
            "advance",
            "once the input's moves are made: dispatch what is ready, finish the run when no phase is left",
        ),
        Effect("cancel_open_phases", "cancel every phase not yet finished (phase: cancel)"),
        Effect("emit_completion", "emit the completion event, exactly once per run"),
        Effect("notify_completion", "notify the owner of the run's final status"),
        Effect("archive_run", "move the run into the batch's history"),
        Effect("release_batch", "the batch is ready for the next request (batch: finish_run)"),
    ),
    transitions=(
        Transition(
            "accept",
            ABSENT,
            _R.ACTIVE,
            after=("plan_phases", "announce_pruned", "notify_started", "advance"),
        ),
        Transition(
            "record",
            ABSENT,
            _R.COMPLETED_SUCCESSFULLY,
            guards=("batch_idle", "dependencies_recorded"),
            after="archive_run",
            doc="an operator records a phase completed outside the engine",
        ),
        Transition(
            "finish",
            _R.ACTIVE,
            _R.COMPLETED_SUCCESSFULLY,
            guards="all_succeeded",
            after=(*_RUN_ENDED, "release_batch"),
        ),
        Transition(
            "finish",
            _R.ACTIVE,
            _R.COMPLETED_WITH_FAILURES,
            guards="final_step_done",
            after=(*_RUN_ENDED, "release_batch"),
        ),
        Transition("finish", _R.ACTIVE, _R.FAILED_CRITICALLY, after=(*_RUN_ENDED, "release_batch")),
        Transition("fail", _R.ACTIVE, _R.FAILED_CRITICALLY, before="cancel_open_phases", after=_RUN_ENDED),
        Transition("cancel", _R.ACTIVE, _R.CANCELLED, before="cancel_open_phases", after=_RUN_ENDED),
    ),
    doc="A run: active until every phase has finished, then archived with one final status.",
)
"""Lifecycle of a run: accepted (or recorded by an operator), active until it ends in one
of four final statuses and is archived into the batch's history."""

_P = PhaseStatus
_PHASE_STATES = (
    _P.REQUESTED_BY_USER,
    _P.PENDING_DEPENDENCIES,
    _P.DISPATCH_INITIATED,
    _P.COMPLETED_SUCCESSFULLY,
    _P.COMPLETED_WITH_PARTIAL_SUCCESS,
    _P.FAILED,
    _P.SKIPPED_DUE_TO_DEPENDENCY_FAILURE,
    _P.CANCELLED,
)
_PHASE_FINAL = tuple(s for s in _PHASE_STATES if s in PHASE_TERMINAL)
_OUTCOME_GUARDS = ("items_sent",)
_OUTCOME_REFUSALS = Refusals(
    Refusal(Verdict.IGNORE, "duplicate_outcome"),
    {
        ABSENT: Refusal(Verdict.IGNORE, "phase_not_in_run"),
        _P.REQUESTED_BY_USER: Refusal(Verdict.IGNORE, "phase_not_dispatched"),
        _P.PENDING_DEPENDENCIES: Refusal(Verdict.IGNORE, "phase_not_dispatched"),
    },
)
_MARK_REFUSALS = Refusals(Refusal(Verdict.IGNORE, "phase_not_active"))
PHASE_LIFECYCLE: Lifecycle = define_lifecycle(
    "phase",
    states=_PHASE_STATES,
    initial=_P.REQUESTED_BY_USER,
    final=_PHASE_FINAL,
    guards=(
        Guard("inputs_ready", Verdict.HOLD, (), "every dependency has finished in this run or before it"),
        Guard("below_parallel_limit", Verdict.HOLD, (), "fewer phases run than the profile's max_parallel"),
        Guard(
            "has_inputs",
            Verdict.HOLD,
            (),
            "the phase has items to process (a root: the batch's; else its dependencies' outputs)",
        ),
        Guard(
            "lacks_inputs",
            Verdict.HOLD,
            (),
            "the phase has no item to process (skipping it dispatches nothing: no parallel slot needed)",
        ),
        Guard(
            "items_sent",
            Verdict.REJECT,
            ("duplicate_items", "items_not_sent_to_phase", "processed_and_failed"),
            "the outcome names only items sent to the phase, each once, none both processed and failed",
        ),
        Guard("overdue", Verdict.HOLD, (), "the phase's deadline has passed"),
        Guard("resends_left", Verdict.HOLD, (), "the command was re-sent fewer than max_resends times"),
    ),
    effects=(
        Effect("prepare_command", "build the phase's command over its inputs"),
        Effect("prepare_skip", "record why the phase is skipped (no_items_to_process)"),
        Effect("send_command", "emit the command with a deadline, or abort the phase when it is too large"),
        Effect("resend_command", "publish the same command again (same event id), with a fresh deadline"),
        Effect("announce_skip", "emit a skip event for the phase"),
        Effect(
            "skip_dependents",
            "skip the pending phases that depend on this one, transitively (one sweep per failure)",
        ),
        Effect(
            "advance",
            "after the input's moves: dispatch what became ready, finish the run when no phase is left",
        ),
    ),
    transitions=(
        Transition("plan", _P.REQUESTED_BY_USER, _P.PENDING_DEPENDENCIES),
        Transition(
            "dispatch",
            _P.PENDING_DEPENDENCIES,
            _P.DISPATCH_INITIATED,
            guards=("below_parallel_limit", "inputs_ready", "has_inputs"),
            before="prepare_command",
            after="send_command",
        ),
        Transition(
            "dispatch",
            _P.PENDING_DEPENDENCIES,
            _P.SKIPPED_DUE_TO_DEPENDENCY_FAILURE,
            guards=("inputs_ready", "lacks_inputs"),
            before="prepare_skip",
            after=("announce_skip", "skip_dependents"),
            doc="no item to process (its dependencies left none, or the batch has none): skipped "
            "with no_items_to_process, and its dependents with it",
        ),
        Transition(
            "skip_dependency_failed",
            _P.PENDING_DEPENDENCIES,
            _P.SKIPPED_DUE_TO_DEPENDENCY_FAILURE,
            after="announce_skip",
            doc="a dependency failed or was skipped (one sweep covers the dependents' dependents)",
        ),
        Transition(
            "succeed",
            _P.DISPATCH_INITIATED,
            _P.COMPLETED_SUCCESSFULLY,
            guards=_OUTCOME_GUARDS,
            after="advance",
        ),
        Transition(
            "partially_succeed",
            _P.DISPATCH_INITIATED,
            _P.COMPLETED_WITH_PARTIAL_SUCCESS,
            guards=_OUTCOME_GUARDS,
            after="advance",
        ),
        Transition(
            "fail",
            _P.DISPATCH_INITIATED,
            _P.FAILED,
            guards=_OUTCOME_GUARDS,
            after=("skip_dependents", "advance"),
        ),
        Transition(
            "abort",
            _P.DISPATCH_INITIATED,
            _P.FAILED,
            after="skip_dependents",
            doc="the command would exceed max_command_bytes: the phase fails before it is sent",
        ),
        Transition("mark_succeeded", _P.DISPATCH_INITIATED, _P.COMPLETED_SUCCESSFULLY, after="advance"),
        Transition("mark_failed", _P.DISPATCH_INITIATED, _P.FAILED, after=("skip_dependents", "advance")),
        Transition(
            "expire",
            _P.DISPATCH_INITIATED,
            _P.DISPATCH_INITIATED,
            guards=("overdue", "resends_left"),
            after="resend_command",
        ),
        Transition(
            "expire",
            _P.DISPATCH_INITIATED,
            _P.FAILED,
            guards="overdue",
            after=("skip_dependents", "advance"),
        ),
        Transition(
            "cancel",
            (_P.PENDING_DEPENDENCIES, _P.DISPATCH_INITIATED),
            _P.CANCELLED,
        ),
    ),
    refusals={
        "succeed": _OUTCOME_REFUSALS,
        "partially_succeed": _OUTCOME_REFUSALS,
        "fail": _OUTCOME_REFUSALS,
        "mark_succeeded": _MARK_REFUSALS,
        "mark_failed": _MARK_REFUSALS,
    },
    doc=(
        "One phase of a run: planned, dispatched (its command re-sent while no outcome comes, up "
        "to the profile's max_resends), then one terminal outcome. No input of the shipped "
        "profile reports that a worker started a phase, so in_progress and "
        "skipped_by_user_config are wire values only: they parse and count as active or "
        "terminal, but the engine never enters them."
    ),
)
"""Lifecycle of one phase of a run: planned, dispatched (its command re-sent while no
outcome comes, up to the profile's ``max_resends``), then one terminal outcome."""

LIFECYCLES: Mapping[str, Lifecycle] = MappingProxyType(
    {lc.name: lc for lc in (BATCH_LIFECYCLE, RUN_LIFECYCLE, PHASE_LIFECYCLE)}
)
"""The shipped lifecycles by name."""
