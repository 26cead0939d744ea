"""The composition root: ``pipeline-state serve`` and the operator commands.

This is the one package that imports adapters. It chooses and opens the store
(:mod:`~pipeline_state_service.stores`: in memory or the SQL adapter), reads the settings
(:mod:`~pipeline_state_service.settings`: flags and ``PIPELINE_STATE_*`` variables), runs
the Kafka transport's consumer and the outbox relay (:class:`ServiceRunner`), mounts the
HTTP adapter (``--http``, :mod:`~pipeline_state_service.web`), sweeps deadlines and
waiting facts, and runs the extra consumers (``--consumers results``, or any installed
package's ``pipeline_state.consumers`` entry point). Its commands reach the core's
command line through the ``pipeline_state.commands`` entry point
(:mod:`pipeline_state_service.cli`); the core never imports this package.

* :class:`ServiceRunner` runs it all in one process; :func:`serve_main` is
  ``pipeline-state serve``.
* ``serve --consumers results`` adds the results projection
  (:func:`open_results_consumer`, :class:`ResultsConsumer`) in its own consumer group, with
  its store opened by :func:`open_results_store`.
* :mod:`pipeline_state_service.ops`: the operator commands (``batch show``, ``dlq
  reinject``, ...).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
    from .logs import JsonFormatter, KeyValueFormatter, configure_logging
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
        open_results_store,
        register_results_store,
        url_scheme,
    )
    from .runner import ServiceRunner
    from .serve import serve, serve_main
    from .settings import ENVIRONMENT, ServeSettings, SettingsError
    from .stores import MEMORY_URL, OpenedStore, open_store
    from .summary import Sample, Summary

# Imported when first used, so that ``pipeline_state_service.cli`` (loaded by the core's
# command line for every command, ``demo`` included) works without the adapters' extras.
_WHERE = {
    "BUILTIN_CONSUMERS": "extensions",
    "BackgroundTask": "extensions",
    "ConsumerFactory": "extensions",
    "ConsumerPlugin": "extensions",
    "ServeContext": "extensions",
    "UnknownConsumerError": "extensions",
    "register_consumer": "extensions",
    "resolve_consumer": "extensions",
    "JsonFormatter": "logs",
    "KeyValueFormatter": "logs",
    "configure_logging": "logs",
    "RelayRunner": "relay_runner",
    "tcp_probe": "relay_runner",
    "RESULTS_CONSUMER": "results_consumer",
    "ResultsConsumer": "results_consumer",
    "open_results_consumer": "results_consumer",
    "purge_periodically": "results_consumer",
    "results_factory": "results_consumer",
    "results_handler": "results_consumer",
    "OpenedResultsStore": "results_stores",
    "OutboxResultsStore": "results_stores",
    "ResultsStoreOpener": "results_stores",
    "open_results_store": "results_stores",
    "register_results_store": "results_stores",
    "url_scheme": "results_stores",
    "ServiceRunner": "runner",
    "serve": "serve",
    "serve_main": "serve",
    "ENVIRONMENT": "settings",
    "ServeSettings": "settings",
    "SettingsError": "settings",
    "MEMORY_URL": "stores",
    "OpenedStore": "stores",
    "open_store": "stores",
    "Sample": "summary",
    "Summary": "summary",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "BUILTIN_CONSUMERS",
    "ENVIRONMENT",
    "MEMORY_URL",
    "RESULTS_CONSUMER",
    "BackgroundTask",
    "ConsumerFactory",
    "ConsumerPlugin",
    "JsonFormatter",
    "KeyValueFormatter",
    "OpenedResultsStore",
    "OpenedStore",
    "OutboxResultsStore",
    "RelayRunner",
    "ResultsConsumer",
    "ResultsStoreOpener",
    "Sample",
    "ServeContext",
    "ServeSettings",
    "ServiceRunner",
    "SettingsError",
    "Summary",
    "UnknownConsumerError",
    "configure_logging",
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
    "tcp_probe",
    "url_scheme",
]
