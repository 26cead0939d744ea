"""Kafka adapter (aiokafka): consumer, outbox relay transport and the runnable service.

* :class:`InboundConsumer` hands each inbound record to a handler (for the orchestrator,
  :func:`service_handler` over a :class:`~pipeline_state.service.PipelineService`), commits
  offsets only after the unit of work committed, and parks poison records on
  ``<topic>.DLQ``.
* :class:`KafkaPublisher` is the :class:`~pipeline_state.ports.Publisher` the outbox relay
  writes through; :class:`RelayRunner` drives the relay.
* :class:`ServiceRunner` runs it all in one process; :func:`serve_main` is
  ``pipeline-state serve``.

See the package README for delivery guarantees, the dead-letter format and every option.
"""

from __future__ import annotations

from ._kafka import ConsumerLike, ProducerLike, RecordLike
from .codec import (
    HEADER_CORRELATION_ID,
    HEADER_EVENT_ID,
    HEADER_EVENT_TYPE,
    KafkaRecord,
    decode_value,
    encode_message,
    header,
)
from .consumer import ConsumerSettings, InboundConsumer
from .dlq import DLQ_SUFFIX, DeadLetter, DeadLetterWriter, dead_letter, dlq_topic
from .extensions import (
    ConsumerFactory,
    ConsumerPlugin,
    ServeContext,
    UnknownConsumerError,
    register_consumer,
    resolve_consumer,
)
from .handlers import Handled, MessageHandler, service_handler
from .logs import JsonFormatter, KeyValueFormatter, configure_logging
from .policy import ErrorPolicy, Verdict
from .publisher import KafkaPublisher, ProducerSettings, create_producer
from .relay_runner import RelayRunner, tcp_probe
from .runner import ServiceRunner
from .serve import serve, serve_main
from .settings import ENVIRONMENT, ServeSettings, SettingsError
from .stats import ServiceStats
from .stores import MEMORY_URL, OpenedStore, open_store
from .summary import Sample, Summary
from .topics import ensure_topics, service_topics

__all__ = [
    "DLQ_SUFFIX",
    "ENVIRONMENT",
    "HEADER_CORRELATION_ID",
    "HEADER_EVENT_ID",
    "HEADER_EVENT_TYPE",
    "MEMORY_URL",
    "ConsumerFactory",
    "ConsumerLike",
    "ConsumerPlugin",
    "ConsumerSettings",
    "DeadLetter",
    "DeadLetterWriter",
    "ErrorPolicy",
    "Handled",
    "InboundConsumer",
    "JsonFormatter",
    "KafkaPublisher",
    "KafkaRecord",
    "KeyValueFormatter",
    "MessageHandler",
    "OpenedStore",
    "ProducerLike",
    "ProducerSettings",
    "RecordLike",
    "RelayRunner",
    "Sample",
    "ServeContext",
    "ServeSettings",
    "ServiceRunner",
    "ServiceStats",
    "SettingsError",
    "Summary",
    "UnknownConsumerError",
    "Verdict",
    "configure_logging",
    "create_producer",
    "dead_letter",
    "decode_value",
    "dlq_topic",
    "encode_message",
    "ensure_topics",
    "header",
    "open_store",
    "register_consumer",
    "resolve_consumer",
    "serve",
    "serve_main",
    "service_handler",
    "service_topics",
    "tcp_probe",
]
