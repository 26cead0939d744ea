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

Shaped like the adapters it wires: :class:`Settings` (its own ``PIPELINE_STATE_*``
variables; :class:`ServeSettings` composes them with the adapters' settings and the flags),
the errors of :mod:`~pipeline_state_service.errors`, and a curated ``__all__``; its stores
are opened with the SQL adapter's ``open`` and the Kafka producer with the Kafka adapter's.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .errors import OperatorError, SettingsError, UnknownConsumerError
    from .extensions import BUILTIN_CONSUMERS as BUILTIN_CONSUMERS
    from .extensions import BackgroundTask as BackgroundTask
    from .extensions import ConsumerFactory as ConsumerFactory
    from .extensions import ConsumerPlugin, ServeContext, register_consumer
    from .extensions import resolve_consumer as resolve_consumer
    from .logs import JsonFormatter as JsonFormatter
    from .logs import KeyValueFormatter as KeyValueFormatter
    from .logs import configure_logging as configure_logging
    from .relay_runner import RelayRunner as RelayRunner
    from .relay_runner import tcp_probe as tcp_probe
    from .results_consumer import RESULTS_CONSUMER as RESULTS_CONSUMER
    from .results_consumer import ResultsConsumer as ResultsConsumer
    from .results_consumer import open_results_consumer as open_results_consumer
    from .results_consumer import purge_periodically as purge_periodically
    from .results_consumer import results_factory as results_factory
    from .results_consumer import results_handler as results_handler
    from .results_stores import OpenedResultsStore, open_results_store, register_results_store
    from .results_stores import OutboxResultsStore as OutboxResultsStore
    from .results_stores import ResultsStoreOpener as ResultsStoreOpener
    from .results_stores import url_scheme as url_scheme
    from .runner import ServiceRunner
    from .serve import serve as serve
    from .serve import serve_main
    from .settings import ENVIRONMENT, ServeSettings, Settings
    from .stores import MEMORY_URL as MEMORY_URL
    from .stores import OpenedStore, open_store
    from .summary import Sample as Sample
    from .summary import Summary as Summary

# Imported when first used, so that ``pipeline_state_service.cli`` (loaded by the core's
# command line for every command, ``demo`` included) works without the adapters' extras.
_WHERE = {
    "BUILTIN_CONSUMERS": "extensions",
    "BackgroundTask": "extensions",
    "ConsumerFactory": "extensions",
    "ConsumerPlugin": "extensions",
    "ServeContext": "extensions",
    "OperatorError": "errors",
    "SettingsError": "errors",
    "UnknownConsumerError": "errors",
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
    "Settings": "settings",
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


# What a user of the composition root imports (the README's "Public names" lists the same);
# every other name of ``_WHERE`` stays importable from here for existing code.
__all__ = [
    "ENVIRONMENT",
    "ConsumerPlugin",
    "OpenedResultsStore",
    "OpenedStore",
    "OperatorError",
    "ServeContext",
    "ServeSettings",
    "ServiceRunner",
    "Settings",
    "SettingsError",
    "UnknownConsumerError",
    "open_results_store",
    "open_store",
    "register_consumer",
    "register_results_store",
    "serve_main",
]
