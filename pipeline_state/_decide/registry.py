"""The typed handler registry: one handler per input type, registration and requests
included, and :func:`decide`, which looks the handler up and calls it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import attrs

from pipeline_state._commands import Command
from pipeline_state._model import BatchState
from pipeline_state._profile import Profile
from pipeline_state.errors import BatchNotFoundError

from .journal import Decision

__all__ = ["Handler", "HandlerRegistry", "Inputs"]

P = TypeVar("P")


@attrs.frozen(slots=False)
class Inputs:
    """What a handler decides on besides the payload: the batch (``None`` when unknown), the
    command, the profile and the time."""

    state: BatchState | None
    command: Command
    profile: Profile
    now: datetime

    def require_state(self) -> BatchState:
        """The batch's state; :class:`~pipeline_state.errors.BatchNotFoundError` when unknown."""
        if self.state is None:
            raise BatchNotFoundError(self.command.batch_id)
        return self.state


Handler = Callable[[Inputs, P], Decision]


class HandlerRegistry:
    """Maps each input type to its handler; a type registered twice is a programming error.
    A subclass of a registered type gets its base's handler."""

    __slots__ = ("_handlers", "_inherited_cache")

    def __init__(self) -> None:
        self._handlers: dict[type, Handler[Any]] = {}
        self._inherited_cache: dict[type, Handler[Any]] = {}

    def register(self, kind: type[P], handler: Handler[P]) -> None:
        if kind in self._handlers:
            raise ValueError(f"a handler for {kind.__name__} is already registered")
        self._handlers[kind] = handler
        self._inherited_cache.clear()

    @property
    def kinds(self) -> tuple[type, ...]:
        return tuple(self._handlers)

    def decide(
        self, state: BatchState | None, command: Command, *, profile: Profile, now: datetime
    ) -> Decision:
        payload = command.payload
        kind = type(payload)
        handler = self._handlers.get(kind) or self._inherited_cache.get(kind)
        if handler is None:
            handler = self._inherited(kind)
            if handler is None:
                # A wire model of the profile's inbound topics: read it as its engine input.
                try:
                    payload = profile.inbound.decode(payload)
                except TypeError:
                    raise TypeError(f"decide() has no handler for {kind.__name__}") from None
                command = Command(payload, command.event_id, command.correlation_id)
                handler = self._handlers[type(payload)]
        return handler(Inputs(state, command, profile, now), payload)

    def _inherited(self, kind: type) -> Handler[Any] | None:
        """The handler of the nearest registered base class of ``kind`` (a caller may
        subclass an input or command), remembered for the next time."""
        for base in kind.__mro__[1:]:
            handler = self._handlers.get(base)
            if handler is not None:
                self._inherited_cache[kind] = handler
                return handler
        return None
