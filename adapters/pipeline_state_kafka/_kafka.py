"""The one place that touches aiokafka's untyped API.

aiokafka ships no type information, so its classes are imported here once and described by
the small Protocols below; the rest of the package only sees these typed shapes. Anything
``Any`` stays inside this module.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from typing import Any, Protocol

import aiokafka  # type: ignore[import-untyped]
import aiokafka.admin  # type: ignore[import-untyped]
import aiokafka.errors  # type: ignore[import-untyped]

__all__ = [
    "TOPIC_ALREADY_EXISTS",
    "AdminLike",
    "CommitFailedError",
    "ConsumerLike",
    "Headers",
    "IllegalStateError",
    "KafkaError",
    "MessageSizeTooLargeError",
    "ProducerLike",
    "RebalanceHooks",
    "RecordLike",
    "RecordTooLargeError",
    "TopicPartition",
    "assign_from_start",
    "leave_group",
    "new_admin",
    "new_consumer",
    "new_producer",
    "retrieve_outcome",
    "stop_consumer",
    "subscribe",
    "topic_partition",
]

Headers = Sequence[tuple[str, bytes]]

KafkaError: type[Exception] = aiokafka.errors.KafkaError
CommitFailedError: type[Exception] = aiokafka.errors.CommitFailedError
MessageSizeTooLargeError: type[Exception] = aiokafka.errors.MessageSizeTooLargeError
RecordTooLargeError: type[Exception] = aiokafka.errors.RecordTooLargeError
IllegalStateError: type[Exception] = aiokafka.errors.IllegalStateError
TOPIC_ALREADY_EXISTS: int = aiokafka.errors.TopicAlreadyExistsError.errno


class TopicPartition(Protocol):
    """A topic and partition pair (aiokafka's ``TopicPartition`` named tuple)."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...


def topic_partition(topic: str, partition: int) -> TopicPartition:
    """Build aiokafka's ``TopicPartition``."""
    tp: TopicPartition = aiokafka.TopicPartition(topic, partition)
    return tp


class RecordLike(Protocol):
    """The fields of a consumed record the package reads."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...

    @property
    def key(self) -> bytes | None: ...

    @property
    def value(self) -> bytes | None: ...

    @property
    def headers(self) -> Headers: ...


class ProducerLike(Protocol):
    """The part of ``AIOKafkaProducer`` the package uses."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def flush(self) -> None: ...

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        *,
        headers: Headers | None = None,
    ) -> Awaitable[object]: ...

    async def send_and_wait(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        *,
        headers: Headers | None = None,
    ) -> object: ...


class ConsumerLike(Protocol):
    """The part of ``AIOKafkaConsumer`` the package uses."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> Mapping[TopicPartition, Sequence[RecordLike]]: ...

    async def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None: ...

    def seek(self, partition: TopicPartition, offset: int) -> None: ...

    async def seek_to_committed(self, *partitions: TopicPartition) -> Mapping[TopicPartition, int | None]: ...

    async def seek_to_beginning(self, *partitions: TopicPartition) -> object: ...

    async def position(self, partition: TopicPartition) -> int: ...

    def assignment(self) -> set[TopicPartition]: ...


class RebalanceHooks(Protocol):
    """What the consumer does when partitions are taken away or handed out."""

    async def partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None: ...

    async def partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None: ...


class _Listener(aiokafka.ConsumerRebalanceListener):  # type: ignore[misc]
    """Adapts :class:`RebalanceHooks` to aiokafka's listener base class."""

    def __init__(self, hooks: RebalanceHooks) -> None:
        self._hooks = hooks

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._hooks.partitions_revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self._hooks.partitions_assigned(list(assigned))


def new_producer(bootstrap_servers: str, **options: Any) -> ProducerLike:
    """An ``AIOKafkaProducer`` (not started)."""
    producer: ProducerLike = aiokafka.AIOKafkaProducer(bootstrap_servers=bootstrap_servers, **options)
    return producer


def new_consumer(bootstrap_servers: str, **options: Any) -> ConsumerLike:
    """An ``AIOKafkaConsumer`` with no subscription (not started)."""
    consumer: ConsumerLike = aiokafka.AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, **options)
    return consumer


async def stop_consumer(consumer: ConsumerLike) -> None:
    """Stop ``consumer`` (its errors raised here, but the one below).

    aiokafka's ``stop()`` cancels the fetch requests in flight and awaits them; a request
    cancelled in its retry back-off (its broker unreachable) raises its ``CancelledError``
    out of ``stop()``, as if the caller had been cancelled. The stop runs as a task of its
    own, so that error ends there; the caller's own cancellation still reaches the caller
    (the stop then goes on in the background)."""
    stopping = asyncio.ensure_future(consumer.stop())
    stopping.add_done_callback(retrieve_outcome)
    await asyncio.wait([stopping])
    if not stopping.cancelled():
        stopping.result()


