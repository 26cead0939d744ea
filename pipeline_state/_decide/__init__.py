"""``decide(state, command)``: the pure heart of the library.

Given the current :class:`~pipeline_state._model.BatchState` (or ``None`` for an unknown
batch) and a :class:`~pipeline_state._commands.Command`, :func:`decide` returns a
:class:`Decision`: the new state, the events to emit, the state moves made (for the
transition log) and, when nothing changes, why. It performs no I/O and reads the time only
from its ``now`` argument, so the same input always gives the same output.

Every state change is a trigger fired on a lifecycle of :mod:`pipeline_state._lifecycle`,
whose guards, effects and refusals are the rules; the modules of this package implement
them by concern: :mod:`~pipeline_state._decide.intake` (registration and readiness),
:mod:`~pipeline_state._decide.admission` (requests and retries),
:mod:`~pipeline_state._decide.run` and :mod:`~pipeline_state._decide.progress` (the run
engine: dispatch, outcomes, deadlines) and :mod:`~pipeline_state._decide.completion` (a
run's end, cancellation, archiving).

Inbound messages reach it as engine inputs (:mod:`pipeline_state._inputs`): the service
reads them through the profile's :class:`~pipeline_state._inbound.Inbound`, and a command
whose payload is still a wire model of the profile's inbound topics is read the same way
here, so callers may pass either.

Inbound events that do not fit the current state (duplicates, stale or out-of-order
messages) are *ignored with a reason*: at-least-once delivery makes them normal. Input that
can never be valid (unknown batch, unknown phase) raises a
:class:`~pipeline_state.errors.BadCommandError`, and operator commands that are not allowed
now (cancel without an active run, archive while processing) raise
:class:`~pipeline_state.errors.IllegalTransitionError`.
"""

from __future__ import annotations

from datetime import datetime

from pipeline_state._commands import (
    ArchiveBatch,
    CancelBatch,
    CancelRun,
    Command,
    ExpireOverdue,
    RecordPhaseCompletion,
    RepublishOutbox,
    RetryPhase,
)
from pipeline_state._inputs import (
    ContentReady,
    GroupConfirmed,
    ItemsReady,
    PhaseOutcome,
    RegisterBatch,
    RequestPipeline,
    ValidationFailed,
)
from pipeline_state._model import BatchState
from pipeline_state._profile import Profile

from . import machines
from .admission import request, retry_phase
from .archived import asks_archived_ids
from .completion import archive, cancel_batch, cancel_run
from .ids import derive_id, outbox_event_id
from .intake import associations, items_ready, provisioned, register, validation_errors
from .journal import ALREADY_HANDLED, CORRELATION_MISMATCH, Decision, Emit, Move
from .outbox import republish_outbox
from .progress import expire, outcome, record_completion
from .registry import HandlerRegistry, Inputs

__all__ = [
    "ALREADY_HANDLED",
    "CORRELATION_MISMATCH",
    "HANDLERS",
    "Decision",
    "Emit",
    "HandlerRegistry",
    "Inputs",
    "Move",
    "asks_archived_ids",
    "decide",
    "derive_id",
    "machines",
    "outbox_event_id",
]

HANDLERS = HandlerRegistry()
"""The handler of every input :func:`decide` accepts."""
HANDLERS.register(RegisterBatch, register)
HANDLERS.register(ContentReady, provisioned)
HANDLERS.register(GroupConfirmed, associations)
HANDLERS.register(ItemsReady, items_ready)
HANDLERS.register(ValidationFailed, validation_errors)
HANDLERS.register(RequestPipeline, request)
HANDLERS.register(PhaseOutcome, outcome)
HANDLERS.register(CancelRun, cancel_run)
HANDLERS.register(RetryPhase, retry_phase)
HANDLERS.register(ExpireOverdue, expire)
HANDLERS.register(ArchiveBatch, archive)
HANDLERS.register(CancelBatch, cancel_batch)
HANDLERS.register(RecordPhaseCompletion, record_completion)
HANDLERS.register(RepublishOutbox, republish_outbox)


def decide(state: BatchState | None, command: Command, *, profile: Profile, now: datetime) -> Decision:
    """Decide what ``command`` does to ``state``; pure and deterministic.

    Raises :class:`~pipeline_state.errors.BatchNotFoundError` when ``state`` is ``None`` for
    anything but a registration or a pipeline request (which is denied, not raised),
    :class:`~pipeline_state.errors.UnknownPipelineError` for a phase the profile does not
    know, :class:`~pipeline_state.errors.BatchConflictError` for a conflicting registration
    and :class:`~pipeline_state.errors.IllegalTransitionError` for an operator command that
    the batch's state does not allow.
    """
    return HANDLERS.decide(state, command, profile=profile, now=now)
