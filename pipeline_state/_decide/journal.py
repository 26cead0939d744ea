"""What one decision records as it goes - emits, moves, flags, re-sends - and the
:class:`Decision` it becomes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

import attrs

from pipeline_state._guards import Denial
from pipeline_state._model import BatchState, Run
from pipeline_state._outbound import Outgoing
from pipeline_state._wire import WireModel

__all__ = ["CORRELATION_MISMATCH", "NOTE_LENGTH", "Decision", "Emit", "Journal", "Move"]

NOTE_LENGTH = 200
"""The characters of a move's ``note`` the transition log keeps (its stored width)."""

CORRELATION_MISMATCH = "correlation_mismatch"
"""The note and flag of a phase outcome whose correlation id belongs to no run of its batch,
applied to the active run (unless the profile has ``strict_correlation``)."""

ALREADY_HANDLED = "already_handled"
"""Why a run-starting command (a pipeline request, a phase retry, a phase completion an
operator records on an idle batch) is ignored when the run it starts (its id derives from
the command's event id) is active or archived already: the same command, delivered again
after the inbox purge forgot it. The service answers it as a duplicate."""


class Emit:
    """An event to publish: topic, message key, payload and the correlation id it carries.

    The payload may be given built, or as its model and the field values it validates
    (``Emit.lazy``): it is then validated on first access, so a decision whose emits are
    never read (a dry run, a test of moves) does not pay for building them.
    """

    __slots__ = ("_data", "_model", "_payload", "correlation_id", "key", "topic")

    def __init__(self, topic: str, key: str | None, payload: WireModel, correlation_id: str) -> None:
        self.topic = topic
        self.key = key
        self.correlation_id = correlation_id
        self._payload: WireModel | None = payload
        self._model: type[WireModel] = type(payload)
        self._data: Mapping[str, Any] | None = None

    @classmethod
    def lazy(
        cls, topic: str, key: str | None, model: type[WireModel], data: Mapping[str, Any], correlation_id: str
    ) -> Emit:
        """An emit whose payload is ``model`` validated from ``data`` when first read."""
        emit = cls.__new__(cls)
        emit.topic, emit.key, emit.correlation_id = topic, key, correlation_id
        emit._payload, emit._model, emit._data = None, model, data
        return emit

    @property
    def model(self) -> type[WireModel]:
        """The payload's model class (known without building the payload)."""
        return self._model

    @property
    def payload(self) -> WireModel:
        payload = self._payload
        if payload is None:
            assert self._data is not None
            payload = self._payload = self._model.model_validate(self._data)
        return payload

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Emit):
            return NotImplemented
        return (self.topic, self.key, self.correlation_id, self.payload) == (
            other.topic,
            other.key,
            other.correlation_id,
            other.payload,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"Emit(topic={self.topic!r}, key={self.key!r}, payload={self.payload!r}, "
            f"correlation_id={self.correlation_id!r})"
        )


@attrs.frozen(slots=False)
class Move:
    """One state move, for the transition log. ``note`` flags a move made on doubtful input
    (``correlation_mismatch``) or gives the operator's reason for it (a run's ``cancel``). A
    creation move has the empty ``source``.

    Like :class:`Decision`, a short-lived record without slots: a frozen class with slots
    writes each field through a wrapper call, one without writes its ``__dict__``, about a
    third faster to build (stores keep log rows, not these objects)."""

    entity: Literal["batch", "run", "phase"]
    name: str
    trigger: str
    source: str
    dest: str
    run_id: str | None = None
    note: str | None = None


@attrs.frozen(slots=False)
class Decision:
    """What :func:`~pipeline_state._decide.decide` concluded.

    ``state`` is the new state (the very same object when nothing changed); ``ignored`` says
    why an input had no effect; ``denial`` is set when a request was refused (the denial
    events are in ``emits`` and the state is unchanged); ``run_id`` names the run that was
    accepted or affected. ``flags`` name what was doubtful about an applied input
    (``correlation_mismatch``: count it, log a warning). ``resend`` lists the outbox event
    ids of commands already written that must be published again (an overdue phase's
    command, re-sent with its own event id). ``archived`` holds the runs this decision
    archived (the state keeps only their summary, ``state.past``): the store keeps them.
    ``unpark`` lists outbox event ids an operator asked to deliver again: the store re-queues
    those rows that are still parked when it commits, and no other (a row another
    operator's request already re-queued, or the relay published since, stays as it is).
    """

    state: BatchState | None
    emits: tuple[Emit, ...] = ()
    moves: tuple[Move, ...] = ()
    ignored: str | None = None
    denial: Denial | None = None
    run_id: str | None = None
    flags: tuple[str, ...] = ()
    resend: tuple[str, ...] = ()
    archived: tuple[Run, ...] = ()
    unpark: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.moves)


class Journal:
    """The append-only record of one decision: every emit, move, flag and re-send, in order."""

    __slots__ = ("correlation_id", "emits", "flags", "moves", "resend")

    def __init__(self, correlation_id: str) -> None:
        self.correlation_id = correlation_id
        self.emits: list[Emit] = []
        self.moves: list[Move] = []
        self.flags: list[str] = []
        self.resend: list[str] = []

    def move(self, move: Move) -> None:
        self.moves.append(move)

    def emit_lazy(
        self,
        topic: str,
        key: str | None,
        model: type[WireModel],
        data: Mapping[str, Any],
        correlation_id: str | None = None,
    ) -> None:
        """Record an event whose payload is ``model`` validated from ``data`` when first read."""
        self.emits.append(Emit.lazy(topic, key, model, data, correlation_id or self.correlation_id))

    def emit_all(self, events: Iterable[Outgoing]) -> None:
        """Record the events a profile's :class:`~pipeline_state._outbound.Outbound` worded."""
        append, correlation_id = self.emits.append, self.correlation_id
        for event in events:
            append(
                Emit.lazy(
                    event.topic, event.key, event.model, event.data, event.correlation_id or correlation_id
                )
            )
