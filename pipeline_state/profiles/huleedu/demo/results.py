"""The demo's result aggregator: the results projection watching the simulated bus.

:class:`ResultsDesk` is what a results service of the platform would run: a
:class:`~pipeline_state.profiles.huleedu.results.ResultsService` over an
:class:`~pipeline_state.profiles.huleedu.results.InMemoryResultsStore`, fed every message on the topics it
consumes (registrations and completions the orchestrator emits, the phase outcomes the
processing services send), with an :class:`~pipeline_state._relay.OutboxRelay` that publishes
its announcements (``BatchResultsReadyV1`` and the ``batch_results_ready`` notification) to a
bus of its own. It shares the platform's simulated clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from pipeline_state._memory import InMemoryBus
from pipeline_state._relay import OutboxRelay
from pipeline_state.errors import InvalidMessageError
from pipeline_state.ports import Clock
from pipeline_state.profiles.huleedu.results import InMemoryResultsStore, ResultsQueries, ResultsService

from .platform import Message

__all__ = ["Observed", "ResultsDesk"]


@attrs.frozen
class Observed:
    """One message the results projection handled, and what handling it did."""

    message: Message
    result: str
    announced: tuple[str, ...]


class ResultsDesk:
    """The results projection of the demo (an observer of :class:`~.platform.Platform`)."""

    def __init__(self, clock: Clock) -> None:
        self.store = InMemoryResultsStore()
        self.service = ResultsService(self.store, clock=clock)
        self.bus = InMemoryBus()
        self.relay = OutboxRelay(self.store, self.bus, clock)
        self.queries = ResultsQueries(self.store)
        self.observed: list[Observed] = []

    @property
    def topics(self) -> tuple[str, ...]:
        return self.service.topics

    async def observe(self, message: Message) -> None:
        """Project one message, then relay what that announced. A message that breaks the
        wire contract is recorded as ``invalid:<reason>`` and changes nothing (a consumer
        parks it on the topic's dead-letter topic)."""
        try:
            handled = await self.service.handle_message(message.topic, dict(message.value))
        except InvalidMessageError as exc:
            self.observed.append(Observed(message, f"invalid:{exc.reason}"[:200], ()))
            return
        await self.relay.drain()
        self.observed.append(Observed(message, handled.result, handled.announced))

    def announcements(self, topic: str) -> list[Message]:
        """The messages published from the results outbox on ``topic``, in order."""
        return [Message(m.topic, m.key, dict(m.value)) for m in self.bus.messages(topic)]

    async def batch_views(self, batch_ids: Iterable[str]) -> list[dict[str, Any]]:
        """The read model of each batch (``GET /v1/results/batches/{id}``); unknown ones left out."""
        views = []
        for batch_id in batch_ids:
            view = await self.queries.batch_json(batch_id)
            if view is not None:
                views.append(view)
        return views

    async def class_views(self, class_ids: Iterable[str]) -> list[dict[str, Any]]:
        """The summary of each class (``GET /v1/results/classes/{id}``), sorted, unknown ones left out."""
        views = []
        for class_id in sorted(set(class_ids)):
            view = await self.queries.class_json(class_id)
            if view is not None:
                views.append(view)
        return views
