"""Ports: what adapters implement, and the values they exchange with the engine.

The Protocols are small and state behaviour and the errors they raise: a :class:`Store`
(and its :class:`Outbox` side) keeps batch state, inbox and outbox in units of work, a
:class:`Publisher` is a transport, a :class:`Clock` a time source, a :class:`CreditLedger`
and an :class:`AdmissionGuard` decide admission, and a profile's :class:`Outbound` words
what the engine announces. The values that cross them are here too: the stored batch state
(:class:`BatchState`, :class:`Run`, :class:`PhaseRun`, :class:`ItemRef` and their
statuses), what a fan-in merge policy (:class:`FanIn`) receives and returns, a unit of
work (:class:`Change` and its records), the engine inputs a profile's inbound reader
returns and the facts its outbound receives.

The in-memory adapters are :class:`~pipeline_state.InMemoryStore`,
:class:`~pipeline_state.InMemoryBus` and the clocks; SQL, Kafka and HTTP ones live in their
own packages. Every store must pass the shipped contract suite,
:class:`~pipeline_state.testing.StoreContract`. Errors an adapter raises are in
:mod:`pipeline_state.errors`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

import attrs

from ._catalog import MAX_DEADLINE_SECONDS
from ._fan_in import (
    EVERY_DEPENDENCY,
    LAST_DEPENDENCY,
    DependencyRef,
    EveryDependency,
    FanIn,
    FanInItem,
    LastDependency,
    Merged,
)
from ._guards import AdmissionGuard, AdmissionRequest, CreditLedger, Denial
from ._inputs import (
    ContentReady,
    EngineInput,
    GroupConfirmed,
    ItemsReady,
    OutcomeStatus,
    PhaseOutcome,
    RegisterBatch,
    RequestPipeline,
    ValidationFailed,
)
from ._lifecycle import BatchStatus, PhaseStatus, RunStatus
from ._model import BatchState, ItemRef, Past, PhaseRun, Run
from ._outbound import Notice, Outbound, Outgoing, RunSummary
from ._profile import CommandFields
from ._retention import PurgeCutoffs, Purged, Retention, purge_expired

__all__ = [
    "CLOCK_STEP_HORIZON_SECONDS",
    "EVERY_DEPENDENCY",
    "LAST_DEPENDENCY",
    "MAX_STALLED_AGE_SECONDS",
    "AdmissionGuard",
    "AdmissionRequest",
    "ArchiveIndexStore",
    "BatchState",
    "BatchingStore",
    "Change",
    "Clock",
    "CommandFields",
    "ContentReady",
    "CreditLedger",
    "Denial",
    "DependencyRef",
    "EngineInput",
    "EventReadingStore",
    "EveryDependency",
    "FanIn",
    "FanInItem",
    "GroupConfirmed",
    "InboxEntry",
    "ItemRef",
    "ItemsReady",
    "LastDependency",
    "Merged",
    "Notice",
    "Outbound",
    "Outbox",
    "OutboxMessage",
    "OutboxRow",
    "OutcomeStatus",
    "Outgoing",
    "Past",
    "PhaseOutcome",
    "PhaseRun",
    "PhaseStatus",
    "Publisher",
    "PurgeCutoffs",
    "Purged",
    "PurgingStore",
    "RegisterBatch",
    "RequestPipeline",
    "Retention",
    "Run",
    "RunCountingStore",
    "RunStatus",
    "RunSummary",
    "StalledRun",
    "Store",
    "TransitionRecord",
    "ValidationFailed",
    "WaitingFact",
    "purge_expired",
]


CLOCK_STEP_HORIZON_SECONDS = 3600.0
"""How far ahead of the reader's clock an outbox row's due time or lease end may lie before a
store takes it as written by a clock that was ahead (another process's, or this one's before
it stepped back) and counts it as passed: a relay never backs off longer than this
(:class:`~pipeline_state.OutboxRelay` ``max_backoff``), and a lease longer than this is
judged against its own length instead."""


@attrs.frozen
class OutboxMessage:
    """A message to publish: ``value`` is the JSON-compatible envelope dict.

    ``trace_context`` holds the W3C trace-context headers (``traceparent``, maybe
    ``tracestate``) of the span that emitted it, kept on the outbox row so the publish and
    the receiver continue that trace (see :mod:`pipeline_state._tracing`); empty when no
    trace was active. It is delivery metadata: messages that differ only in it are equal.
    """

    event_id: str
    topic: str
    key: str | None
    value: Mapping[str, Any]
    trace_context: tuple[tuple[str, str], ...] = attrs.field(default=(), eq=False)

    def as_dict(self) -> dict[str, Any]:
        """The ``{"topic", "key", "value"}`` shape the runtime returns."""
        return {"topic": self.topic, "key": self.key, "value": dict(self.value)}


@attrs.frozen
class OutboxRow:
    """A stored outbox message with its delivery bookkeeping."""

    id: int
    message: OutboxMessage
    created_at: datetime
    attempts: int = 0
    last_error: str | None = None
    parked: bool = False
    published_at: datetime | None = None
    leased_until: datetime | None = attrs.field(default=None, eq=False)
    """When the lease under which the store handed this row to a relay ends (the claim's or
    the hand-off's; ``None``: the store does not say, and the relay takes its own
    ``lease_seconds`` from the claim or the hand-off). Past it another relay may claim the
    row, so the relay neither publishes it nor records its failure (see
    :class:`~pipeline_state._relay.OutboxRelay`). Not part of the row's equality."""


