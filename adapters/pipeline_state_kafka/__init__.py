"""Kafka adapter (aiokafka): the transport, nothing else.

* :class:`InboundConsumer` hands each inbound record to a handler (for the orchestrator,
  :func:`service_handler` over a :class:`~pipeline_state.service.PipelineService`), commits
  offsets only after the unit of work committed, and parks poison records on
  ``<topic>.DLQ``.
* :class:`KafkaPublisher` is the :class:`~pipeline_state.ports.Publisher` the outbox relay
  writes through; :func:`ensure_topics` creates the topics; the codec, the dead-letter
  format and the Prometheus metrics of the transport live here too.

The process that wires it all together (``pipeline-state serve``: settings, store choice,
HTTP mount, relay, results consumers, plugins) is the composition root,
:mod:`pipeline_state_service`. This package imports only the core and aiokafka.

See the package README for delivery guarantees, the dead-letter format and every option.
"""

from __future__ import annotations

from ._kafka import ConsumerLike, KafkaError, ProducerLike, RecordLike, new_admin
from ._startup import start_with_retry
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
from .handlers import BatchHandler, Handled, MessageHandler, service_batch_handler, service_handler
from .policy import ErrorPolicy, Verdict
from .publisher import KafkaPublisher, ProducerSettings, create_producer
from .stats import ServiceStats
from .topics import ensure_topics, service_topics

__all__ = [
    "DLQ_SUFFIX",
    "HEADER_CORRELATION_ID",
    "HEADER_EVENT_ID",
    "HEADER_EVENT_TYPE",
    "BatchHandler",
    "ConsumerLike",
    "ConsumerSettings",
    "DeadLetter",
    "DeadLetterWriter",
    "ErrorPolicy",
    "Handled",
    "InboundConsumer",
    "KafkaError",
    "KafkaPublisher",
    "KafkaRecord",
    "MessageHandler",
    "ProducerLike",
    "ProducerSettings",
    "RecordLike",
    "ServiceStats",
    "Verdict",
    "create_producer",
    "dead_letter",
    "decode_value",
    "dlq_topic",
    "encode_message",
    "ensure_topics",
    "header",
    "new_admin",
    "service_batch_handler",
    "service_handler",
    "service_topics",
    "start_with_retry",
]
