"""The in-memory engine with the results consumer beside it, shared by the results tests.

The results service is subscribed to the runtime's bus for every topic it consumes that the
engine publishes (registrations, phase commands, pruned-phase notices, completions), and is
handed the same inbound phase-outcome envelopes as the engine (as the result aggregator
consumes them). Every message the consumer saw is kept in :attr:`ResultsPlatform.consumed`.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from pipeline_state import InMemoryRuntime
from pipeline_state.ports import OutboxMessage
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.results import (
    CacheInvalidator,
    InMemoryResultsStore,
    ResultsQueries,
    ResultsService,
    ResultsStore,
)
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

__all__ = ["OUTCOME", "ResultsPlatform"]

OUTCOME = Topic.PHASE_OUTCOME.value


class ResultsPlatform:
    """The engine and a results consumer beside it, writing into ``store`` (in memory by
    default); batches belong to ``owner``."""

    def __init__(
        self,
        store: ResultsStore | None = None,
        *,
        owner: str = "teacher-r",
        cache: CacheInvalidator | None = None,
    ) -> None:
        self.rt = InMemoryRuntime()
        self.env = HuleEduEnvelopes()
        self.owner = owner
        self.store: ResultsStore = InMemoryResultsStore() if store is None else store
        self.results = ResultsService(self.store, clock=self.rt.clock, cache=cache)
        self.queries = ResultsQueries(self.store)
        self.consumed: list[tuple[str, dict[str, Any]]] = []
        for topic in self.results.topics:  # the outcomes are handed over by deliver()
            if topic != OUTCOME:
                self.rt.bus.subscribe(topic, self._on_bus)

    async def _on_bus(self, message: OutboxMessage) -> None:
        await self.consume(message.topic, dict(message.value))

    async def consume(self, topic: str, value: dict[str, Any]) -> None:
        """Hand one message to the results consumer."""
        self.consumed.append((topic, value))
        await self.results.handle_message(topic, value)

    async def deliver(self, topic: str, value: dict[str, Any]) -> list[dict[str, Any]]:
        """Deliver one message to the engine (and an outcome to the consumer too)."""
        out = await self.rt.deliver(topic, value)
        if topic == OUTCOME:
            await self.consume(topic, value)
        return out

    async def ready_batch(self, batch_id: str, essays: int = 3, class_id: str = "class-r") -> list[str]:
        """Register a class batch of ``essays`` essays and bring it to readiness; its essay ids."""
        ids = self.env.item_ids(batch_id, essays)
        await self.deliver(*self.env.register(batch_id, owner=self.owner, group_id=class_id, items=essays))
        await self.deliver(*self.env.provisioned(batch_id, ids))
        await self.deliver(*self.env.group_confirmed(batch_id, class_id, ids))
        await self.deliver(*self.env.items_ready(batch_id, ids))
        return ids

    async def start(self, batch_id: str, pipeline: str) -> str:
        """Request ``pipeline`` on a ready batch; the run's correlation id."""
        corr = str(uuid.uuid4())
        out = await self.deliver(
            *self.env.request(batch_id, pipeline, requested_by=self.owner, correlation_id=corr)
        )
        assert Topic.PIPELINE_DENIED.value not in [m["topic"] for m in out]
        return corr

    async def outcome(
        self, batch_id: str, phase: str, corr: str, *, stamp_offset: float = 0.0, **kw: Any
    ) -> list[dict[str, Any]]:
        """An outcome stamped by the worker at the engine's now plus ``stamp_offset`` seconds."""
        self.env.timestamp = self.rt.clock.now() + timedelta(seconds=stamp_offset)
        return await self.deliver(*self.env.outcome(batch_id, phase, corr, **kw))

    def published(self, topic: str) -> list[dict[str, Any]]:
        """The values the engine's bus carried on ``topic``."""
        return [dict(m.value) for m in self.rt.bus.messages(topic)]