@attrs.frozen
class InboxEntry:
    """The record that an inbound event was processed, and what it did."""

    event_id: str
    topic: str
    batch_id: str
    result: str
    processed_at: datetime


@attrs.frozen
class TransitionRecord:
    """One row of the transition log: which entity moved, from where to where, and why."""

    batch_id: str
    entity: str
    name: str
    trigger: str
    source: str
    dest: str
    run_id: str | None
    event_id: str
    correlation_id: str
    at: datetime
    note: str | None = None
    """A flag the decision attached to this move (e.g. ``correlation_mismatch``)."""
    requested_by: str | None = None
    """Who asked for the command that made this move, when a person did (an operator)."""


@attrs.frozen
class WaitingFact:
    """An inbound fact that cannot apply *yet*, kept until its batch gets where it can.

    ``raw`` is the message exactly as it was received (so it can be dead-lettered
    unchanged); ``waits_for`` names what it waits for (``batch_registration``,
    ``batch_state:<status>``, ``phase_dispatch:<phase>``, see
    :func:`pipeline_state._waiting.waits_for`). ``seq`` is the arrival order the store
    assigned (``0`` before it is stored); facts are re-attempted in that order.
    """

    event_id: str
    topic: str
    batch_id: str
    raw: bytes
    waits_for: str
    arrived_at: datetime
    seq: int = 0


MAX_STALLED_AGE_SECONDS = MAX_DEADLINE_SECONDS
"""The largest ``older_than`` (seconds) a caller of :meth:`Store.stalled_runs` should pass
(ten years, the engine's longest time span): the operator command and the HTTP route refuse
more as bad input."""


@attrs.frozen
class StalledRun:
    """An active run that made no progress since ``last_change_at``.

    ``active_phases`` are the phases still open (dispatched or waiting for dependencies);
    ``parked`` the parked outbox rows keyed by the batch (commands that could not be
    published), oldest first.
    """

    batch_id: str
    run_id: str
    pipeline_name: str
    accepted_at: datetime
    last_change_at: datetime
    active_phases: tuple[str, ...]
    parked: tuple[OutboxRow, ...] = ()

    @classmethod
    def of(cls, state: BatchState, parked: Sequence[OutboxRow] = ()) -> StalledRun:
        """The stalled-run view of ``state``, whose active run it describes."""
        run = state.active_run
        if run is None:
            raise ValueError(f"batch {state.batch_id!r} has no active run")
        return cls(
            batch_id=state.batch_id,
            run_id=run.run_id,
            pipeline_name=run.pipeline_name,
            accepted_at=run.accepted_at,
            last_change_at=state.updated_at,
            active_phases=tuple(p.name for p in run.phases if not p.is_terminal),
            parked=tuple(parked),
        )


