"""pipeline-state: an explicit, tested state machine for batch processing pipelines.

The top level holds what a service author uses: :class:`PipelineService` (load, decide,
commit) and :class:`InMemoryRuntime` (all of it in memory), the profile and catalog a
deployment declares, the wire it reads, the in-memory adapters, and the main errors (the
whole tree is in :mod:`pipeline_state.errors`). What adapters implement and exchange is in
:mod:`pipeline_state.ports`; the test kit is :mod:`pipeline_state.testing`. The generated
page ``docs/reference/api.md`` lists all three, and a test compares it with what imports.
"""

import importlib as _importlib
import types as _types
import warnings as _warnings
from typing import TYPE_CHECKING as _TYPE_CHECKING

from ._asyncapi import asyncapi_document
from ._catalog import Catalog, Pipeline, Step
from ._clock import ManualClock, SystemClock
from ._commands import ArchiveBatch, CancelBatch, CancelRun, RetryPhase
from ._guards import CreditsGuard, InMemoryCreditLedger, PromptGuard, RateLimitGuard
from ._inbound import Inbound, InboundTopic
from ._lifecycle import BatchStatus
from ._memory import InMemoryBus, InMemoryStore
from ._names import StateNames
from ._profile import CommandSpec, Profile
from ._relay import OutboxRelay, RelayReport
from ._runtime import InMemoryRuntime
from ._service import HandleResult, InboundMessage, PipelineService
from ._snapshot import ViewNames
from ._wire import EventEnvelope, WireModel
from .errors import (
    BadCommandError,
    DefinitionError,
    IllegalTransitionError,
    InvalidMessageError,
    PipelineStateError,
    StoreUnavailableError,
)
from .profiles import default_profile, load_profile

__version__ = "0.1.0.dev0"
"""The version of the installed library."""

__all__ = [
    "ArchiveBatch",
    "BadCommandError",
    "BatchStatus",
    "CancelBatch",
    "CancelRun",
    "Catalog",
    "CommandSpec",
    "CreditsGuard",
    "DefinitionError",
    "EventEnvelope",
    "HandleResult",
    "IllegalTransitionError",
    "InMemoryBus",
    "InMemoryCreditLedger",
    "InMemoryRuntime",
    "InMemoryStore",
    "Inbound",
    "InboundMessage",
    "InboundTopic",
    "InvalidMessageError",
    "ManualClock",
    "OutboxRelay",
    "Pipeline",
    "PipelineService",
    "PipelineStateError",
    "Profile",
    "PromptGuard",
    "RateLimitGuard",
    "RelayReport",
    "RetryPhase",
    "StateNames",
    "Step",
    "StoreUnavailableError",
    "SystemClock",
    "ViewNames",
    "WireModel",
    "__version__",
    "asyncapi_document",
    "default_profile",
    "load_profile",
]

# Names that left the top level, and the module that holds them now. They resolve for one
# more release, with a DeprecationWarning; they are in neither ``__all__`` nor ``dir()``.
_MOVED: dict[str, str] = {
    **dict.fromkeys(
        (
            "AdmissionGuard",
            "AdmissionRequest",
            "BatchState",
            "BatchingStore",
            "Change",
            "Clock",
            "CreditLedger",
            "Denial",
            "InboxEntry",
            "ItemRef",
            "Outbox",
            "OutboxMessage",
            "OutboxRow",
            "PhaseRun",
            "PhaseStatus",
            "Publisher",
            "Run",
            "RunStatus",
            "Store",
            "TransitionRecord",
        ),
        "pipeline_state.ports",
    ),
    **dict.fromkeys(
        (
            "BatchConflictError",
            "BatchNotFoundError",
            "CatalogError",
            "ConcurrencyConflictError",
            "CorruptStateError",
            "DuplicateEventError",
            "PublishError",
            "StoreError",
            "UnknownPipelineError",
            "UnknownTopicError",
        ),
        "pipeline_state.errors",
    ),
    **dict.fromkeys(
        (
            "BATCH_LIFECYCLE",
            "PHASE_LIFECYCLE",
            "RUN_LIFECYCLE",
            "Lifecycle",
            "PipelineExecutionStatus",
            "Transition",
            "define_lifecycle",
        ),
        "pipeline_state._lifecycle",
    ),
    **dict.fromkeys(("Command", "ExpireOverdue", "RecordPhaseCompletion"), "pipeline_state._commands"),
    **dict.fromkeys(("Decision", "Emit", "Move", "decide"), "pipeline_state._decide"),
    "Plan": "pipeline_state._catalog",
    "SharedMachine": "pipeline_state._machine",
    "TopicSpec": "pipeline_state._wire",
    "snapshot": "pipeline_state._snapshot",
}


# ``decide`` and ``snapshot`` are also the names of their modules, which the import system
# binds here: unbind them, so the old function names resolve through ``__getattr__`` as
# they did (until the implementation modules are renamed with a leading underscore).
for _shadowed in ("decide", "snapshot"):
    if isinstance(globals().get(_shadowed), _types.ModuleType):
        del globals()[_shadowed]

if not _TYPE_CHECKING:  # type checkers see only ``__all__``: an old name is an error there

    def __getattr__(name: str) -> object:
        home = _MOVED.get(name)
        if home is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        _warnings.warn(
            f"pipeline_state.{name} has moved: import it with `from {home} import {name}` "
            "(the old name goes in the next release)",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(_importlib.import_module(home), name)
