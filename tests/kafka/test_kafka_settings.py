"""The Kafka adapter's shape: its settings from the old variables, its error, ``open`` against
the real broker, and its documented public names."""

from __future__ import annotations

import uuid
from pathlib import Path

import pipeline_state_kafka
import pytest
from pipeline_state_kafka import (
    KafkaSettingsError,
    Settings,
    dlq,
    ensure_topics,
    handlers,
    open,
    publisher,
    resources,
    topics,
)
from pipeline_state_kafka import consumer as kafka_consumer
from pipeline_state_kafka import errors as kafka_errors
from pipeline_state_kafka import settings as kafka_settings
from pipeline_state_kafka._kafka import KafkaError as DriverKafkaError
from pipeline_state_kafka._kafka import ProducerLike as DriverProducerLike
from pipeline_state_kafka.testing import Collector, LocalBroker

from pipeline_state.errors import PipelineStateError
from pipeline_state.ports import OutboxMessage
from tests.public_names import assert_public_names

README = Path(pipeline_state_kafka.__file__).parent / "README.md"


def test_kafka_settings_read_the_variables_deployments_set() -> None:
    settings = Settings.from_environ(
        {
            "PIPELINE_STATE_KAFKA": "k1:9092,k2:9092",
            "PIPELINE_STATE_TOPIC_PREFIX": "dev.",
            "PIPELINE_STATE_KAFKA_CLIENT_ID": "orchestrator",
            "PIPELINE_STATE_KAFKA_AUTO_OFFSET_RESET": "latest",
            "PIPELINE_STATE_KAFKA_MAX_RECORDS": "50",
            "PIPELINE_STATE_KAFKA_HEARTBEAT_MS": "700",
            "PIPELINE_STATE_KAFKA_PARTITION_CONCURRENCY": "2",
            "PIPELINE_STATE_KAFKA_STARTUP_TIMEOUT_SECONDS": "3",
            "PIPELINE_STATE_KAFKA_ACKS": "1",
            "PIPELINE_STATE_KAFKA_IDEMPOTENCE": "yes",
            "PIPELINE_STATE_KAFKA_REQUEST_TIMEOUT_MS": "2500",
            "PIPELINE_STATE_KAFKA_LINGER_MS": "5",
            "PIPELINE_STATE_CREATE_TOPICS": "off",
            "PIPELINE_STATE_DLQ_MAX_MESSAGE_BYTES": "65536",
        }
    )
    consumer = settings.consumer_settings(group_id="g")
    assert (consumer.bootstrap_servers, consumer.group_id, consumer.topic_prefix) == (
        "k1:9092,k2:9092",
        "g",
        "dev.",
    )
    assert (consumer.client_id, consumer.auto_offset_reset, consumer.max_records) == (
        "orchestrator",
        "latest",
        50,
    )
    assert (consumer.heartbeat_interval_ms, consumer.partition_concurrency) == (700, 2)
    assert consumer.startup_timeout_seconds == 3.0
    producer = settings.producer_settings()
    assert (producer.acks, producer.enable_idempotence, producer.client_id) == (1, True, "orchestrator")
    assert (producer.request_timeout_ms, producer.linger_ms) == (2500, 5)
    assert (settings.create_topics, settings.dlq_max_message_bytes) == (False, 65536)
    defaults = Settings.from_environ({}, kafka="h:9092")
    assert defaults.producer_settings().acks == "all"
    assert defaults.producer_settings().enable_idempotence is False
    assert defaults.consumer_settings().max_records == 500


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("PIPELINE_STATE_KAFKA_MAX_RECORDS", "lots", "got 'lots'"),
        ("PIPELINE_STATE_KAFKA_MAX_RECORDS", "0", "greater than or equal to 1"),
        ("PIPELINE_STATE_KAFKA_ACKS", "2", "expected all, 0 or 1, got '2'"),
        ("PIPELINE_STATE_KAFKA_IDEMPOTENCE", "perhaps", "expected a boolean"),
        ("PIPELINE_STATE_KAFKA_AUTO_OFFSET_RESET", "middle", "'earliest' or 'latest'"),
        ("PIPELINE_STATE_DLQ_MAX_MESSAGE_BYTES", "100", "greater than or equal to 4096"),
        # Were unchecked: a heartbeat no shorter than the session lets the group drop a live
        # member again and again; a prefix a topic name cannot hold failed only at the broker.
        ("PIPELINE_STATE_KAFKA_HEARTBEAT_MS", "10000", "must be below the session timeout"),
        ("PIPELINE_STATE_TOPIC_PREFIX", "dev/", "should match pattern"),
        ("PIPELINE_STATE_TOPIC_PREFIX", "x" * 101, "at most 100 characters"),
    ],
)
def test_a_wrong_kafka_value_is_the_adapters_error_naming_the_variable(
    variable: str, value: str, says: str
) -> None:
    with pytest.raises(KafkaSettingsError) as caught:
        Settings.from_environ({variable: value})
    assert str(caught.value).startswith(f"{variable}: ")
    assert says in str(caught.value)
    assert isinstance(caught.value, PipelineStateError)
    assert isinstance(caught.value, ValueError)


