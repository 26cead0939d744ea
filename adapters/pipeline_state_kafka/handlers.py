"""Message handlers: what the consumer calls for each record.

A handler takes the (unprefixed) topic and the raw value bytes, does one unit of work and
returns a :class:`Handled` summary for logs and counters. It raises the library's errors for
bad input; :mod:`pipeline_state_kafka.policy` decides what happens then.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import attrs

from pipeline_state._announced import announced_events
from pipeline_state._profile import Profile
from pipeline_state._service import HandleResult, PipelineService
from pipeline_state._tracing import TraceContext
from pipeline_state.errors import PipelineStateError
from pipeline_state.profiles.huleedu.outbound import ENGINE_EVENT_TOPICS

__all__ = [
    "COMPLETION_TOPICS",
    "BatchHandler",
    "Handled",
    "MessageHandler",
    "completion_topics",
    "service_batch_handler",
    "service_handler",
]


@attrs.frozen
class Handled:
    """What handling one record did.

    ``result`` is ``applied``, ``duplicate``, ``deferred:<what it waits for>`` (an early
    fact kept in the waiting set), ``ignored:<reason>`` or ``denied:<reason>``; ``emitted``
    counts the outbox messages the unit of work committed (with those of the waiting facts
    it let apply). ``completions`` are the event ids of the run completions among them
    (the metrics time them until the relay publishes them); ``cas_retries`` counts the
    times the unit of work lost a compare-and-set race and was decided again.
    """

    event_id: str | None = None
    batch_id: str | None = None
    correlation_id: str | None = None
    result: str = "applied"
    emitted: int = 0
    completions: tuple[str, ...] = ()
    cas_retries: int = 0
    span_ids: tuple[str, str] | None = None
    """``(trace_id, span_id)`` of the span the record was handled in, if it had one."""


MessageHandler = Callable[[str, bytes], Awaitable[Handled]]


BatchHandler = Callable[
    [Sequence[tuple[str, bytes]], Sequence[TraceContext]], Awaitable[list[Handled | PipelineStateError]]
]
"""Handles several records in one unit of work: one entry per record, in order, either what it
did or the library error that record alone raised (bad input); store errors propagate. The
second argument gives each record's trace-context headers, by position."""


COMPLETION_TOPICS: frozenset[str] = frozenset(
    topic for topic, event in ENGINE_EVENT_TOPICS.items() if event == "completed"
)
"""The topics of the run completions the default (HuleEdu) profile emits; a handler takes its
service's own (:func:`completion_topics`)."""


def completion_topics(profile: Profile) -> frozenset[str]:
    """The topics on which ``profile``'s outbound announces run completions."""
    announced = announced_events(profile.name, profile.outbound)
    return frozenset(a.topic for a in announced if "completed" in a.announces)


def _summary(result: HandleResult, completions: frozenset[str]) -> Handled:
    # emitted counts the rows of the waiting facts this change let apply too (relay wake-up)
    messages = result.all_messages
    return Handled(
        result.event_id,
        result.batch_id,
        result.correlation_id,
        result.label,
        len(messages),
        tuple(m.event_id for m in messages if m.topic in completions),
        max(0, result.attempts - 1),
        result.span_ids,
    )


def service_handler(service: PipelineService) -> MessageHandler:
    """Hands records to ``service``: parse, then one unit of work (state, outbox, inbox)."""
    completions = completion_topics(service.profile)

    async def handle(topic: str, raw: bytes) -> Handled:
        # parsed within the service's intake limits; an early fact waits (durably)
        return _summary(await service.handle_message(topic, bytes(raw)), completions)

    return handle


def service_batch_handler(service: PipelineService) -> BatchHandler:
    """Hands a partition's records to ``service.handle_many``: all their effects commit in one
    transaction (one fsync), with the results of handling them one by one."""

    completions = completion_topics(service.profile)

    async def handle(
        records: Sequence[tuple[str, bytes]], traces: Sequence[TraceContext] = ()
    ) -> list[Handled | PipelineStateError]:
        results = await service.handle_many(records, traces=traces)
        return [r if isinstance(r, PipelineStateError) else _summary(r, completions) for r in results]

    return handle
