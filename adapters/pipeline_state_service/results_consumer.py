"""``serve --consumers results``: the results projection as a consumer beside the orchestrator.

:func:`open_results_consumer` (the built-in ``results`` consumer) opens the results store for
the ``--store`` URL (:func:`~pipeline_state_service.results_stores.open_results_store`) and
runs a :class:`~pipeline_state.profiles.huleedu.results.ResultsService` on the topics it consumes (phase
outcomes, completions, registrations, the orchestrator's phase commands and skipped phases)
in its own consumer group (``<group-id>.results``):

* each record is one unit of work of the service (read model, class deltas, inbox entry and
  announcements committed together); the offset is committed after it;
* bad input (:class:`~pipeline_state.errors.InvalidMessageError`) goes to ``<topic>.DLQ``;
  a store that is down or a compare-and-set that keeps losing is retried without a commit;
* the results store's outbox is relayed like the orchestrator's: ``BatchResultsReadyV1``
  and the ``batch_results_ready`` teacher notification, once per completed run;
* the owner of a batch comes from its registration event or, when the results consumer
  runs beside the pipeline, from the pipeline's own store
  (:class:`~pipeline_state.profiles.huleedu.results.StoreOwnerLookup`);
* every ``results_purge_seconds`` the inbox forgets event ids older than their retention.

:func:`results_factory` builds the same consumer with another clock, cache hook, retention
or store opener (register it under a name of your own with
:func:`~pipeline_state_service.extensions.register_consumer`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from datetime import timedelta

import attrs
from pipeline_state_kafka.handlers import Handled, MessageHandler

from pipeline_state.ports import Clock
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.results import (
    CacheInvalidator,
    ResultsQueries,
    ResultsService,
    RetentionPolicy,
    StoreOwnerLookup,
)

from .extensions import ConsumerFactory, ConsumerPlugin, ServeContext
from .periodic import every
from .results_stores import OpenedResultsStore, OutboxResultsStore, ResultsStoreOpener, open_results_store
from .settings import ServeSettings
from .stores import shown_url

__all__ = [
    "RESULTS_CONSUMER",
    "ResultsConsumer",
    "open_results_consumer",
    "purge_periodically",
    "results_factory",
    "results_handler",
]

log = logging.getLogger("pipeline_state_kafka.results")

RESULTS_CONSUMER = "results"
"""The name of the built-in results consumer (``serve --consumers results``)."""


@attrs.frozen
class ResultsConsumer:
    """What the results consumer exposes (:attr:`ConsumerPlugin.state`): its service, its
    opened store and the queries over it."""

    service: ResultsService
    opened: OpenedResultsStore
    queries: ResultsQueries

    @property
    def store(self) -> OutboxResultsStore:
        return self.opened.store


def results_handler(service: ResultsService) -> MessageHandler:
    """Hands records to ``service``: parse, then one unit of work. The result is the
    service's (``applied``, ``superseded``, ``unchanged``, ``duplicate``); ``emitted``
    counts the announcement messages written to the outbox."""

    async def handle(topic: str, raw: bytes) -> Handled:
        handled = await service.handle_message(topic, raw)
        return Handled(
            handled.event_id, handled.batch_id, handled.correlation_id, handled.result, len(handled.messages)
        )

    return handle


async def purge_periodically(service: ResultsService, period: float, stop: asyncio.Event) -> None:
    """Every ``period`` seconds until ``stop``, purge the inbox; a failing purge is logged and
    tried again next period."""

    async def purge() -> None:
        purged = await service.purge_inbox()
        if purged:
            log.info("results inbox purge forgot %s event id(s)", purged, extra={"purged": purged})

    await every(period, stop, purge, what="results inbox purge", log=log)


def _retention(settings: ServeSettings | None) -> RetentionPolicy:
    policy = RetentionPolicy()
    if settings is None:
        return policy
    hours = settings.results_completion_retention_hours
    return policy.with_retention(Topic.PIPELINE_COMPLETED.value, timedelta(hours=hours))


def results_factory(
    *,
    clock: Clock | None = None,
    cache: CacheInvalidator | None = None,
    retention: RetentionPolicy | None = None,
    purge_seconds: float | None = None,
    store_opener: ResultsStoreOpener | None = None,
) -> ConsumerFactory:
    """A factory of the results consumer. Left out, ``retention`` and ``purge_seconds``
    come from the serve settings (``PIPELINE_STATE_RESULTS_*``), ``clock`` is the system
    clock, ``cache`` the no-op hook and ``store_opener``
    :func:`~pipeline_state_service.results_stores.open_results_store`."""
    opener = store_opener or open_results_store

    async def build(context: ServeContext) -> ConsumerPlugin:
        settings = context.settings
        options = settings.store_options() if settings is not None else {}
        opened = await opener(context.store_url, **options)
        service = ResultsService(
            opened.store,
            clock=clock,
            cache=cache,
            owners=StoreOwnerLookup(context.store),
            retention=retention or _retention(settings),
        )
        period = purge_seconds
        if period is None:
            period = settings.results_purge_seconds if settings is not None else 600.0
        tasks = (functools.partial(purge_periodically, service, period),) if period > 0 else ()
        log.info(
            "results consumer ready to start",
            extra={"store": shown_url(opened.url), "durable": opened.durable, "purge_seconds": period},
        )
        return ConsumerPlugin(
            topics=service.topics,
            handler=results_handler(service),
            outbox=opened.store,
            close=opened.close,
            tasks=tasks,
            state=ResultsConsumer(service, opened, ResultsQueries(opened.store)),
        )

    return build


open_results_consumer: ConsumerFactory = results_factory()
"""The built-in ``results`` consumer (settings from ``serve``)."""
