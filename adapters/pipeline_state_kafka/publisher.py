"""The Kafka transport of the outbox relay: a :class:`~pipeline_state.ports.Publisher`.

:class:`KafkaPublisher` hands every message of a relay pass to an aiokafka producer before
awaiting any acknowledgement, so one pass costs about one round trip, then reports per
message whether the broker acknowledged it (``None``) or what went wrong. aiokafka keeps at
most one request in flight per broker connection, so messages with the same key (same
partition) reach the log in the order given.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any, Literal

import attrs

from pipeline_state.errors import PublishError
from pipeline_state.ports import OutboxMessage

from ._kafka import KafkaError, ProducerLike, new_producer
from .codec import encode_message

__all__ = ["KafkaPublisher", "ProducerSettings", "create_producer"]


@attrs.frozen
class ProducerSettings:
    """Options of the producer shared by the relay and the dead-letter writer.

    ``enable_idempotence`` stays off by default because some Kafka-protocol brokers (the
    Tansu test broker among them) reject idempotent producers; turn it on against Apache
    Kafka. ``request_timeout_ms`` bounds how long a send waits for the broker, so a relay
    pass fails (and the rows are retried later) instead of hanging while the broker is down.
    ``max_request_size`` is aiokafka's limit on one record (and request); ``serve`` gives the
    dead-letter producer its own, ``PIPELINE_STATE_DLQ_MAX_MESSAGE_BYTES``.
    """

    bootstrap_servers: str
    client_id: str = "pipeline-state"
    acks: Literal["all", 0, 1] = "all"
    enable_idempotence: bool = False
    request_timeout_ms: int = 10_000
    linger_ms: int = 0
    retry_backoff_ms: int = 100
    max_batch_size: int = 16_384
    max_request_size: int = 1_048_576
    compression_type: Literal["gzip", "snappy", "lz4", "zstd"] | None = None

    def options(self) -> dict[str, Any]:
        """Keyword arguments for ``AIOKafkaProducer``."""
        return {
            "client_id": self.client_id,
            "acks": self.acks,
            "enable_idempotence": self.enable_idempotence,
            "request_timeout_ms": self.request_timeout_ms,
            "linger_ms": self.linger_ms,
            "retry_backoff_ms": self.retry_backoff_ms,
            "max_batch_size": self.max_batch_size,
            "max_request_size": self.max_request_size,
            "compression_type": self.compression_type,
        }


def create_producer(settings: ProducerSettings) -> ProducerLike:
    """An aiokafka producer configured from ``settings`` (call ``start()`` before use)."""
    return new_producer(settings.bootstrap_servers, **settings.options())


class KafkaPublisher:
    """Publishes outbox messages to Kafka through ``producer`` (started and stopped by the caller).

    ``topic_prefix`` is put before every topic (an environment or tenant namespace); the
    envelope and its ``event_id`` are never changed. Raises
    :class:`~pipeline_state.errors.PublishError` when no message could even be handed to the
    producer; otherwise returns one entry per message.
    """

    def __init__(self, producer: ProducerLike, *, topic_prefix: str = "") -> None:
        self.producer = producer
        self.topic_prefix = topic_prefix

    async def publish(self, messages: Sequence[OutboxMessage]) -> Sequence[BaseException | None]:
        pending: list[Awaitable[object] | BaseException] = []
        failed_keys: set[str | None] = set()
        for message in messages:
            route = message.key
            if route in failed_keys:
                # Never let a later message overtake an earlier one with the same key.
                pending.append(PublishError("an earlier message with the same key was not sent"))
                continue
            record = encode_message(message, topic_prefix=self.topic_prefix)
            try:
                future = await self.producer.send(
                    record.topic, record.value, record.key, headers=list(record.headers)
                )
            except (KafkaError, OSError) as exc:
                failed_keys.add(route)
                pending.append(exc)
                continue
            pending.append(future)
        if messages and all(isinstance(p, BaseException) for p in pending):
            first = pending[0]
            raise PublishError(f"no message could be sent: {type(first).__name__}: {first}") from (
                first if isinstance(first, BaseException) else None
            )
        return [await _outcome(p) for p in pending]


async def _outcome(pending: Awaitable[object] | BaseException) -> BaseException | None:
    if isinstance(pending, BaseException):
        return pending
    try:
        await pending
    except (TimeoutError, KafkaError, OSError) as exc:
        return exc
    return None
