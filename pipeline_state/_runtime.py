"""The in-process runtime: the whole engine with in-memory adapters, behind four calls.

>>> import asyncio
>>> from pipeline_state import InMemoryRuntime
>>> rt = InMemoryRuntime()
>>> asyncio.run(rt.snapshot("nope"))
Traceback (most recent call last):
...
pipeline_state.errors.BatchNotFoundError: batch 'nope' not found
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._clock import ManualClock
from ._commands import OperatorCommand
from ._memory import InMemoryBus, InMemoryStore
from ._profile import Profile
from ._relay import OutboxRelay
from ._service import HandleResult, PipelineService
from ._snapshot import snapshot
from ._wire import WireModel
from .profiles import default_profile

__all__ = ["InMemoryRuntime"]

Message = dict[str, Any]


class InMemoryRuntime:
    """Service, store, bus, relay and a manual clock wired together in memory.

    :meth:`deliver` hands one inbound message to the service and returns the messages that
    delivery emitted, in order, after relaying them to :attr:`bus`.
    """

    def __init__(self, profile: Profile | None = None, *, clock: ManualClock | None = None) -> None:
        self.clock = clock or ManualClock()
        self.store = InMemoryStore()
        self.bus = InMemoryBus()
        self.service = PipelineService(self.store, profile=profile or default_profile(), clock=self.clock)
        self.relay = OutboxRelay(self.store, self.bus, self.clock)

    async def deliver(self, topic: str, envelope: Mapping[str, Any] | str | bytes) -> list[Message]:
        """Handle one message received on ``topic``; returns what it emitted.

        Bad input raises a :class:`~pipeline_state.errors.PipelineStateError` subclass and
        changes nothing. A redelivered event id returns an empty list.
        """
        return await self._emitted(await self.service.handle_message(topic, envelope))

    async def execute(
        self,
        payload: OperatorCommand | WireModel,
        *,
        event_id: str | None = None,
        correlation_id: str | None = None,
    ) -> list[Message]:
        """Run an operator command (cancel, retry, archive...); returns what it emitted."""
        result = await self.service.execute(payload, event_id=event_id, correlation_id=correlation_id)
        return await self._emitted(result)

    async def expire_overdue(self) -> list[Message]:
        """Re-send or fail overdue phases at the clock's current time; returns what that
        emitted, re-sent commands included (with their original event ids)."""
        out: list[Message] = []
        for result in await self.service.expire_overdue():
            out.extend(await self._emitted(result))
        return out

    async def snapshot(self, batch_id: str) -> dict[str, Any]:
        """The batch as a JSON-serialisable dict; raises BatchNotFoundError when unknown."""
        return snapshot(
            await self.service.get_batch(batch_id),
            self.service.profile.view_names,
            self.service.profile.state_names,
        )

    async def _emitted(self, result: HandleResult) -> list[Message]:
        """The rows ``result`` wrote (its own, then those of the waiting facts it resumed),
        then the commands it re-sent, as the bus received them."""
        before = self.bus.count()
        await self.relay.drain()
        out = [m.as_dict() for m in result.all_messages]
        resent = () if result.decision is None else result.decision.resend
        if resent:
            wanted = set(resent)
            out += [m.as_dict() for m in self.bus.messages(since=before) if m.event_id in wanted]
        return out
