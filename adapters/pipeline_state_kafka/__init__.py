"""Kafka adapter (aiokafka): consumer, outbox relay transport and the runnable service.

* :class:`InboundConsumer` hands each inbound record to a handler (for the orchestrator,
  :func:`service_handler` over a :class:`~pipeline_state.service.PipelineService`), commits
  offsets only after the unit of work committed, and parks poison records on
  ``<topic>.DLQ``.
* :class:`KafkaPublisher` is the :class:`~pipeline_state.ports.Publisher` the outbox relay
  writes through; :class:`RelayRunner` drives the relay.
* :class:`ServiceRunner` runs it all in one process; :func:`serve_main` is
  ``pipeline-state serve``.
* ``serve --consumers results`` adds the results projection
  (:func:`open_results_consumer`, :class:`ResultsConsumer`) in its own consumer group, with
  its store opened by :func:`open_results_store`.

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
    BUILTIN_CONSUMERS,
    BackgroundTask,
    ConsumerFactory,
    ConsumerPlugin,
    ServeContext,
    UnknownConsumerError,
    register_consumer,
    resolve_consumer,
)
from .handlers import BatchHandler, Handled, MessageHandler, service_batch_handler, service_handler
from .logs import JsonFormatter, KeyValueFormatter, configure_logging
from .policy import ErrorPolicy, Verdict
from .publisher import KafkaPublisher, ProducerSettings, create_producer
from .relay_runner import RelayRunner, tcp_probe
from .results_consumer import (
    RESULTS_CONSUMER,
    ResultsConsumer,
    open_results_consumer,
    purge_periodically,
    results_factory,
    results_handler,
)
from .results_stores import (
    OpenedResultsStore,
    OutboxResultsStore,
    ResultsStoreOpener,
    SqlResultsStoreMissing,
    open_results_store,
    register_results_store,
    url_scheme,
)
from .runner import ServiceRunner
from .serve import serve, serve_main
from .settings import ENVIRONMENT, ServeSettings, SettingsError
from .stats import ServiceStats
from .stores import MEMORY_URL, OpenedStore, open_store
from .summary import Sample, Summary
from .topics import ensure_topics, service_topics

__all__ = [
    "BUILTIN_CONSUMERS",
    "DLQ_SUFFIX",
    "ENVIRONMENT",
    "HEADER_CORRELATION_ID",
    "HEADER_EVENT_ID",
    "HEADER_EVENT_TYPE",
    "MEMORY_URL",
    "RESULTS_CONSUMER",
    "BackgroundTask",
    "BatchHandler",
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
    "OpenedResultsStore",
    "OpenedStore",
    "OutboxResultsStore",
    "ProducerLike",
    "ProducerSettings",
    "RecordLike",
    "RelayRunner",
    "ResultsConsumer",
    "ResultsStoreOpener",
    "Sample",
    "ServeContext",
    "ServeSettings",
    "ServiceRunner",
    "ServiceStats",
    "SettingsError",
    "SqlResultsStoreMissing",
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
    "open_results_consumer",
    "open_results_store",
    "open_store",
    "purge_periodically",
    "register_consumer",
    "register_results_store",
    "resolve_consumer",
    "results_factory",
    "results_handler",
    "serve",
    "serve_main",
    "service_batch_handler",
    "service_handler",
    "service_topics",
    "tcp_probe",
    "url_scheme",
]
