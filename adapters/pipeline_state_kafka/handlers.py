"""Message handlers: what the consumer calls for each record.

A handler takes the (unprefixed) topic and the raw value bytes, does one unit of work and
returns a :class:`Handled` summary for logs and counters. It raises the library's errors for
bad input; :mod:`pipeline_state_kafka.policy` decides what happens then.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import attrs

from pipeline_state.commands import Command
from pipeline_state.events import parse_message
from pipeline_state.service import PipelineService

__all__ = ["Handled", "MessageHandler", "service_handler"]


@attrs.frozen
class Handled:
    """What handling one record did.

    ``result`` is ``applied``, ``duplicate``, ``ignored:<reason>`` or ``denied:<reason>``;
    ``emitted`` counts the outbox messages the unit of work committed.
    """

    event_id: str | None = None
    batch_id: str | None = None
    correlation_id: str | None = None
    result: str = "applied"
    emitted: int = 0


MessageHandler = Callable[[str, bytes], Awaitable[Handled]]


def service_handler(service: PipelineService) -> MessageHandler:
    """Hands records to ``service``: parse, then one unit of work (state, outbox, inbox)."""

    async def handle(topic: str, raw: bytes) -> Handled:
        envelope, payload = parse_message(topic, raw)
        event_id = str(envelope.event_id)
        correlation_id = str(envelope.correlation_id)
        result = await service.handle(Command(payload, event_id, correlation_id), topic=topic)
        if result.duplicate:
            label = "duplicate"
        elif result.decision is not None and result.decision.denial is not None:
            label = f"denied:{result.decision.denial.reason}"
        elif result.ignored:
            label = f"ignored:{result.ignored}"
        else:
            label = "applied"
        return Handled(event_id, result.batch_id, correlation_id, label, len(result.messages))

    return handle
