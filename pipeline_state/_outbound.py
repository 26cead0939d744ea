"""What the engine tells the world, and how a profile words it.

The engine decides *that* something is announced - a batch registered, a phase skipped, a
request denied, a run started or finished - and gathers the facts in plain values
(:class:`RunSummary`, :class:`Notice`). A profile's :class:`Outbound` turns each into the
events of its own wire (topic, key, model and field values), or into none at all: a
profile with no notifications returns ``()``. The engine adds the envelope (event id,
correlation id, time) when it stores the events in the outbox.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal, Protocol

import attrs

from ._guards import Denial
from ._model import BatchState, Run
from ._wire import WireModel

__all__ = ["Notice", "Outbound", "Outgoing", "RunSummary"]


@attrs.frozen(slots=True)
class Outgoing:
    """One event to emit: its topic, message key, payload model and the model's field values
    (validated when the event is encoded). ``correlation_id`` ``None``: the input's."""

    topic: str
    key: str | None
    model: type[WireModel]
    data: Mapping[str, Any]
    correlation_id: str | None = None


@attrs.frozen(slots=True)
class RunSummary:
    """The facts of a finished run that its completion event reports."""

    run: Run
    successful_items: int
    failed_items: int
    duration_seconds: float
    finished_at: datetime


@attrs.frozen(slots=True)
class Notice:
    """Something the batch's owner may want to hear of.

    ``kind`` is ``run_started``, ``run_finished`` or ``request_denied``; ``run`` is set for
    the first two, ``summary`` for ``run_finished``, ``requested`` and ``denial`` for a denial.
    ``skipped`` names the phases pruned at the start of a run, ``phases`` those it runs.
    """

    kind: Literal["run_started", "run_finished", "request_denied"]
    state: BatchState
    correlation_id: str
    run: Run | None = None
    summary: RunSummary | None = None
    phases: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    requested: str | None = None
    denial: Denial | None = None


class Outbound(Protocol):
    """How a profile words what the engine announces. Every method returns the events to
    emit, in order (``()`` for none); it must be pure and must not raise."""

    def registered(self, state: BatchState) -> Sequence[Outgoing]: ...

    def phase_skipped(self, state: BatchState, run: Run, phase: str, reason: str) -> Sequence[Outgoing]: ...

    def denied(
        self, state: BatchState, user_id: str, requested: str, denial: Denial
    ) -> Sequence[Outgoing]: ...

    def completed(self, state: BatchState, summary: RunSummary) -> Sequence[Outgoing]: ...

    def notify(self, notice: Notice) -> Sequence[Outgoing]: ...
