"""Downstream results: the read model and notification projection of completed pipelines.

The projection consumes ``ELSBatchPhaseOutcomeV1``, ``BatchPipelineCompletedV1``, the
registration fact ``BatchEssaysRegistered`` (owner and class), the engine's phase commands
(its dispatches: a run in progress) and ``PhaseSkippedV1`` (phases pruned as already
completed), and keeps a read model per batch and per class that is the same whatever order
a batch's events arrive in. Each
completed run's results are announced once, through the outbox, as ``BatchResultsReadyV1``
and a ``batch_results_ready`` teacher notification::

    store = InMemoryResultsStore()
    results = ResultsService(store, clock=clock, cache=RecordingCacheInvalidator())
    await results.handle_message(topic, envelope)       # for each consumed message
    await OutboxRelay(store, publisher, clock).drain()   # publish the announcements
    view = await ResultsQueries(store).batch_json(batch_id)

Pure parts: :mod:`~pipeline_state.profiles.huleedu.results.model` (values),
:mod:`~pipeline_state.profiles.huleedu.results.projection` (merge rules),
:mod:`~pipeline_state.profiles.huleedu.results.announce` (messages). Shell:
:mod:`~pipeline_state.profiles.huleedu.results.service`.
Ports and in-memory adapters: :mod:`~pipeline_state.profiles.huleedu.results.ports`,
:mod:`~pipeline_state.profiles.huleedu.results.memory`. Stores are checked
by :mod:`pipeline_state.profiles.huleedu.testing.results_contract`.
"""

from __future__ import annotations

from .announce import NOTIFICATION_CATEGORY, NOTIFICATION_PRIORITY, NOTIFICATION_TYPE, announcement
from .codec import batch_from_document, batch_to_document
from .lookup import StoreOwnerLookup
from .memory import InMemoryResultsStore, NoopCacheInvalidator, RecordingCacheInvalidator
from .model import (
    BatchResults,
    ClassDelta,
    ClassResults,
    Owner,
    PhaseDispatch,
    PhaseOutcome,
    PhasePruned,
    PhaseResultView,
    ResultsStatus,
    RunCompletion,
)
from .ports import CacheInvalidator, ClassPageStore, OwnerLookup, ResultsChange, ResultsStore
from .projection import (
    CONSUMED_TOPICS,
    ResultsFact,
    apply_fact,
    cache_keys,
    class_deltas,
    fact_from_message,
    pending_announcements,
    project,
)
from .queries import ResultsQueries
from .retention import DEFAULT_RETENTION, RetentionPolicy
from .service import ResultsHandled, ResultsService
from .views import batch_summary, batch_view, class_view, run_view, teacher_view

__all__ = [
    "CONSUMED_TOPICS",
    "DEFAULT_RETENTION",
    "NOTIFICATION_CATEGORY",
    "NOTIFICATION_PRIORITY",
    "NOTIFICATION_TYPE",
    "BatchResults",
    "CacheInvalidator",
    "ClassDelta",
    "ClassPageStore",
    "ClassResults",
    "InMemoryResultsStore",
    "NoopCacheInvalidator",
    "Owner",
    "OwnerLookup",
    "PhaseDispatch",
    "PhaseOutcome",
    "PhasePruned",
    "PhaseResultView",
    "RecordingCacheInvalidator",
    "ResultsChange",
    "ResultsFact",
    "ResultsHandled",
    "ResultsQueries",
    "ResultsService",
    "ResultsStatus",
    "ResultsStore",
    "RetentionPolicy",
    "RunCompletion",
    "StoreOwnerLookup",
    "announcement",
    "apply_fact",
    "batch_from_document",
    "batch_summary",
    "batch_to_document",
    "batch_view",
    "cache_keys",
    "class_deltas",
    "class_view",
    "fact_from_message",
    "pending_announcements",
    "project",
    "run_view",
    "teacher_view",
]