@attrs.frozen
class Change:
    """Everything one command writes, committed together or not at all.

    ``expected_version`` is the version read before deciding (``None``: the batch did not
    exist). The store checks it even when ``state`` is ``None`` (nothing to write), so a
    decision taken on a stale read never commits.

    ``waiting`` keeps the command's fact in the waiting set (its ``inbox`` entry then
    records ``deferred:<what>``). ``resolves`` names a waiting fact this change re-attempts:
    the store removes it from the waiting set and *replaces* its inbox entry with
    ``inbox`` (raising :class:`~pipeline_state.errors.ConcurrencyConflictError` when it is
    no longer waiting: another writer resolved it). ``rewaits`` pairs the event id of a
    fact that still waits with what it waits for *now* (the batch moved on, but not far
    enough): the store updates that fact's ``waits_for`` in place, keeping its arrival order;
    ids no longer waiting are skipped. ``republish`` lists outbox event ids to
    deliver again with the same event id: their rows are re-queued (unpublished, unparked,
    attempts reset, due at ``at``); ids the store no longer holds are skipped. ``archived``
    lists the runs this change archived, oldest first: the store appends them to the batch's
    history (:meth:`Store.batch_history`), which the state itself does not carry.
    ``unpark`` lists outbox event ids an operator asked to deliver again: the rows of those
    that are *parked* when the change commits are re-queued as ``republish`` does; any other
    row (pending, published, unknown) is left as it is, so two requests, or one racing the
    relay, never deliver a row twice.
    """

    batch_id: str
    expected_version: int | None
    state: BatchState | None
    at: datetime
    outbox: tuple[OutboxMessage, ...] = ()
    inbox: InboxEntry | None = None
    transitions: tuple[TransitionRecord, ...] = ()
    waiting: WaitingFact | None = None
    resolves: str | None = None
    rewaits: tuple[tuple[str, str], ...] = ()
    republish: tuple[str, ...] = ()
    archived: tuple[Run, ...] = ()
    unpark: tuple[str, ...] = ()


@runtime_checkable
class Store(Protocol):
    """Durable batch state with an inbox, written in units of work.

    Errors: :class:`~pipeline_state.errors.StoreUnavailableError` when the store cannot be
    reached (transient); :class:`~pipeline_state.errors.CorruptStateError` when a stored
    state cannot be decoded.
    """

    async def load(self, batch_id: str) -> BatchState | None:
        """The current state of a batch, or ``None`` when it does not exist."""
        ...

    async def history(self, batch_id: str) -> list[Run]:
        """The archived runs of a batch, oldest first (``Change.archived`` of its commits)."""
        ...

    async def commit(self, change: Change) -> None:
        """Atomically: compare-and-set the state on ``expected_version``, append the outbox
        messages and transition records, and record the inbox entry.

        Raises :class:`~pipeline_state.errors.ConcurrencyConflictError` when the stored
        version is not ``expected_version`` and
        :class:`~pipeline_state.errors.DuplicateEventError` when the inbox already holds
        the event id; in both cases nothing is written.

        An outbox message's event id is unique among the rows the outbox keeps: a message
        under an id still kept is refused, as a
        :class:`~pipeline_state.errors.DuplicateEventError` of the inbox's event id when the
        kept row was written by the same inbound event (its envelope's
        ``metadata.causation_id``: the inbox entry was purged since, and emitted ids derive
        from the inbound one), else as a :class:`~pipeline_state.errors.StoreError`; nothing
        is written either way.
        """
        ...

    async def is_processed(self, event_id: str) -> bool:
        """Whether the inbox holds ``event_id``."""
        ...

    async def inbox_entry(self, event_id: str) -> InboxEntry | None:
        """The inbox record of ``event_id`` (what processing it did), if processed."""
        ...

    async def overdue_batches(self, now: datetime, limit: int = 1000) -> list[str]:
        """Ids of batches whose active run has a phase deadline at or before ``now``, at most
        ``limit``, the most overdue first (earliest deadline, then batch id), so a sweep that
        cannot take them all serves the longest-waiting ones and none is passed over for ever."""
        ...

    async def list_batches(
        self, status: BatchStatus | None = None, *, limit: int = 100, offset: int = 0
    ) -> list[BatchState]:
        """Batches (optionally only those in ``status``), ordered by batch id."""
        ...

    # -- waiting facts ----------------------------------------------------------------------
    async def load_with_waiting(self, batch_id: str) -> tuple[BatchState | None, bool]:
        """:meth:`load`, plus whether facts of the batch wait (one read, the hot path)."""
        ...

    async def list_waiting(
        self, batch_id: str | None = None, *, limit: int = 100, arrived_before: datetime | None = None
    ) -> list[WaitingFact]:
        """Waiting facts (of ``batch_id``; arrived strictly before ``arrived_before``), in
        arrival order."""
        ...

    async def count_waiting(self) -> int:
        """How many facts wait."""
        ...

    async def forget_waiting(self, event_ids: Sequence[str], result: str, now: datetime) -> int:
        """Remove waiting facts without applying them (expired, dead-lettered) and record
        ``result`` as their inbox result; returns how many were removed (ids no longer
        waiting are skipped)."""
        ...

    async def stalled_runs(self, now: datetime, older_than: float, *, limit: int = 100) -> list[StalledRun]:
        """Active runs whose batch has not changed for more than ``older_than`` seconds
        before ``now``, least recently changed first."""
        ...