def retrieve_outcome(future: asyncio.Future[Any]) -> None:
    """Retrieve a finished stop's outcome (no "exception never retrieved" for one the caller
    no longer waits for): a failure to stop cleanly changes nothing then."""
    if not future.cancelled():
        future.exception()


async def assign_from_start(consumer: ConsumerLike, topics: Sequence[str]) -> list[TopicPartition]:
    """Assign every partition of ``topics`` (which must exist) to a started, group-less
    ``consumer`` and seek to the beginning; returns the partitions."""
    untyped: Any = consumer
    await untyped.topics()  # refreshes the cluster metadata
    parts: list[TopicPartition] = []
    for topic in topics:
        for partition in sorted(untyped.partitions_for_topic(topic) or ()):
            parts.append(topic_partition(topic, partition))
    untyped.assign(parts)
    if parts:
        await untyped.seek_to_beginning(*parts)
    return parts


async def leave_group(consumer: ConsumerLike) -> None:
    """Leave the consumer group before ``stop()`` when aiokafka would not.

    aiokafka only sends LeaveGroup for generations above 0 (Apache Kafka starts at 1); some
    Kafka-protocol brokers start at 0, and without a LeaveGroup the next member waits a
    whole session timeout. Best effort: any failure is ignored (``stop()`` follows).
    """
    coordinator: Any = getattr(consumer, "_coordinator", None)
    if coordinator is None or getattr(coordinator, "generation", None) != 0:
        return
    member_id = getattr(coordinator, "member_id", "")
    if not member_id or getattr(coordinator, "coordinator_id", None) is None:
        return
    try:
        from aiokafka.consumer.group_coordinator import LeaveGroupRequest  # type: ignore[import-untyped]

        await coordinator._send_req(LeaveGroupRequest(coordinator.group_id, member_id))
    except Exception:  # best effort, as aiokafka's own LeaveGroup
        return
    coordinator.reset_generation()


def subscribe(consumer: ConsumerLike, topics: Sequence[str], hooks: RebalanceHooks) -> None:
    """Subscribe ``consumer`` to ``topics`` with ``hooks`` as its rebalance listener."""
    untyped: Any = consumer
    untyped.subscribe(topics=list(topics), listener=_Listener(hooks))


class AdminLike(Protocol):
    """The admin operations the package uses."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def create_topics(self, topics: Sequence[tuple[str, int, int]]) -> dict[str, int]: ...

    async def message_limits(self, topics: Sequence[str]) -> dict[str, int]: ...


class _Admin:
    """``AIOKafkaAdminClient`` with a typed ``create_topics`` returning error codes per topic."""

    def __init__(self, bootstrap_servers: str, **options: Any) -> None:
        self._client: Any = aiokafka.admin.AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, **options)

    async def start(self) -> None:
        await self._client.start()

    async def close(self) -> None:
        await self._client.close()

    async def create_topics(self, topics: Sequence[tuple[str, int, int]]) -> dict[str, int]:
        new = [
            aiokafka.admin.NewTopic(name, partitions, replication) for name, partitions, replication in topics
        ]
        response: Any = await self._client.create_topics(new)
        codes: dict[str, int] = {}
        for entry in response.topic_errors:
            codes[str(entry[0])] = int(entry[1])
        return codes

    async def message_limits(self, topics: Sequence[str]) -> dict[str, int]:
        """The size limits the cluster reports: ``{"broker <id>": message.max.bytes,
        "<topic>": max.message.bytes}`` for every broker and each of ``topics`` (entries the
        broker does not report are left out). Raises when the broker does not support
        DescribeConfigs."""
        from aiokafka.admin.config_resource import (  # type: ignore[import-untyped]
            ConfigResource,
            ConfigResourceType,
        )

        brokers = [str(b.nodeId) for b in self._client._client.cluster.brokers()]
        resources = [
            ConfigResource(ConfigResourceType.BROKER, b, {"message.max.bytes": None}) for b in brokers
        ]
        resources += [
            ConfigResource(ConfigResourceType.TOPIC, t, {"max.message.bytes": None}) for t in topics
        ]
        responses: Any = await self._client.describe_configs(resources)
        limits: dict[str, int] = {}
        for response in responses:
            for resource in response.resources:
                error_code, _, resource_type, name, entries = resource[:5]
                if error_code:
                    continue
                for entry in entries:
                    if entry[0] in ("message.max.bytes", "max.message.bytes") and entry[1] is not None:
                        label = f"broker {name}" if int(resource_type) == 4 else str(name)
                        limits[label] = int(entry[1])
        return limits


def new_admin(bootstrap_servers: str, **options: Any) -> AdminLike:
    """An admin client (not started)."""
    return _Admin(bootstrap_servers, **options)
