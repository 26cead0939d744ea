"""Opening the Kafka transport as an async context: a started producer, stopped on exit.

::

    from pipeline_state_kafka import Settings, open

    async with open(Settings(kafka="127.0.0.1:9092")) as kafka:
        relay = OutboxRelay(store, kafka.publisher, SystemClock())
        ...
    # the producer is flushed and stopped here

Without settings, they are read from the ``PIPELINE_STATE_*`` variables; keyword arguments
(field names of :class:`~pipeline_state_kafka.settings.Settings`) override either. The
consumer side is built per use from the same settings
(:meth:`~pipeline_state_kafka.settings.Settings.consumer_settings`,
:class:`~pipeline_state_kafka.consumer.InboundConsumer`), whose ``run`` owns its client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import attrs

from ._kafka import ProducerLike
from ._startup import start_with_retry
from .publisher import KafkaPublisher, ProducerSettings, create_producer
from .settings import Settings

__all__ = ["KafkaTransport", "open"]

log = logging.getLogger("pipeline_state_kafka.transport")


@attrs.frozen
class KafkaTransport:
    """What :func:`open` yields: the settings, the producer and the publisher over it.

    ``started`` is false only when ``stop`` was set before the broker could be reached (the
    producer is then not usable; leave the block)."""

    settings: Settings
    producer: ProducerLike
    publisher: KafkaPublisher
    started: bool = True


@contextlib.asynccontextmanager
async def open(
    settings: Settings | None = None,
    *,
    producer: ProducerSettings | None = None,
    stop: asyncio.Event | None = None,
    **overrides: Any,
) -> AsyncIterator[KafkaTransport]:
    """Start a producer (retrying for ``kafka_startup_timeout_seconds`` while the broker comes
    up, or until ``stop`` is set) and yield it with a
    :class:`~pipeline_state_kafka.publisher.KafkaPublisher`; the producer is stopped when the
    block ends, also when it never connected. ``producer`` replaces the producer options
    derived from the settings. The last connection error propagates when the broker stays
    out of reach."""
    if settings is None:
        settings = Settings.from_environ(**overrides)
    elif overrides:
        settings = settings.replace(**overrides)
    client = create_producer(producer or settings.producer_settings())
    try:
        started = await start_with_retry(
            client.start, "kafka producer", settings.kafka_startup_timeout_seconds, stop
        )
        yield KafkaTransport(
            settings, client, KafkaPublisher(client, topic_prefix=settings.topic_prefix), started
        )
    finally:
        try:
            await client.stop()
        except Exception as exc:  # a producer that never connected, or a broker gone meanwhile
            log.warning("kafka producer did not stop cleanly: %s: %s", type(exc).__name__, exc)