def test_kafka_settings_without_bootstrap_servers_say_which_variable() -> None:
    with pytest.raises(KafkaSettingsError, match="PIPELINE_STATE_KAFKA: not set"):
        Settings.from_environ({}).producer_settings()


async def test_kafka_open_publishes_through_the_broker_and_stops_the_producer(
    broker: LocalBroker, prefix: str
) -> None:
    await ensure_topics(broker.bootstrap, [f"{prefix}settings.probe"], partitions=1)
    settings = Settings.from_environ({"PIPELINE_STATE_TOPIC_PREFIX": prefix}, kafka=broker.bootstrap)
    event_id = str(uuid.uuid4())
    message = OutboxMessage(event_id, "settings.probe", "b1", {"event_id": event_id, "data": {"n": 1}})
    async with Collector(broker.bootstrap, ["settings.probe"], topic_prefix=prefix) as seen:
        async with open(settings) as kafka:
            assert kafka.started
            assert kafka.settings is settings
            assert await kafka.publisher.publish([message]) == [None]
            await seen.wait_for(lambda c: any(r.key == "b1" for r in c.records), within=20)
        assert [r.value for r in seen.records] == [{"event_id": event_id, "data": {"n": 1}}]
    assert _stopped(kafka.producer)  # the producer was stopped when the block ended


async def test_kafka_open_stops_the_producer_when_the_block_fails(broker: LocalBroker) -> None:
    used: list[object] = []

    async def failing() -> None:
        async with open(Settings.from_environ({}, kafka=broker.bootstrap)) as kafka:
            assert kafka.started
            assert not _stopped(kafka.producer)
            used.append(kafka.producer)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await failing()
    assert _stopped(used[0])


def _stopped(producer: object) -> bool:
    """Whether aiokafka's producer was stopped (its ``_closed`` flag: ``False`` once started,
    ``True`` once stopped; a send after ``stop`` would wait for metadata forever)."""
    closed = vars(producer)["_closed"]
    assert isinstance(closed, bool)
    return closed


def test_kafka_public_names_are_the_documented_ones() -> None:
    assert_public_names(
        "pipeline_state_kafka",
        README,
        {
            "ConsumerSettings": kafka_consumer.ConsumerSettings,
            "DeadLetterWriter": dlq.DeadLetterWriter,
            "InboundConsumer": kafka_consumer.InboundConsumer,
            "KafkaError": DriverKafkaError,
            "KafkaPublisher": publisher.KafkaPublisher,
            "KafkaSettingsError": kafka_errors.KafkaSettingsError,
            "KafkaTransport": resources.KafkaTransport,
            "NeverAppliesError": kafka_errors.NeverAppliesError,
            "ProducerLike": DriverProducerLike,
            "ProducerSettings": publisher.ProducerSettings,
            "Settings": kafka_settings.Settings,
            "WaitedTooLongError": kafka_errors.WaitedTooLongError,
            "create_producer": publisher.create_producer,
            "dlq_topic": dlq.dlq_topic,
            "ensure_topics": topics.ensure_topics,
            "open": resources.open,
            "service_batch_handler": handlers.service_batch_handler,
            "service_handler": handlers.service_handler,
            "service_topics": topics.service_topics,
        },
    )
    assert issubclass(kafka_errors.WaitedTooLongError, PipelineStateError)
    assert issubclass(kafka_errors.NeverAppliesError, PipelineStateError)
