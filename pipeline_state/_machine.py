"""Executors for lifecycles: the only module that imports ``transitions``.

A :class:`SharedMachine` hands one :class:`~pipeline_state._lifecycle.Lifecycle` to a
``transitions.Machine`` (with no models: nothing per batch), which validates it - states,
triggers, guards as ``conditions``, effects as ``before``/``after`` callbacks - and reads
back from it a table ``(state, trigger) -> alternatives``, checked against the definition.

:meth:`SharedMachine.bind` ties the declared guard and effect names to implementations
and gives a :class:`BoundMachine`, which fires a trigger on a context object: it looks up
the alternatives, takes the first whose guards hold, runs its ``before`` effects, applies
the move and runs its ``after`` effects, in the order ``transitions`` documents for its
callbacks. A guard returns ``None`` when it holds and its reason when it does not (a
:data:`~pipeline_state._lifecycle.Verdict.REJECT` guard may raise its own typed error). A
trigger that no alternative allows gives a :class:`Refused` carrying the verdict and
reason the definition declares (a guard's, or the trigger's refusal in that state).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

import attrs
from transitions import Machine

from pipeline_state._lifecycle import (
    ABSENT,
    BATCH_LIFECYCLE,
    PHASE_LIFECYCLE,
    RUN_LIFECYCLE,
    Lifecycle,
    Refusal,
    Transition,
    Verdict,
    define_lifecycle,
)
from pipeline_state._names import StateNames
from pipeline_state.errors import DefinitionError, IllegalTransitionError

__all__ = [
    "BATCH_MACHINE",
    "PHASE_MACHINE",
    "RUN_MACHINE",
    "BoundMachine",
    "Option",
    "Refused",
    "SharedMachine",
]

_STATE_ATTRIBUTE = "state"
# ``transitions`` needs a name for the pseudo-state of creation transitions.
_ABSENT_STATE = "<absent>"

# ``transitions`` logs at INFO on every state enter/exit. Unless the application already
# chose a level for its logger, keep it at WARNING so an INFO-level root logger does not
# emit (and format) two records per fired event.
_transitions_logger = logging.getLogger("transitions")
if _transitions_logger.level == logging.NOTSET:
    _transitions_logger.setLevel(logging.WARNING)

C = TypeVar("C")
GuardFn = Callable[[C], "str | None"]
EffectFn = Callable[[C], None]


@attrs.frozen
class Refused:
    """A trigger that did not fire: the verdict and reason the definition gives, and the
    guard that gave them (``None`` when the state does not allow the trigger at all)."""

    lifecycle: str
    state: str
    trigger: str
    verdict: Verdict
    reason: str
    guard: str | None = None
    detail: str = ""

    def error(self, batch_id: str | None = None) -> IllegalTransitionError:
        """The error a :data:`Verdict.REJECT` refusal of a state raises."""
        return IllegalTransitionError(self.lifecycle, self.state or "absent", self.trigger, batch_id=batch_id)


@attrs.frozen(slots=True)
class Option(Generic[C]):
    """One compiled alternative of a trigger from one state: the transition and its bound
    guards and effects, with what applying the move needs worked out once, when bound:
    the state it leaves (``source``), its ``trigger``, whether it ``creates`` the entity,
    and ``status``, the destination as the binder's status type (``dest`` itself unless
    :meth:`SharedMachine.bind` was given ``status``)."""

    transition: Transition
    dest: str
    guards: tuple[tuple[str, GuardFn[C]], ...]
    before: tuple[EffectFn[C], ...]
    after: tuple[EffectFn[C], ...]
    source: str = ""
    trigger: str = ""
    creates: bool = False
    status: Any = None


class SharedMachine:
    """One lifecycle, validated by ``transitions`` and compiled to a lookup table.

    The lifecycle is re-checked when the machine is built, so a :class:`Lifecycle`
    constructed by hand (bypassing :func:`define_lifecycle`) cannot reach ``transitions``
    unchecked.

    Raises:
        DefinitionError: the lifecycle is malformed, or ``transitions`` built a machine
            that does not match it.
    """

    __slots__ = ("_allowed", "_machine", "_table", "lifecycle")

    def __init__(self, lifecycle: Lifecycle) -> None:
        define_lifecycle(
            lifecycle.name,
            states=lifecycle.states,
            initial=lifecycle.initial,
            final=lifecycle.final,
            transitions=lifecycle.transitions,
            guards=lifecycle.guards.values(),
            effects=lifecycle.effects.values(),
            refusals=lifecycle.refusals,
        )
        self.lifecycle = lifecycle
        self._machine = Machine(
            model=None,
            states=[*lifecycle.states, _ABSENT_STATE],
            initial=lifecycle.initial,
            transitions=[
                {
                    "trigger": t.trigger,
                    "source": [_ABSENT_STATE if s == ABSENT else s for s in t.sources],
                    "dest": t.dest,
                    "conditions": list(t.guards),
                    "before": list(t.before),
                    "after": list(t.after),
                }
                for t in lifecycle.transitions
            ],
            auto_transitions=False,
            ordered_transitions=False,
            ignore_invalid_triggers=False,
            send_event=False,
            queued=False,
            name=lifecycle.name,
            model_attribute=_STATE_ATTRIBUTE,
        )
        self._table = self._compile()
        allowed: dict[str, list[str]] = {state: [] for state in (ABSENT, *lifecycle.states)}
        for state, trigger in self._table:
            allowed[state].append(trigger)
        self._allowed = {state: tuple(triggers) for state, triggers in allowed.items()}

    def _compile(self) -> dict[tuple[str, str], tuple[Transition, ...]]:
        """Read ``(state, trigger) -> alternatives`` from the built Machine, checking it."""
        name = self.lifecycle.name
        built_states = [s for s in self._machine.states if s != _ABSENT_STATE]
        if built_states != list(self.lifecycle.states):
            raise DefinitionError(name, f"transitions built states {built_states!r}")
        table: dict[tuple[str, str], tuple[Transition, ...]] = {}
        for trigger, event in self._machine.events.items():
            for source, candidates in event.transitions.items():
                state = ABSENT if source == _ABSENT_STATE else source
                wanted = self.lifecycle.alternatives(state, trigger)
                built = [
                    (t.dest, tuple(c.func for c in t.conditions), tuple(t.before), tuple(t.after))
                    for t in candidates
                ]
                declared = [(t.dest, t.guards, t.before, t.after) for t in wanted]
                if built != declared:
                    raise DefinitionError(
                        name, f"trigger {trigger!r} from {source!r}: transitions built {built!r}"
                    )
                table[(state, trigger)] = wanted
        expected = {(s, t.trigger) for t in self.lifecycle.transitions for s in t.sources}
        if set(table) != expected:
            raise DefinitionError(name, "the transitions machine does not match the lifecycle")
        return table

    @property
    def transitions_machine(self) -> Machine:
        """The underlying ``transitions.Machine``, for introspection only.

        Never add models to it: the design relies on it staying model-free. Creation
        transitions start from its ``<absent>`` state.
        """
        return self._machine

    def alternatives(self, state: str, trigger: str) -> tuple[Transition, ...]:
        """The transitions ``trigger`` may take from ``state`` (empty when none)."""
        return self._table.get((state, trigger), ())

    def next_state(self, state: str, trigger: str, *, batch_id: str | None = None) -> str:
        """The state an unguarded ``trigger`` leads to from ``state``.

        Raises:
            IllegalTransitionError: the move is not allowed, the state or trigger is
                unknown, or the move depends on guards (fire it through :meth:`bind`).
        """
        options = self._table.get((state, trigger), ())
        if len(options) != 1 or options[0].guards:
            raise IllegalTransitionError(self.lifecycle.name, str(state), str(trigger), batch_id=batch_id)
        return options[0].dest

    def can(self, state: str, trigger: str) -> bool:
        """Whether some transition of ``trigger`` leaves ``state`` (guards not evaluated)."""
        return (state, trigger) in self._table

    def allowed_triggers(self, state: str) -> tuple[str, ...]:
        """The triggers declared from ``state`` in declaration order (empty for unknown states)."""
        return self._allowed.get(state, ())

    def bind(
        self,
        *,
        guards: Mapping[str, GuardFn[C]],
        effects: Mapping[str, EffectFn[C]],
        status: Callable[[str], Any] | None = None,
    ) -> BoundMachine[C]:
        """Tie every declared guard and effect to an implementation; ``status`` converts a
        state name to the value the binder stores (a status enum), once per alternative.

        Raises:
            DefinitionError: a declared guard or effect has no implementation, or an
                implementation names nothing the lifecycle declares.
        """
        name = self.lifecycle.name
        for kind, declared, given in (
            ("guard", self.lifecycle.guards, guards),
            ("effect", self.lifecycle.effects, effects),
        ):
            missing = sorted(declared.keys() - given.keys())
            if missing:
                raise DefinitionError(name, f"no implementation for {kind} {missing[0]!r}")
            extra = sorted(given.keys() - declared.keys())
            if extra:
                raise DefinitionError(name, f"{kind} {extra[0]!r} is implemented but not declared")
        table: dict[tuple[str, str], tuple[Option[C], ...]] = {
            key: tuple(
                Option(
                    t,
                    t.dest,
                    tuple((g, guards[g]) for g in t.guards),
                    tuple(effects[e] for e in t.before),
                    tuple(effects[e] for e in t.after),
                    key[0],
                    t.trigger,
                    t.creates,
                    t.dest if status is None else status(t.dest),
                )
                for t in options
            )
            for key, options in self._table.items()
        }
        return BoundMachine(self.lifecycle, table)

    def __repr__(self) -> str:
        return f"SharedMachine({self.lifecycle.name!r}, {len(self._table)} moves)"


class BoundMachine(Generic[C]):
    """A lifecycle with its guards and effects bound; fires triggers on a context ``C``."""

    __slots__ = ("_refusals", "_table", "lifecycle")

    def __init__(self, lifecycle: Lifecycle, table: dict[tuple[str, str], tuple[Option[C], ...]]) -> None:
        self.lifecycle = lifecycle
        self._table = table
        self._refusals: dict[tuple[str, str, StateNames | None], Refused] = {}

    def select(
        self, ctx: C, state: str, trigger: str, names: StateNames | None = None
    ) -> Option[C] | Refused:
        """The first alternative of ``trigger`` from ``state`` whose guards hold on ``ctx``,
        or why none does. Runs guards only. A refusal the definition words with the state
        or the trigger uses their ``names`` (a profile's, see :class:`StateNames`)."""
        return self.fire(ctx, state, trigger, None, names)

    def fire(
        self,
        ctx: C,
        state: str,
        trigger: str,
        apply: Callable[[C, Option[C]], Any] | None,
        names: StateNames | None = None,
    ) -> Option[C] | Refused:
        """Fire ``trigger``: select an alternative (as :meth:`select`), run its ``before``
        effects, ``apply`` the move (the caller changes and logs the entity), run its
        ``after`` effects. ``apply`` ``None``: select only. One call does it all: decisions
        fire several triggers each."""
        options = self._table.get((state, trigger))
        if options is None:
            return self._refused(state, trigger, names)
        refusal: tuple[str, str] | None = None
        for option in options:
            for name, guard in option.guards:
                reason = guard(ctx)
                if reason is not None:
                    refusal = (name, reason)
                    break
            else:
                if apply is not None:
                    for effect in option.before:
                        effect(ctx)
                    apply(ctx, option)
                    for effect in option.after:
                        effect(ctx)
                return option
        assert refusal is not None
        guard_name, reason = refusal
        verdict = self.lifecycle.guards[guard_name].verdict
        return Refused(self.lifecycle.name, state, trigger, verdict, reason, guard_name)

    def _refused(self, state: str, trigger: str, names: StateNames | None) -> Refused:
        key = (state, trigger, names or None)
        cached = self._refusals.get(key)
        if cached is None:
            declared: Refusal = self.lifecycle.refusal(state, trigger)
            shown_trigger, shown_state = (
                (trigger, state) if not names else (names.show(trigger), names.show(state))
            )
            reason = declared.reason.format(trigger=shown_trigger, state=shown_state)
            detail = declared.detail.format(trigger=shown_trigger, state=shown_state)
            cached = Refused(self.lifecycle.name, state, trigger, declared.verdict, reason, None, detail)
            if len(self._refusals) < 4096:  # unknown states and triggers must not grow it for ever
                self._refusals[key] = cached
        return cached

    def __repr__(self) -> str:
        return f"BoundMachine({self.lifecycle.name!r})"


BATCH_MACHINE: SharedMachine = SharedMachine(BATCH_LIFECYCLE)
"""Shared executor of the batch lifecycle."""

RUN_MACHINE: SharedMachine = SharedMachine(RUN_LIFECYCLE)
"""Shared executor of the run lifecycle."""

PHASE_MACHINE: SharedMachine = SharedMachine(PHASE_LIFECYCLE)
"""Shared executor of the phase lifecycle."""
