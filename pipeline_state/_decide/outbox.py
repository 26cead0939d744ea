"""An operator's request to deliver parked outbox rows again.

The rows are named by event id and re-queued by the store if they are still parked when it
commits (``Decision.unpark``: two operators' requests, or one racing the relay, deliver a row
once); the batch records the request as a ``republish_outbox`` move onto its own status, so
the transition log says when, on which command and (with the command's ``requested_by``) who
asked. The batch's last-progress time is kept: a re-delivery moves nothing forward.
"""

from __future__ import annotations

import attrs

from pipeline_state._commands import RepublishOutbox
from pipeline_state.errors import BadCommandError

from .context import Session
from .journal import Decision, Move
from .registry import Inputs

__all__ = ["REPUBLISH_TRIGGER", "republish_outbox"]

REPUBLISH_TRIGGER = "republish_outbox"
"""The trigger of the batch's log row that records a republish."""


def republish_outbox(inputs: Inputs, p: RepublishOutbox) -> Decision:
    """Re-queue the outbox rows ``p.event_ids`` (at least one) of a known batch."""
    state = inputs.require_state()
    if not p.event_ids:
        raise BadCommandError("a republish names no outbox row", batch_id=state.batch_id)
    session = Session(inputs.profile, inputs.command, inputs.now, state)
    status = state.status.value
    session.journal.move(Move("batch", state.batch_id, REPUBLISH_TRIGGER, status, status))
    return attrs.evolve(session.finish(progress=False), unpark=tuple(dict.fromkeys(p.event_ids)))
