"""Commands: what :func:`pipeline_state._decide.decide` is asked to do.

A :class:`Command` pairs a payload with the identity of the message that carried it. The
payload is an engine input (:mod:`pipeline_state._inputs`, what an inbound message means) or
one of the operator commands below, which have no Kafka topic (cancel, retry, expire,
archive).
"""

from __future__ import annotations

import attrs

from ._inputs import EngineInput
from ._wire import WireModel

__all__ = [
    "ArchiveBatch",
    "CancelBatch",
    "CancelRun",
    "Command",
    "ExpireOverdue",
    "OperatorCommand",
    "Payload",
    "RecordPhaseCompletion",
    "RepublishOutbox",
    "RetryPhase",
]


@attrs.frozen
class CancelRun:
    """Cancel the active run of a batch; the batch returns to ready. With ``run_id``, only
    that run: when another run (or none) is active by the time the command is decided, it
    is refused (:class:`~pipeline_state.errors.BadCommandError`), never applied to a run the
    caller did not name."""

    batch_id: str
    user_id: str | None = None
    reason: str | None = None
    run_id: str | None = None


@attrs.frozen
class RetryPhase:
    """Run one phase again in a new run, even if an earlier run completed it. With
    ``after_runs``, the number of archived runs the caller saw: when the batch has archived
    another since, the retry is refused (:class:`~pipeline_state.errors.BadCommandError`),
    so that a retry keyed on the last finished run the caller saw is never applied after a
    different one."""

    batch_id: str
    phase_name: str
    user_id: str
    retry_reason: str | None = None
    after_runs: int | None = None


@attrs.frozen
class ExpireOverdue:
    """Fail every active phase whose deadline has passed (the sweeper's command)."""

    batch_id: str


@attrs.frozen
class ArchiveBatch:
    """Archive a ready batch: no further requests are accepted (terminal)."""

    batch_id: str


@attrs.frozen
class CancelBatch:
    """Cancel a batch (terminal); an active run is cancelled with it."""

    batch_id: str
    reason: str | None = None


@attrs.frozen
class RecordPhaseCompletion:
    """Record an out-of-band phase completion reported by an operator.

    With an active run in which the phase is active, it applies like an outcome. Without
    an active run, a successful completion is archived as a one-phase run so that later
    requests prune the phase.
    """

    batch_id: str
    phase_name: str
    success: bool


@attrs.frozen
class RepublishOutbox:
    """Deliver parked outbox rows of a batch again, with their own event ids.

    ``event_ids`` name the rows; the decision re-queues them (unparked, attempts reset) and
    records the request on the batch's transition log. Ids the store no longer holds are
    skipped.
    """

    batch_id: str
    event_ids: tuple[str, ...]


OperatorCommand = (
    CancelRun
    | RetryPhase
    | ExpireOverdue
    | ArchiveBatch
    | CancelBatch
    | RecordPhaseCompletion
    | RepublishOutbox
)
Payload = EngineInput | OperatorCommand | WireModel
"""What a command carries: an engine input, an operator command, or a payload of the
profile's inbound wire (read as its engine input by :func:`~pipeline_state._decide.decide`)."""


@attrs.frozen
class Command:
    """A payload with the id and correlation id of the message that carried it.

    ``event_id`` is the inbox key (a redelivered id has no effect) and the seed of every
    id the decision derives (run id, outgoing event ids), so a retry is deterministic.
    ``requested_by`` names who asked for it when a person did (an operator's command): it
    is written on every transition log row the command makes (``None`` for messages).
    """

    payload: Payload
    event_id: str
    correlation_id: str
    requested_by: str | None = None

    @property
    def batch_id(self) -> str:
        batch_id = getattr(self.payload, "batch_id", None)
        if not isinstance(batch_id, str):
            raise TypeError(f"{type(self.payload).__name__} carries no batch_id")
        return batch_id
