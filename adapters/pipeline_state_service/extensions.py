"""Extra consumers that ``serve --consumers NAME ...`` runs beside the orchestrator.

A consumer is contributed by a factory: an async callable that receives a
:class:`ServeContext` and returns a :class:`ConsumerPlugin` (topics, a
:data:`~pipeline_state_kafka.handlers.MessageHandler`, optionally its own outbox to relay).
``NAME`` is looked up, in order, in the registry filled by :func:`register_consumer`, among
the consumers this package ships (:data:`BUILTIN_CONSUMERS`: ``results``) and in the
``pipeline_state.consumers`` entry-point group: an installed package contributes a consumer
by declaring an entry point there (discovery is by entry points only; a ``module:attribute``
name is not imported).
Each plugin consumes in its own group (``<group-id>.<name>``) with the same commit and
dead-letter rules as the orchestrator; its background ``tasks`` run until the stop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from importlib.metadata import entry_points
from types import MappingProxyType
from typing import Any

import attrs
from pipeline_state_kafka.handlers import MessageHandler

from pipeline_state._service import PipelineService
from pipeline_state.ports import Outbox, Store

from .errors import UnknownConsumerError
from .settings import ServeSettings

__all__ = [
    "BUILTIN_CONSUMERS",
    "ENTRY_POINT_GROUP",
    "BackgroundTask",
    "ConsumerFactory",
    "ConsumerPlugin",
    "ServeContext",
    "UnknownConsumerError",
    "register_consumer",
    "resolve_consumer",
]

ENTRY_POINT_GROUP = "pipeline_state.consumers"

BUILTIN_CONSUMERS: Mapping[str, str] = MappingProxyType(
    {"results": "pipeline_state_service.results_consumer:open_results_consumer"}
)
"""Consumers shipped with this package: name -> where its factory lives (imported when asked
for)."""


@attrs.frozen
class ServeContext:
    """What a consumer factory may use: the store URL and the opened store and service, and
    (under ``serve``) the whole settings, for store options and tuning."""

    store_url: str
    store: Store
    outbox: Outbox
    service: PipelineService
    topic_prefix: str = ""
    settings: ServeSettings | None = None


BackgroundTask = Callable[[asyncio.Event], Coroutine[Any, Any, None]]
"""A coroutine function run beside the consumer until the stop event given to it is set."""


@attrs.frozen
class ConsumerPlugin:
    """A consumer to run: contract topic names, its handler, and what to clean up.

    ``outbox`` is relayed by ``serve`` too when it is not the orchestrator's own. ``tasks``
    run beside the consumer until the stop (periodic maintenance); one that raises stops
    the service like a failed consumer. ``state`` is whatever the plugin exposes to
    embedders and tests (the results consumer: its read model and queries);
    :attr:`~pipeline_state_service.runner.ServiceRunner.plugins` holds the plugins by name.
    """

    topics: tuple[str, ...]
    handler: MessageHandler
    outbox: Outbox | None = None
    close: Callable[[], Awaitable[None]] | None = None
    tasks: tuple[BackgroundTask, ...] = ()
    state: Any = None


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
    if name == "results":
        from .results_consumer import open_results_consumer

        return open_results_consumer
    found = [entry for entry in entry_points(group=ENTRY_POINT_GROUP) if entry.name == name]
    if found:
        try:
            loaded: ConsumerFactory = found[0].load()
        except (ImportError, AttributeError) as exc:
            raise UnknownConsumerError(name, str(exc)) from exc
        return loaded
    known = sorted({*_REGISTRY, *BUILTIN_CONSUMERS, *(e.name for e in entry_points(group=ENTRY_POINT_GROUP))})
    raise UnknownConsumerError(name, f"known consumers: {', '.join(known) or 'none'}")
