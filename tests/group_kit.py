"""What the group-commit tests share: a batch's whole story as inbound messages, a call's
outcome (result or error), and outcomes made comparable between a grouped and a one-by-one
handling of the same messages."""

from __future__ import annotations

import uuid
from typing import Any

from pipeline_state import HandleResult, InboundMessage, PipelineService, PipelineStateError
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

__all__ = ["PHASES", "Outcome", "comparable", "outcome_of", "story"]

PHASES = ("spellcheck", "nlp", "cj_assessment", "ai_feedback")
"""The phases of the ``comprehensive`` pipeline, in plan order."""

Outcome = HandleResult | PipelineStateError | BaseException


def story(env: HuleEduEnvelopes, batch_id: str) -> list[InboundMessage]:
    """One batch from registration through a completed ``comprehensive`` run."""
    ids = env.item_ids(batch_id, 2)
    corr = str(uuid.uuid5(uuid.NAMESPACE_OID, batch_id))
    return [
        env.register(batch_id, items=2),
        env.provisioned(batch_id, ids),
        env.request(batch_id, "comprehensive", correlation_id=corr),
        *(env.outcome(batch_id, phase, corr, processed=ids) for phase in PHASES),
    ]


async def outcome_of(svc: PipelineService, message: InboundMessage) -> Outcome:
    """The result of handling ``message``, or the library error it raised."""
    try:
        return await svc.handle_message(*message)
    except PipelineStateError as exc:
        return exc


def comparable(result: Any, *, whole_messages: bool = True) -> Any:
    """``result`` as a value to compare: an error by type and text, a result by its event,
    batch, decision, messages (event id, topic, key and, unless the two sides are different
    stores, value; never the trace context, which another test's tracer makes random),
    duplicate flag, waiting reason and resumed facts."""
    if isinstance(result, BaseException):
        return (type(result).__name__, str(result))
    messages = tuple(
        (m.event_id, m.topic, m.key, m.value if whole_messages else None) for m in result.messages
    )
    return (
        result.event_id,
        result.batch_id,
        result.decision,
        messages,
        result.duplicate,
        result.waiting,
        tuple(comparable(r, whole_messages=whole_messages) for r in result.resumed),
    )
