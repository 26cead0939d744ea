"""Shared, stateless executors for lifecycles: the only module that imports ``transitions``.

One :class:`SharedMachine` is built per :class:`~pipeline_state.lifecycle.Lifecycle`. It
holds ONE ``transitions.Machine`` with no models: no Machine per batch and no
``add_model`` (both cost memory and time per object). Two ways to move a state:

* :meth:`SharedMachine.next_state` — the hot path: a dict lookup in a ``(state, trigger)
  -> dest`` table compiled from the built Machine's own events and transitions;
* :meth:`SharedMachine.fire` — fires the real ``transitions`` event on any plain object
  with a ``state`` attribute, without registering it.

Both raise :class:`~pipeline_state.errors.IllegalTransitionError` for a move the lifecycle
does not allow (including an unknown state or trigger). Neither is thread-safe.
"""

from __future__ import annotations

import logging
from enum import Enum

from transitions import Machine, MachineError

from pipeline_state.errors import DefinitionError, IllegalTransitionError
from pipeline_state.lifecycle import (
    BATCH_LIFECYCLE,
    PHASE_LIFECYCLE,
    RUN_LIFECYCLE,
    Lifecycle,
    define_lifecycle,
)

__all__ = ["BATCH_MACHINE", "PHASE_MACHINE", "RUN_MACHINE", "SharedMachine"]

_STATE_ATTRIBUTE = "state"

# ``transitions`` logs at INFO on every state enter/exit. Unless the application already
# chose a level for its logger, keep it at WARNING so an INFO-level root logger does not
# emit (and format) two records per fired event.
_transitions_logger = logging.getLogger("transitions")
if _transitions_logger.level == logging.NOTSET:
    _transitions_logger.setLevel(logging.WARNING)


class SharedMachine:
    """Executes one lifecycle for any number of plain state holders.

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
        )
        self.lifecycle = lifecycle
        self._machine = Machine(
            model=None,
            states=list(lifecycle.states),
            initial=lifecycle.initial,
            transitions=[
                {"trigger": t.trigger, "source": list(t.sources), "dest": t.dest}
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
        allowed: dict[str, list[str]] = {state: [] for state in lifecycle.states}
        for state, trigger in self._table:
            allowed[state].append(trigger)
        self._allowed = {state: tuple(triggers) for state, triggers in allowed.items()}

    def _compile(self) -> dict[tuple[str, str], str]:
        """Read ``(state, trigger) -> dest`` from the built Machine, checking it on the way."""
        name = self.lifecycle.name
        if list(self._machine.states) != list(self.lifecycle.states):
            raise DefinitionError(name, f"transitions built states {list(self._machine.states)!r}")
        table: dict[tuple[str, str], str] = {}
        for trigger, event in self._machine.events.items():
            for source, candidates in event.transitions.items():
                dests = {t.dest for t in candidates}
                if len(dests) != 1:
                    raise DefinitionError(name, f"trigger {trigger!r} from {source!r} has dests {dests!r}")
                dest = dests.pop()
                if dest is None or dest not in self._machine.states:
                    raise DefinitionError(name, f"trigger {trigger!r} from {source!r} has dest {dest!r}")
                table[(source, trigger)] = dest
        expected = {(s, t.trigger): t.dest for t in self.lifecycle.transitions for s in t.sources}
        if table != expected:
            raise DefinitionError(name, "the transitions machine does not match the lifecycle")
        return table

    @property
    def transitions_machine(self) -> Machine:
        """The underlying ``transitions.Machine``, for introspection only.

        Never add models to it: the design relies on it staying model-free.
        """
        return self._machine

    def next_state(self, state: str, trigger: str, *, batch_id: str | None = None) -> str:
        """Return the state ``trigger`` leads to from ``state`` (table lookup, no side effects).

        Raises:
            IllegalTransitionError: the move is not allowed, or the state or trigger is unknown.
        """
        try:
            return self._table[(state, trigger)]
        except KeyError:
            raise IllegalTransitionError(
                self.lifecycle.name, str(state), str(trigger), batch_id=batch_id
            ) from None

    def can(self, state: str, trigger: str) -> bool:
        """Whether ``trigger`` is allowed from ``state``."""
        return (state, trigger) in self._table

    def allowed_triggers(self, state: str) -> tuple[str, ...]:
        """The triggers allowed from ``state`` in declaration order (empty for unknown states)."""
        return self._allowed.get(state, ())

    def fire(self, obj: object, trigger: str, *, batch_id: str | None = None) -> str:
        """Fire the real ``transitions`` event ``trigger`` on ``obj`` and return its new state.

        ``obj`` is any object with a writable ``state`` attribute; it is not registered with
        the machine. An enum member in ``obj.state`` is read as its value; after a move,
        ``obj.state`` holds the destination as a plain ``str``. On failure ``obj.state`` is
        left as it was.

        Raises:
            IllegalTransitionError: the move is not allowed, or the state or trigger is unknown.
            AttributeError: ``obj`` has no ``state`` attribute.
        """
        original = getattr(obj, _STATE_ATTRIBUTE)
        current = original.value if isinstance(original, Enum) else original
        event = self._machine.events.get(trigger)
        if event is None or not isinstance(current, str) or current not in self._machine.states:
            raise IllegalTransitionError(self.lifecycle.name, str(current), str(trigger), batch_id=batch_id)
        if current is not original:
            setattr(obj, _STATE_ATTRIBUTE, current)
        try:
            moved = event.trigger(obj)
        except MachineError as exc:
            setattr(obj, _STATE_ATTRIBUTE, original)
            raise IllegalTransitionError(self.lifecycle.name, current, trigger, batch_id=batch_id) from exc
        if not moved:
            setattr(obj, _STATE_ATTRIBUTE, original)
            raise IllegalTransitionError(self.lifecycle.name, current, trigger, batch_id=batch_id)
        new_state: str = getattr(obj, _STATE_ATTRIBUTE)
        return new_state

    def __repr__(self) -> str:
        return f"SharedMachine({self.lifecycle.name!r}, {len(self._table)} moves)"


BATCH_MACHINE: SharedMachine = SharedMachine(BATCH_LIFECYCLE)
"""Shared executor of the batch lifecycle."""

RUN_MACHINE: SharedMachine = SharedMachine(RUN_LIFECYCLE)
"""Shared executor of the run lifecycle."""

PHASE_MACHINE: SharedMachine = SharedMachine(PHASE_LIFECYCLE)
"""Shared executor of the phase lifecycle."""
