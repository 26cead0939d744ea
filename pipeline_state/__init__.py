"""pipeline-state: an explicit, tested state machine for batch processing pipelines.

The pure core (lifecycles, catalog, ``decide``) has no I/O; :class:`PipelineService` is the
shell that loads, decides and commits through the ports; :class:`InMemoryRuntime` wires it
all together in memory.
"""

from __future__ import annotations

from .catalog import Catalog, Pipeline, Plan, Step
from .clock import ManualClock, SystemClock
from .commands import (
    ArchiveBatch,
    CancelBatch,
    CancelRun,
    Command,
    ExpireOverdue,
    RecordPhaseCompletion,
    RetryPhase,
)
from .decide import Decision, Emit, Move, decide
from .errors import (
    BadCommandError,
    BatchConflictError,
    BatchNotFoundError,
    CatalogError,
    ConcurrencyConflictError,
    CorruptStateError,
    DefinitionError,
    DuplicateEventError,
    IllegalTransitionError,
    InvalidMessageError,
    PipelineStateError,
    PublishError,
    StoreError,
    StoreUnavailableError,
    UnknownPipelineError,
    UnknownTopicError,
)
from .guards import (
    AdmissionGuard,
    AdmissionRequest,
    CreditLedger,
    CreditsGuard,
    Denial,
    InMemoryCreditLedger,
    PromptGuard,
    RateLimitGuard,
)
from .lifecycle import (
    BATCH_LIFECYCLE,
    PHASE_LIFECYCLE,
    RUN_LIFECYCLE,
    BatchStatus,
    Lifecycle,
    PhaseStatus,
    PipelineExecutionStatus,
    RunStatus,
    Transition,
    define_lifecycle,
)
from .machine import SharedMachine
from .memory import InMemoryBus, InMemoryStore
from .model import BatchState, ItemRef, PhaseRun, Run
from .ports import (
    BatchingStore,
    Change,
    Clock,
    InboxEntry,
    Outbox,
    OutboxMessage,
    OutboxRow,
    Publisher,
    Store,
    TransitionRecord,
)
from .profile import CommandSpec, Profile
from .profiles import default_profile, load_profile
from .relay import OutboxRelay, RelayReport
from .runtime import InMemoryRuntime
from .service import HandleResult, InboundMessage, PipelineService
from .snapshot import snapshot
from .wire import EventEnvelope, TopicSpec, WireModel

__version__ = "0.1.0.dev0"

__all__ = [
    "BATCH_LIFECYCLE",
    "PHASE_LIFECYCLE",
    "RUN_LIFECYCLE",
    "AdmissionGuard",
    "AdmissionRequest",
    "ArchiveBatch",
    "BadCommandError",
    "BatchConflictError",
    "BatchNotFoundError",
    "BatchState",
    "BatchStatus",
    "BatchingStore",
    "CancelBatch",
    "CancelRun",
    "Catalog",
    "CatalogError",
    "Change",
    "Clock",
    "Command",
    "CommandSpec",
    "ConcurrencyConflictError",
    "CorruptStateError",
    "CreditLedger",
    "CreditsGuard",
    "Decision",
    "DefinitionError",
    "Denial",
    "DuplicateEventError",
    "Emit",
    "EventEnvelope",
    "ExpireOverdue",
    "HandleResult",
    "IllegalTransitionError",
    "InMemoryBus",
    "InMemoryCreditLedger",
    "InMemoryRuntime",
    "InMemoryStore",
    "InboundMessage",
    "InboxEntry",
    "InvalidMessageError",
    "ItemRef",
    "Lifecycle",
    "ManualClock",
    "Move",
    "Outbox",
    "OutboxMessage",
    "OutboxRelay",
    "OutboxRow",
    "PhaseRun",
    "PhaseStatus",
    "Pipeline",
    "PipelineExecutionStatus",
    "PipelineService",
    "PipelineStateError",
    "Plan",
    "Profile",
    "PromptGuard",
    "PublishError",
    "Publisher",
    "RateLimitGuard",
    "RecordPhaseCompletion",
    "RelayReport",
    "RetryPhase",
    "Run",
    "RunStatus",
    "SharedMachine",
    "Step",
    "Store",
    "StoreError",
    "StoreUnavailableError",
    "SystemClock",
    "TopicSpec",
    "Transition",
    "TransitionRecord",
    "UnknownPipelineError",
    "UnknownTopicError",
    "WireModel",
    "decide",
    "default_profile",
    "define_lifecycle",
    "load_profile",
    "snapshot",
]
