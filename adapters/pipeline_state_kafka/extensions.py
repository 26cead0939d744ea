"""Extra consumers that ``serve --consumers NAME ...`` runs beside the orchestrator.

A consumer is contributed by a factory: an async callable that receives a
:class:`ServeContext` and returns a :class:`ConsumerPlugin` (topics, a
:data:`~pipeline_state_kafka.handlers.MessageHandler`, optionally its own outbox to relay).
``NAME`` is looked up, in order, in the registry filled by :func:`register_consumer`, in the
``pipeline_state.consumers`` entry-point group, and finally read as ``module:attribute``.
Each plugin consumes in its own group (``<group-id>.<name>``) with the same commit and
dead-letter rules as the orchestrator.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from importlib.metadata import entry_points

import attrs

from pipeline_state.errors import PipelineStateError
from pipeline_state.ports import Outbox, Store
from pipeline_state.service import PipelineService

from .handlers import MessageHandler

__all__ = [
    "ENTRY_POINT_GROUP",
    "ConsumerFactory",
    "ConsumerPlugin",
    "ServeContext",
    "UnknownConsumerError",
    "register_consumer",
    "resolve_consumer",
]

ENTRY_POINT_GROUP = "pipeline_state.consumers"


class UnknownConsumerError(PipelineStateError):
    """``--consumers`` names a consumer that no registry, entry point or module provides."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        super().__init__(f"unknown consumer {name!r}: {reason}")


@attrs.frozen
class ServeContext:
    """What a consumer factory may use: the store URL and the opened store and service."""

    store_url: str
    store: Store
    outbox: Outbox
    service: PipelineService
    topic_prefix: str = ""


@attrs.frozen
class ConsumerPlugin:
    """A consumer to run: contract topic names, its handler, and what to clean up.

    ``outbox`` is relayed by ``serve`` too when it is not the orchestrator's own.
    """

    topics: tuple[str, ...]
    handler: MessageHandler
    outbox: Outbox | None = None
    close: Callable[[], Awaitable[None]] | None = None


ConsumerFactory = Callable[[ServeContext], Awaitable[ConsumerPlugin]]

_REGISTRY: dict[str, ConsumerFactory] = {}


def register_consumer(name: str, factory: ConsumerFactory) -> None:
    """Make ``serve --consumers name`` run the consumer ``factory`` builds."""
    if not name or name != name.strip():
        raise ValueError("a consumer name must be a non-empty word")
    _REGISTRY[name] = factory


def resolve_consumer(name: str) -> ConsumerFactory:
    """The factory of ``name``; raises :class:`UnknownConsumerError`."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name == name:
            loaded: ConsumerFactory = entry.load()
            return loaded
    module_name, sep, attribute = name.partition(":")
    if not sep:
        known = sorted({*_REGISTRY, *(e.name for e in entry_points(group=ENTRY_POINT_GROUP))})
        raise UnknownConsumerError(name, f"known consumers: {', '.join(known) or 'none'}")
    try:
        factory: ConsumerFactory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise UnknownConsumerError(name, str(exc)) from exc
    return factory