@runtime_checkable
class BatchingStore(Store, Protocol):
    """A :class:`Store` that can also commit several units of work in one transaction.

    Optional: :meth:`~pipeline_state._service.PipelineService.handle_many` uses it when the
    store has it and falls back to one :meth:`Store.commit` per message otherwise.
    """

    async def commit_many(self, changes: Sequence[Change]) -> None:
        """Commit ``changes`` in order, all or nothing, as one transaction.

        Each change is checked as :meth:`Store.commit` checks it, against the store as the
        earlier changes of the sequence leave it: changes of the same batch chain (the
        second's ``expected_version`` is the version the first wrote), and an inbox id
        repeated within the sequence is a duplicate. On
        :class:`~pipeline_state.errors.ConcurrencyConflictError` or
        :class:`~pipeline_state.errors.DuplicateEventError` (or any other error) nothing
        is written and the error propagates. An empty sequence does nothing.
        """
        ...


@runtime_checkable
class EventReadingStore(Store, Protocol):
    """A :class:`Store` that reads what starts a unit of work in one round trip.

    Optional: :class:`~pipeline_state._service.PipelineService` uses these reads when the
    store has them (the SQL store does: one statement each) and otherwise asks
    :meth:`Store.is_processed`, then :meth:`Store.load_with_waiting`. Both must answer
    exactly what those calls would answer at the same moment.
    """

    async def load_for_event(self, batch_id: str, event_id: str) -> tuple[bool, BatchState | None, bool]:
        """Whether the inbox holds ``event_id`` and, when it does not, the state of
        ``batch_id`` (``None``: no such batch) and whether facts of it wait. A processed
        event gives ``(True, None, False)``: its batch is not read."""
        ...

    async def load_for_events(
        self, events: Sequence[tuple[str, str]]
    ) -> tuple[frozenset[str], dict[str, tuple[BatchState | None, bool]]]:
        """:meth:`load_for_event` for several ``(batch id, event id)`` pairs at once: the
        event ids among them that the inbox holds, and, for each batch with at least one
        event the inbox does not hold, its state (or ``None``) and whether facts of it
        wait. Batches whose events were all processed are left out; an empty sequence
        gives ``(frozenset(), {})``."""
        ...


