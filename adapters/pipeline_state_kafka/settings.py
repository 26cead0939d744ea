"""Settings of the Kafka adapter: bootstrap servers, topics, consumer, producer, dead letters.

Read from ``PIPELINE_STATE_*`` variables (see ``pipeline_state._settings.EnvironmentSettings``)
or given in code. :meth:`Settings.consumer_settings` and :meth:`Settings.producer_settings`
give the options of :class:`~pipeline_state_kafka.consumer.InboundConsumer` and of the
producer; :func:`~pipeline_state_kafka.resources.open` starts a producer from them. The
package README's table of variables is generated from this model.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field, model_validator

from pipeline_state._flags import parse_flag
from pipeline_state._settings import EnvironmentSettings

from .consumer import ConsumerSettings
from .dlq import DEFAULT_DLQ_MAX_MESSAGE_BYTES
from .errors import KafkaSettingsError
from .publisher import ProducerSettings

__all__ = ["MAX_MS", "TOPIC_PREFIX_PATTERN", "Settings", "check_bootstrap"]


def _flag(value: Any) -> Any:
    return parse_flag(value) if isinstance(value, str) else value


def _acks(value: Any) -> Any:
    if value in ("0", "1"):
        return int(value)
    if isinstance(value, str) and value != "all":
        raise ValueError(f"expected all, 0 or 1, got {value!r}")
    return value


Flag = Annotated[bool, BeforeValidator(_flag)]

MAX_MS = 2**31 - 1
"""The longest time in milliseconds a Kafka client takes (a 32-bit signed integer on the wire
and in the client's own structures: larger values fail in the client, at start or at the
first fetch)."""

TOPIC_PREFIX_PATTERN = r"^[A-Za-z0-9._-]*$"
"""The characters a topic prefix may hold: those of a Kafka topic name."""

_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)$")


def check_bootstrap(value: str, name: str) -> str:
    """``value`` if it is a list of ``HOST:PORT`` (1-65535) separated by commas, else
    :class:`KafkaSettingsError` naming ``name`` (the entry is shown unless it holds an ``@``,
    which may be a password)."""
    for index, entry in enumerate(value.split(","), 1):
        entry = entry.strip()
        host, sep, port = entry.rpartition(":")
        if sep and _HOST.match(host) and port.isascii() and port.isdigit() and 0 < int(port) < 65536:
            continue
        shown = "(not shown: it holds an @)" if "@" in entry else repr(entry)
        raise KafkaSettingsError(
            f"{name}: entry {index} of {value.count(',') + 1} is not HOST:PORT (a port from 1 to 65535, "
            f"no scheme, no credentials): {shown}"
        )
    return value


class Settings(EnvironmentSettings):
    """How the Kafka transport reaches the broker and names, creates and reads topics."""

    error: ClassVar[type[Exception]] = KafkaSettingsError

    kafka: str | None = Field(
        default=None,
        description="bootstrap servers, `HOST:PORT[,HOST:PORT]` (`serve --kafka` overrides it; one of "
        "the two is required)",
    )
    topic_prefix: str = Field(
        default="",
        max_length=100,
        pattern=TOPIC_PREFIX_PATTERN,
        description="put before every topic name (an environment or tenant namespace); stripped "
        "before the service sees the topic; the characters of a Kafka topic name (ASCII letters, "
        "digits, `.`, `_`, `-`), at most 100",
    )
    create_topics: Flag = Field(
        default=True, description="create missing inbound, dead-letter and outbound topics at start"
    )
    topic_partitions: int = Field(
        default=4, ge=1, le=2**31 - 1, description="partitions of topics it creates"
    )
    replication_factor: int = Field(
        default=1, ge=1, le=2**15 - 1, description="replication factor of topics it creates"
    )
    dlq_max_message_bytes: int = Field(
        default=DEFAULT_DLQ_MAX_MESSAGE_BYTES,
        ge=4096,
        description="size limit of a dead letter (the DLQ producer's `max_request_size`); lowered at "
        "start to the broker's `message.max.bytes`/topic `max.message.bytes` when those are known and "
        "smaller; larger letters are truncated copies",
    )
    kafka_client_id: str = Field(
        default="pipeline-state", min_length=1, description="Kafka client id of the consumer and producer"
    )
    kafka_auto_offset_reset: Literal["earliest", "latest"] = Field(
        default="earliest", description="where a group without committed offsets starts"
    )
    kafka_startup_timeout_seconds: float = Field(
        default=30.0,
        ge=0,
        allow_inf_nan=False,
        description="how long to keep trying to reach the broker at start (then exit 1)",
    )
    kafka_max_records: int = Field(
        default=500, ge=1, le=100_000, description="records per fetch (one offset commit per fetch)"
    )
    kafka_poll_timeout_ms: int = Field(
        default=200,
        le=MAX_MS,
        ge=0,
        description="longest wait for records per loop turn (bounds the reaction to a stop)",
    )
    kafka_fetch_max_wait_ms: int = Field(
        default=100,
        le=MAX_MS,
        ge=0,
        description="how long the broker may hold a fetch; Apache Kafka answers as soon as data arrives, "
        "some brokers always wait this long, so it bounds latency there",
    )
    kafka_session_timeout_ms: int = Field(
        default=10_000,
        le=MAX_MS,
        ge=1,
        description="group session timeout: how fast a dead member's partitions move",
    )
    kafka_heartbeat_ms: int = Field(
        default=3_000,
        le=MAX_MS,
        ge=1,
        description="group heartbeat period (below a third of the session timeout)",
    )
    kafka_max_poll_interval_ms: int = Field(
        default=300_000,
        le=MAX_MS,
        ge=1,
        description="longest time between fetches before the member is considered stuck",
    )
    kafka_metadata_max_age_ms: int = Field(
        default=30_000,
        le=MAX_MS,
        ge=0,
        description="metadata refresh period (how soon re-created topics are seen)",
    )
    kafka_partition_concurrency: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="lanes of one fetch handled at once: the fetch's records, in timestamp order, are "
        "split by key (batch id) into this many lanes, so one batch's records stay in time order in one "
        "lane while other batches commit concurrently; unset: 1 on a store with one writer at a time "
        "(SQLite), else 4",
    )
    kafka_acks: Annotated[Literal["all", 0, 1], BeforeValidator(_acks)] = Field(
        default="all", description="producer acknowledgements: `all`, `1` or `0`"
    )
    kafka_idempotence: Flag = Field(
        default=False,
        description="idempotent producer; off because some Kafka-protocol brokers (the Tansu test "
        "broker) reject it; turn it on against Apache Kafka",
    )
    kafka_request_timeout_ms: int = Field(
        default=10_000,
        le=MAX_MS,
        ge=1,
        description="how long a producer send waits for the broker before the relay counts a failure",
    )
    kafka_linger_ms: int = Field(default=0, ge=0, le=MAX_MS, description="producer batching delay")

    @model_validator(mode="after")
    def _heartbeat_within_session(self) -> Settings:
        if self.kafka_heartbeat_ms >= self.kafka_session_timeout_ms:
            raise ValueError(
                f"PIPELINE_STATE_KAFKA_HEARTBEAT_MS: {self.kafka_heartbeat_ms} must be below the session "
                f"timeout (PIPELINE_STATE_KAFKA_SESSION_TIMEOUT_MS, {self.kafka_session_timeout_ms}), "
                "a third of it or less"
            )
        return self

    def bootstrap_servers(self) -> str:
        """``kafka``; raises :class:`KafkaSettingsError` when it is not set."""
        if not self.kafka:
            raise KafkaSettingsError(f"{self.variable('kafka')}: not set (or give --kafka)")
        return check_bootstrap(self.kafka, f"{self.variable('kafka')} (or --kafka)")

    def consumer_settings(self, *, group_id: str = "pipeline-state", **options: Any) -> ConsumerSettings:
        """The options of :class:`~pipeline_state_kafka.consumer.InboundConsumer` (``options``:
        other fields of :class:`~pipeline_state_kafka.consumer.ConsumerSettings`)."""
        return ConsumerSettings(
            self.bootstrap_servers(),
            group_id=group_id,
            topic_prefix=self.topic_prefix,
            client_id=self.kafka_client_id,
            auto_offset_reset=self.kafka_auto_offset_reset,
            max_records=self.kafka_max_records,
            poll_timeout_ms=self.kafka_poll_timeout_ms,
            fetch_max_wait_ms=self.kafka_fetch_max_wait_ms,
            session_timeout_ms=self.kafka_session_timeout_ms,
            heartbeat_interval_ms=self.kafka_heartbeat_ms,
            max_poll_interval_ms=self.kafka_max_poll_interval_ms,
            metadata_max_age_ms=self.kafka_metadata_max_age_ms,
            partition_concurrency=self.kafka_partition_concurrency,
            startup_timeout_seconds=self.kafka_startup_timeout_seconds,
            **options,
        )

    def producer_settings(self, **options: Any) -> ProducerSettings:
        """The options of the producer (``options``: other fields of
        :class:`~pipeline_state_kafka.publisher.ProducerSettings`)."""
        return ProducerSettings(
            self.bootstrap_servers(),
            client_id=self.kafka_client_id,
            acks=self.kafka_acks,
            enable_idempotence=self.kafka_idempotence,
            request_timeout_ms=self.kafka_request_timeout_ms,
            linger_ms=self.kafka_linger_ms,
            **options,
        )
