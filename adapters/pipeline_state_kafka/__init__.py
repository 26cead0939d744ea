"""Kafka adapter (aiokafka): the transport, nothing else.

* :class:`InboundConsumer` hands each inbound record to a handler (for the orchestrator,
  :func:`service_handler` over a :class:`~pipeline_state._service.PipelineService`), commits
  offsets only after the unit of work committed, and parks poison records on
  ``<topic>.DLQ``.
* :class:`KafkaPublisher` is the :class:`~pipeline_state.ports.Publisher` the outbox relay
  writes through; :func:`ensure_topics` creates the topics; the codec, the dead-letter
  format and the Prometheus metrics of the transport live here too.

The process that wires it all together (``pipeline-state serve``: settings, store choice,
HTTP mount, relay, results consumers, plugins) is the composition root,
:mod:`pipeline_state_service`. This package imports only the core and aiokafka.

Its settings (:class:`Settings`, the ``PIPELINE_STATE_KAFKA_*`` and topic variables) and
:func:`open` (a started producer and its publisher, stopped when the block ends) are shaped
like the other adapters'. See the package README for delivery guarantees, the dead-letter
format and every variable.
"""

from __future__ import annotations

from ._kafka import KafkaError, ProducerLike
from .consumer import ConsumerSettings, InboundConsumer
from .dlq import DeadLetterWriter, dlq_topic
from .errors import KafkaSettingsError, NeverAppliesError, WaitedTooLongError
from .handlers import service_batch_handler, service_handler
from .publisher import KafkaPublisher, ProducerSettings, create_producer
from .resources import KafkaTransport, open
from .settings import Settings
from .topics import ensure_topics, service_topics

# What a user of the adapter imports (the README's "Public names" lists the same); the rest
# lives in the modules (``pipeline_state_kafka.codec``, ``.dlq``, ``.policy``, ...).
__all__ = [
    "ConsumerSettings",
    "DeadLetterWriter",
    "InboundConsumer",
    "KafkaError",
    "KafkaPublisher",
    "KafkaSettingsError",
    "KafkaTransport",
    "NeverAppliesError",
    "ProducerLike",
    "ProducerSettings",
    "Settings",
    "WaitedTooLongError",
    "create_producer",
    "dlq_topic",
    "ensure_topics",
    "open",
    "service_batch_handler",
    "service_handler",
    "service_topics",
]