@runtime_checkable
class ArchiveIndexStore(Store, Protocol):
    """A :class:`Store` that reads the ids of a batch's archived runs without the runs.

    Optional: a store that does not keep those ids with the batch's state (the SQL store
    writes only their count, :attr:`~pipeline_state._model.Past.count`) has the service look
    them up before deciding an input that asks about them (a run-starting command, an
    outcome of another run: :func:`~pipeline_state._decide.asks_archived_ids`). The service
    uses this read when the store has it (the memory and SQL stores do; the SQL store
    answers from the ``runs`` table's key columns) and otherwise reads
    :meth:`Store.history`.
    """

    async def archived_ids(self, batch_id: str) -> list[tuple[str, str]]:
        """``(run_id, correlation_id)`` of each archived run of ``batch_id``, oldest first
        (as :meth:`Store.history` orders them); ``[]`` for an unknown batch."""
        ...


@runtime_checkable
class RunCountingStore(Store, Protocol):
    """A :class:`Store` that counts its running batches without handing their states out.

    Optional: the metrics' store gauges (``pipeline_state_active_runs``,
    ``pipeline_state_oldest_active_run_age_seconds``) read it every few seconds when the
    store has it (the memory and SQL stores do: the SQL store answers with one aggregate
    query) and otherwise list at most a bounded number of running batches, so they can
    only say "at least" past that bound.
    """

    async def active_runs(self) -> tuple[int, datetime | None]:
        """How many batches are in ``processing_pipelines`` and when the oldest of their
        active runs was accepted (``None`` when none is)."""
        ...


@runtime_checkable
class PurgingStore(Store, Protocol):
    """A :class:`Store` that forgets bookkeeping rows past their retention.

    Optional: ``serve`` purges a store that has it every ``purge_seconds`` (the memory and SQL
    stores do); :func:`purge_expired` drives it in bounded rounds. Batch
    states and archived runs are never purged.
    """

    async def purge(self, cutoffs: PurgeCutoffs, *, limit: int = 5_000) -> Purged:
        """Delete at most ``limit`` rows of each kind older than its cutoff, oldest first (a
        store that keeps rows in the order it wrote them may take that order: the same
        unless its clock went back), in one transaction, and say how many went.

        Raises:
            ValueError: ``limit`` below 1.
            StoreUnavailableError: the store is down.
        """
        ...


@runtime_checkable
class Outbox(Protocol):
    """The outbox side of a store, read by the relay."""

    async def claim(self, now: datetime, limit: int = 100) -> list[OutboxRow]:
        """Unpublished, unparked rows that are due, oldest first. A row is not returned while
        an older unpublished, unparked row with the same key exists (order per key). Rows
        claimed by one relay are not returned to another until released or marked."""
        ...

    async def mark_published(self, row_ids: Sequence[int], now: datetime) -> None: ...

    async def mark_failed(
        self, row_id: int, error: str, now: datetime, *, retry_at: datetime, park: bool
    ) -> bool | None:
        """Count a failed attempt; ``park`` takes the row out of delivery for good.

        An outbox may also take a keyword ``leased_until`` (the :attr:`OutboxRow.leased_until`
        the failing relay was handed) and then count the failure only while the row is still
        held under that lease; the relay passes it to an outbox that takes it (the shipped
        stores do). Without it, the relay records no failure once the lease has ended.
        ``False``: nothing was counted (the row was published, or another relay holds it);
        the relay then neither counts a park nor lets the row's key go (``None``, an outbox
        that does not say, counts as recorded)."""
        ...

    async def pending_count(self) -> int:
        """Rows not yet published and not parked."""
        ...

    async def parked(self, limit: int = 100) -> list[OutboxRow]: ...


@runtime_checkable
class Publisher(Protocol):
    """A transport: publishes messages in the order given.

    Returns one entry per message: ``None`` when published, else the error. Raises
    :class:`~pipeline_state.errors.PublishError` when nothing could be published.
    """

    async def publish(self, messages: Sequence[OutboxMessage]) -> Sequence[BaseException | None]: ...


@runtime_checkable
class Clock(Protocol):
    """The time source; the in-memory one is advanced by hand."""

    def now(self) -> datetime: ...
