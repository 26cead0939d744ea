"""What one decision records as it goes - emits, moves, flags, re-sends - and the
:class:`Decision` it becomes."""

from __future__ import annotations

from typing import Literal

import attrs

from pipeline_state.events import WireModel
from pipeline_state.guards import Denial
from pipeline_state.model import BatchState

__all__ = ["CORRELATION_MISMATCH", "Decision", "Emit", "Journal", "Move"]

CORRELATION_MISMATCH = "correlation_mismatch"
"""The note and flag of a phase outcome whose correlation id belongs to no run of its batch,
applied to the active run (unless the profile has ``strict_correlation``)."""


@attrs.frozen
class Emit:
    """An event to publish: topic, message key, payload and the correlation id it carries."""

    topic: str
    key: str | None
    payload: WireModel
    correlation_id: str


@attrs.frozen
class Move:
    """One state move, for the transition log. ``note`` flags a move made on doubtful input
    (``correlation_mismatch``). A creation move has the empty ``source``."""

    entity: Literal["batch", "run", "phase"]
    name: str
    trigger: str
    source: str
    dest: str
    run_id: str | None = None
    note: str | None = None


@attrs.frozen
class Decision:
    """What :func:`~pipeline_state.decide.decide` concluded.

    ``state`` is the new state (the very same object when nothing changed); ``ignored`` says
    why an input had no effect; ``denial`` is set when a request was refused (the denial
    events are in ``emits`` and the state is unchanged); ``run_id`` names the run that was
    accepted or affected. ``flags`` name what was doubtful about an applied input
    (``correlation_mismatch``: count it, log a warning). ``resend`` lists the outbox event
    ids of commands already written that must be published again (an overdue phase's
    command, re-sent with its own event id).
    """

    state: BatchState | None
    emits: tuple[Emit, ...] = ()
    moves: tuple[Move, ...] = ()
    ignored: str | None = None
    denial: Denial | None = None
    run_id: str | None = None
    flags: tuple[str, ...] = ()
    resend: tuple[str, ...] = ()

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

    def emit(
        self, topic: str, key: str | None, payload: WireModel, correlation_id: str | None = None
    ) -> None:
        """Record an event to publish (with the input's correlation id unless another is given)."""
        self.emits.append(Emit(topic, key, payload, correlation_id or self.correlation_id))

    def move(self, move: Move) -> None:
        self.moves.append(move)
