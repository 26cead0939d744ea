"""The application service: load, decide, then commit state, outbox and inbox together.

:class:`PipelineService` is the imperative shell around :func:`~pipeline_state._decide.decide`.
For each inbound message it checks the inbox, loads the batch, decides, turns the emitted
events into envelopes with deterministic ids, and commits everything in one unit of work
guarded by compare-and-set on the batch version. A lost race is retried from a fresh read.
:meth:`PipelineService.handle_many` commits many messages in one transaction (one fsync)
with the outcome of handling them one by one.

Early facts wait (see :mod:`pipeline_state._waiting`): an inbound message that cannot apply
*yet* is kept in the store's waiting set, in the unit of work that records its inbox entry
(``deferred:<what>``), and re-attempted in arrival order, in the same unit of work, each
time a change moves its batch. A fact still waiting after
:attr:`PipelineService.waiting_window_seconds` expires (:meth:`PipelineService.sweep_waiting`):
a pipeline request into its denial, anything else into a dead letter naming what it waited for.
"""

from __future__ import annotations

import functools
import json
import logging
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, cast

import attrs
from opentelemetry.trace import Span

from ._catalog import MAX_DEADLINE_SECONDS, check_deadline
from ._clock import SystemClock
from ._coalesce import Coalescer
from ._commands import Command, ExpireOverdue, OperatorCommand
from ._decide import ALREADY_HANDLED, Decision, asks_archived_ids, decide, derive_id, outbox_event_id
from ._inbound import Inbound
from ._inputs import EngineInput, RequestPipeline
from ._intake import DEFAULT_LIMITS, IntakeLimits
from ._limits import check_limit
from ._model import BatchState, evolve
from ._profile import Profile, check_profile
from ._refusal import RESULT_LIMIT, refusal_result
from ._replay import DEAD_LETTERED, unprocessed_replay_id
from ._retry import Retrying
from ._tracing import (
    TraceContext,
    current_trace_context,
    entered,
    finish,
    handled,
    handling,
    inbound_span,
    with_span_ids,
)
from ._unit_of_work import conflict_retries, run_unit_of_work
from ._waiting import waits_for
from ._wire import WireModel
from .errors import (
    BadCommandError,
    BatchNotFoundError,
    ConcurrencyConflictError,
    CorruptStateError,
    DuplicateEventError,
    IllegalTransitionError,
    InvalidMessageError,
    PipelineStateError,
    WaitingLimitError,
)
from .ports import (
    CLOCK_STEP_HORIZON_SECONDS,
    MAX_STALLED_AGE_SECONDS,
    ArchiveIndexStore,
    Change,
    Clock,
    EventReadingStore,
    InboxEntry,
    OutboxMessage,
    Store,
    TransitionRecord,
    WaitingFact,
)
from .profiles import default_profile

__all__ = [
    "DEFAULT_GROUP_LIMIT",
    "DEFAULT_WAITING_WINDOW_SECONDS",
    "ExpiredFact",
    "HandleResult",
    "InboundMessage",
    "PipelineService",
    "WaitingSweep",
]

log = logging.getLogger("pipeline_state.service")

DEFAULT_WAITING_WINDOW_SECONDS = 900.0
"""How long an early fact may wait for its batch before it expires (15 minutes)."""

CORRELATION_MISMATCH = "correlation_mismatch"


@attrs.frozen
class HandleResult:
    """What handling one command did.

    ``duplicate`` is true when the event id had been processed before (nothing was done):
    the inbox said so (``decision`` is ``None``), or the inbox had forgotten it and the state
    knew it (a run-starting command whose run exists: ``decision`` says ``already_handled``,
    and the inbox entry is written again);
    ``waiting`` names what the fact waits for when it was kept in the waiting set (nothing
    applied yet, ``decision`` is ``None``); otherwise ``decision`` is what was committed
    and ``messages`` the outbox rows written. ``resumed`` holds, in arrival order, the
    results of the batch's waiting facts that this change let apply (or that were found
    to never apply: the error then), committed in the same unit of work.
    """

    event_id: str
    batch_id: str
    decision: Decision | None
    messages: tuple[OutboxMessage, ...] = ()
    duplicate: bool = False
    attempts: int = 1
    correlation_id: str | None = None
    waiting: str | None = None
    resumed: tuple[HandleResult | PipelineStateError, ...] = ()
    span_ids: tuple[str, str] | None = attrs.field(default=None, eq=False)
    """The ``(trace_id, span_id)`` of the span the message was handled in (lowercase hex),
    when it had a valid one; a log line of the unit of work carries them."""

    @property
    def ignored(self) -> str | None:
        if self.duplicate:
            return "duplicate_event"
        return None if self.decision is None else self.decision.ignored

    @property
    def state(self) -> BatchState | None:
        return None if self.decision is None else self.decision.state

    @property
    def label(self) -> str:
        """``duplicate``, ``deferred:<what>``, ``denied:<reason>``, ``ignored:<reason>`` or
        ``applied`` (the inbox result of the event)."""
        if self.duplicate:
            return "duplicate"
        if self.waiting is not None:
            return f"deferred:{self.waiting}"
        return "applied" if self.decision is None else _result_label(self.decision)

    @property
    def all_messages(self) -> tuple[OutboxMessage, ...]:
        """The outbox rows of this event and of the waiting facts it resumed, in order."""
        if not self.resumed:
            return self.messages
        out = list(self.messages)
        for resumed in self.resumed:
            if isinstance(resumed, HandleResult):
                out.extend(resumed.messages)
        return tuple(out)


@attrs.frozen
class ExpiredFact:
    """A waiting fact whose window passed: hand ``raw`` to ``<topic>.DLQ`` with ``reason``,
    then :meth:`PipelineService.forget_waiting` it."""

    fact: WaitingFact
    reason: str

    @property
    def never_applies(self) -> bool:
        """Whether the fact was found never to apply (rather than waiting too long)."""
        return _marked(self.fact)

    @property
    def event_id(self) -> str:
        return self.fact.event_id

    @property
    def topic(self) -> str:
        return self.fact.topic

    @property
    def raw(self) -> bytes:
        return self.fact.raw


@attrs.frozen
class WaitingSweep:
    """What one :meth:`PipelineService.sweep_waiting` did."""

    resumed: int = 0
    denied: int = 0
    dead_lettered: int = 0


InboundMessage = tuple[str, bytes | str | Mapping[str, Any]]
"""An inbound ``(topic, raw message)`` pair, as :meth:`PipelineService.handle_many` takes it."""

_Queued = tuple[Command, str, bytes, Span]
"""A :meth:`PipelineService.handle_message` call waiting for its group: the command, its
topic, its bytes and the span its caller made for it."""

DEFAULT_GROUP_LIMIT = 64
"""At most this many concurrent :meth:`PipelineService.handle_message` calls are committed
in one unit of work."""

_NEVER_APPLIES = (BadCommandError, IllegalTransitionError)
"""What :func:`~pipeline_state._decide.decide` raises for input that cannot apply."""

NEVER_APPLIES = "never_applies:"
"""The prefix of what a waiting fact "waits for" once it was found never to apply (its
batch came, and the fact fails against it): ``never_applies:<ErrorClass>: <message>``. Such
a fact is re-attempted no more and stays in the waiting set only until the next waiting
sweep hands it to its dead letter (:meth:`PipelineService.sweep_waiting`)."""


def _marked(fact: WaitingFact) -> bool:
    """Whether ``fact`` was found never to apply (:data:`NEVER_APPLIES`)."""
    return fact.waits_for.startswith(NEVER_APPLIES)


_NEVER_APPLIES_ROOM = RESULT_LIMIT - len(DEAD_LETTERED)
"""The longest ``never_applies:`` mark: its ``dead_lettered:<mark>`` inbox result fits the
stores' result column."""

MAX_WAITING_PER_BATCH = 1000
"""At most this many facts of one batch wait; a further early fact of it is refused
(:class:`~pipeline_state.errors.WaitingLimitError`), so every fact kept is re-attempted on
each change of its batch."""

_ONE_BATCH = (
    CorruptStateError,
    ConcurrencyConflictError,
    DuplicateEventError,
    BadCommandError,
    IllegalTransitionError,
)
"""What stops a sweep (deadlines, waiting facts) of one batch, not of the others."""

_CLOCK_STEP_HORIZON = timedelta(seconds=CLOCK_STEP_HORIZON_SECONDS)
"""A time stored more than this ahead of the reader's clock was written by a clock ahead."""

_MAX_UNSWEPT = 10_000
"""At most this many overdue batches that could not be swept are remembered, so that later
deadline sweeps ask for them on top of their limit (see ``expire_overdue``)."""

_SWEEP_PAGES = 100
"""At most this many pages of expired facts are dead-lettered by one waiting sweep."""

_RESUME_LIMIT = 2 * MAX_WAITING_PER_BATCH
"""How many waiting facts of a batch one change reads: more than may wait, so that the few
that concurrent units of work on a batch not yet registered (no version to compare-and-set)
may add past the limit are re-attempted too."""


def _check_moved(state: BatchState | None, lost: ConcurrencyConflictError) -> None:
    """After losing a compare-and-set that found the row at ``lost.actual``, a fresh read
    must show a state at that version or later. One still at the version the lost write
    expected means the stored state and its row's version disagree (a row put back or
    edited by hand): every retry would lose again, for ever. That is a corrupt row, refused
    as one (:class:`~pipeline_state.errors.CorruptStateError`, naming the batch)."""
    if state is None or lost.actual is None or lost.expected is None or lost.actual == lost.expected:
        return
    if state.version == lost.expected:
        raise CorruptStateError(
            lost.batch_id,
            f"the stored state says version {state.version}, but its row is at version {lost.actual}",
        )


def _event_reader(store: object) -> EventReadingStore | None:
    """``store`` when it has the optional one-read loads of
    :class:`~pipeline_state.ports.EventReadingStore` (the SQL store: the inbox check and
    the batch in one statement); ``None``: the service asks
    :meth:`~pipeline_state.ports.Store.is_processed`, then reads the batch. Checked by the
    two methods' presence (an ``isinstance`` against the protocol would test every member
    of :class:`~pipeline_state.ports.Store` on each message)."""
    if callable(getattr(store, "load_for_event", None)) and callable(getattr(store, "load_for_events", None)):
        return cast("EventReadingStore", store)
    return None


def _command(
    inbound: Inbound, topic: str, raw: bytes | str | Mapping[str, Any], limits: IntakeLimits
) -> Command:
    """Parse an inbound message within ``limits`` into the command it carries, its payload
    read as an engine input (raises :class:`~pipeline_state.errors.InvalidMessageError`)."""
    envelope, value = inbound.parse(topic, raw, limits=limits)
    return Command(value, str(envelope.event_id), str(envelope.correlation_id))


def _raw_bytes(topic: str, raw: bytes | str | Mapping[str, Any]) -> bytes:
    """The message as bytes: bytes unchanged, text as UTF-8, a decoded mapping as JSON (so it
    is bounded and parsed like any record; one that cannot be encoded is invalid input)."""
    if isinstance(raw, bytes):
        return raw
    if isinstance(raw, bytearray | memoryview):
        return bytes(raw)
    if isinstance(raw, str):
        return raw.encode("utf-8", "surrogatepass")
    try:
        text = json.dumps(raw, separators=(",", ":"), ensure_ascii=False, default=str)
        return text.encode("utf-8", "surrogatepass")
    except (RecursionError, ValueError, TypeError) as exc:
        raise InvalidMessageError(
            topic, f"the message cannot be encoded as JSON: {type(exc).__name__}"
        ) from exc


def _parsed(
    inbound: Inbound, topic: str, raw: bytes | str | Mapping[str, Any], limits: IntakeLimits
) -> tuple[Command, bytes]:
    """The command ``raw`` carries and its bytes, parsed within ``limits``."""
    data = _raw_bytes(topic, raw)
    return _command(inbound, topic, data, limits), data


def _log_unswept(what: str, batch_id: str, error: Exception) -> None:
    log.error("%s %s: %s: %s", what, batch_id, type(error).__name__, error, extra={"batch_id": batch_id})


def _readiness(facts: Iterable[WaitingFact], inbound: Inbound) -> list[str]:
    """What the waiting facts other than pipeline requests wait for: a request waits with
    its batch's waiting readiness facts, never because other requests wait."""
    return [f.waits_for for f in facts if not inbound.is_request(f.topic)]


def _others_waiting(command: Command, facts: list[WaitingFact], inbound: Inbound) -> list[str] | tuple[()]:
    """What :func:`~pipeline_state._waiting.waits_for` reads of the batch's other waiting
    ``facts`` for ``command``: only a pipeline request reads them (their readiness reasons,
    requests left out, so ``command``'s own fact among ``facts`` changes nothing); for any
    other command the list is never built (re-attempting W facts stays linear in W)."""
    if facts and isinstance(command.payload, RequestPipeline):
        return _readiness(facts, inbound)
    return ()


def _filled(results: list[HandleResult | BaseException | None]) -> list[HandleResult | BaseException]:
    """``results`` once every slot holds a result or an error."""
    done = [r for r in results if r is not None]
    if len(done) != len(results):  # pragma: no cover - every slot is filled by the callers
        raise AssertionError("a message was left without a result")
    return done


def _result_label(decision: Decision) -> str:
    """The inbox result of ``decision``. A run-starting command the state knew
    (``already_handled``) is written again as ``applied``: what its first handling did, since
    its run exists, and what a later repeat, answered by the inbox, reports."""
    if decision.denial is not None:
        return f"denied:{decision.denial.reason}"
    if decision.ignored is not None and decision.ignored != ALREADY_HANDLED:
        return f"ignored:{decision.ignored}"
    return "applied"


def _log_extra(step: _Staged) -> dict[str, str]:
    """The ``extra`` of a log record about ``step`` (built only when one is written)."""
    return {"batch_id": step.batch_id, "correlation_id": step.correlation_id}


@attrs.define
class _Staged:
    """One unit of work decided in a fold: the main command's or a resumed fact's."""

    event_id: str
    batch_id: str
    correlation_id: str
    topic: str
    change: Change
    decision: Decision | None = None
    waiting: str | None = None
    error: PipelineStateError | None = None


def _batch_of(item: _Queued) -> object:
    """The batch a queued message is about: the group commit keeps one batch's messages in
    one group, in arrival order."""
    return getattr(item[0].payload, "batch_id", None)


@attrs.define
class _Batch:
    """What a fold knows of one batch: its state and its waiting facts (arrival order)."""

    state: BatchState | None
    waiting: list[WaitingFact]
    rewaits: tuple[tuple[str, str], ...] = ()
    """Facts still waiting whose reason the last re-attempt changed: (event id, reason)."""


def _with_rewaits(steps: list[_Staged], batch: _Batch) -> list[_Staged]:
    """``steps`` with ``batch.rewaits`` carried by the last one (same unit of work)."""
    if not batch.rewaits or not steps:
        return steps
    last = steps[-1]
    rewaits = (*last.change.rewaits, *batch.rewaits)
    batch.rewaits = ()
    return [*steps[:-1], attrs.evolve(last, change=attrs.evolve(last.change, rewaits=rewaits))]


class PipelineService:
    """Runs commands against a store with the rules of the profile.

    ``max_attempts`` bounds retries after a lost compare-and-set; the last
    :class:`~pipeline_state.errors.ConcurrencyConflictError` propagates if all fail.
    ``waiting_window_seconds`` (default :data:`DEFAULT_WAITING_WINDOW_SECONDS`, 15 minutes)
    is how long an early fact waits for its batch before :meth:`sweep_waiting` expires it.
    ``counters`` counts ``deferred``, ``resumed``, ``correlation_mismatch``,
    ``waiting_denied`` and ``waiting_dead_lettered`` events of this process.

    Concurrent :meth:`handle_message` calls commit together (group commit,
    :mod:`pipeline_state._coalesce`): a call made while fewer than two units of work are in
    flight and none waits is handled at once, so a lone caller is unchanged; other calls wait
    for a unit of work in flight to end (while a slot is free, at most
    ``LONE_WAIT_SECONDS``, 10 ms) and are then decided and committed together, up to
    ``group_limit`` (default :data:`DEFAULT_GROUP_LIMIT`) at a time, each with the result or
    error it would have had alone, in arrival order. ``group_limit=1`` handles every call in
    a unit of work of its own.
    """

    def __init__(
        self,
        store: Store,
        *,
        profile: Profile | None = None,
        clock: Clock | None = None,
        max_attempts: int = 8,
        waiting_window_seconds: float = DEFAULT_WAITING_WINDOW_SECONDS,
        limits: IntakeLimits = DEFAULT_LIMITS,
        group_limit: int = DEFAULT_GROUP_LIMIT,
    ) -> None:
        if check_deadline(waiting_window_seconds) is not None:
            raise ValueError(
                f"waiting_window_seconds must be a positive number of seconds, at most "
                f"{MAX_DEADLINE_SECONDS} (ten years), got {waiting_window_seconds!r}"
            )
        if group_limit < 1:
            raise ValueError("group_limit must be at least 1 (1: no group commit)")
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ValueError(f"max_attempts must be a whole number of at least 1, got {max_attempts!r}")
        self.store = store
        self.profile = default_profile() if profile is None else check_profile(profile)
        self.clock: Clock = clock or SystemClock()
        self.max_attempts = max_attempts
        self.waiting_window_seconds = waiting_window_seconds
        self.limits = limits
        """Size and nesting bounds checked on every raw inbound message before parsing."""
        self.counters: Counter[str] = Counter()
        self._unsettled: set[str] = set()
        """Batches to look at again once this call's commits are done (see
        :meth:`_settle_new_batches`)."""
        self._unswept: set[str] = set()
        """Overdue batches the last deadline sweep could not sweep (see :meth:`expire_overdue`)."""
        self._early: set[str] = set()
        """Batches the last deadline sweep found filed before their deadline (same method)."""
        self._group: Coalescer[_Queued, HandleResult] | None = None
        if group_limit > 1:
            self._group = Coalescer(self._alone, self._together, limit=group_limit, key=_batch_of)

    # -- entry points ---------------------------------------------------------------------
    async def handle_message(
        self,
        topic: str,
        raw: bytes | str | Mapping[str, Any],
        *,
        trace: Mapping[str, str] | TraceContext | None = None,
    ) -> HandleResult:
        """Parse one inbound message and handle it. Raises
        :class:`~pipeline_state.errors.InvalidMessageError` for input that breaks the contract
        and :class:`~pipeline_state.errors.BadCommandError` for input that can never apply.
        An early fact is kept to wait (``result.waiting``) rather than rejected. ``trace``:
        the message's W3C trace-context headers, continued by its span (see
        :mod:`pipeline_state._tracing`); without them the current trace is."""
        with handling(topic, trace) as span:
            command, data = _parsed(self.profile.inbound, topic, raw, self.limits)
            if self._group is None:
                result = await self._handle(command, topic=topic, raw=data)
            else:
                result = await self._group.submit((command, topic, data, span))
            if self._unsettled:
                await self._settle_new_batches()
            return handled(span, topic, result)

    async def _alone(self, item: _Queued) -> HandleResult:
        """A :meth:`handle_message` call that found a unit of work free to start and nobody
        queued: handled at once, in its own unit of work (in its span)."""
        command, topic, raw, _ = item
        return await self._handle(command, topic=topic, raw=raw)

    async def _together(self, items: Sequence[_Queued]) -> list[HandleResult | BaseException]:
        """:meth:`handle_message` calls that queued while another was in flight: decided
        in order and committed in one unit of work (:meth:`_batched`); if that loses a race
        or fails, one by one. Each gets its own result or error."""
        spans = [span for *_, span in items]
        pending = [(index, command, topic, raw) for index, (command, topic, raw, _) in enumerate(items)]
        results: list[HandleResult | BaseException | None] = [None] * len(items)
        commit_many = getattr(self.store, "commit_many", None)
        together = False
        if len(items) > 1 and commit_many is not None:
            try:
                together = await self._batched(pending, results, commit_many, spans)
            except Exception:  # each message below meets the error (or not) on its own
                log.debug("group commit of %d messages failed: one by one", len(items), exc_info=True)
        if not together:
            await self._one_by_one(pending, results, spans, Exception)
        return _filled(results)

    async def handle_many(
        self,
        messages: Sequence[InboundMessage],
        *,
        traces: Sequence[Mapping[str, str] | TraceContext | None] = (),
    ) -> list[HandleResult | PipelineStateError]:
        """Handle ``(topic, raw)`` messages in order, committing them all in one unit of work.

        Returns one entry per message, in order: exactly what calling :meth:`handle_message`
        on each in turn would return (same decisions, outbox messages and event ids, same
        final states, same waiting facts), with the error it would raise in the slot of a
        message that breaks the contract (:class:`~pipeline_state.errors.InvalidMessageError`)
        or can never apply (:class:`~pipeline_state.errors.BadCommandError`,
        :class:`~pipeline_state.errors.IllegalTransitionError`). A repeated event id, in
        the store's inbox or earlier in ``messages``, is a duplicate.

        Each batch is loaded once and the decisions are folded over its messages; the
        changes go to :meth:`~pipeline_state.ports.BatchingStore.commit_many` together
        (one transaction). If that loses a race (a conflict or duplicate: nothing was
        written), or the store has no ``commit_many``, the messages are handled one by one
        with :meth:`handle`, which retries from fresh reads. Store errors propagate
        (:class:`~pipeline_state.errors.StoreUnavailableError`: nothing of this call is
        lost by retrying it whole, the inbox makes redelivery harmless).

        ``traces`` gives the messages' W3C trace-context headers by position; each message
        gets its own span (see :mod:`pipeline_state._tracing`), ended once its work committed.
        """
        spans = [inbound_span(m[0], traces[i] if i < len(traces) else None) for i, m in enumerate(messages)]
        try:
            done = await self._handle_many(messages, spans)
            if self._unsettled:
                await self._settle_new_batches()
        except BaseException as exc:
            for span, (topic, _) in zip(spans, messages, strict=True):
                finish(span, topic, exc)
            raise
        out: list[HandleResult | PipelineStateError] = []
        for span, (topic, _), result in zip(spans, messages, done, strict=True):
            finish(span, topic, result)
            out.append(with_span_ids(span, result) if isinstance(result, HandleResult) else result)
        return out

    async def _handle_many(
        self, messages: Sequence[InboundMessage], spans: Sequence[Span]
    ) -> list[HandleResult | PipelineStateError]:
        """:meth:`handle_many`, each message's work in its span of ``spans``."""
        results: list[HandleResult | BaseException | None] = [None] * len(messages)
        pending: list[tuple[int, Command, str, bytes]] = []
        for index, (topic, raw) in enumerate(messages):
            try:
                command, data = _parsed(self.profile.inbound, topic, raw, self.limits)
                pending.append((index, command, topic, data))
            except (InvalidMessageError, BadCommandError) as exc:
                results[index] = exc
        commit_many = getattr(self.store, "commit_many", None)
        if pending and (commit_many is None or not await self._batched(pending, results, commit_many, spans)):
            await self._one_by_one(pending, results, spans, _NEVER_APPLIES)
        return cast("list[HandleResult | PipelineStateError]", _filled(results))

    async def _one_by_one(
        self,
        pending: Sequence[tuple[int, Command, str, bytes]],
        results: list[HandleResult | BaseException | None],
        spans: Sequence[Span],
        caught: type[Exception] | tuple[type[Exception], ...],
    ) -> None:
        """Handle ``pending`` in order, a unit of work each, each in its span; an error of
        ``caught`` fills the message's slot of ``results``, any other propagates."""
        for index, command, topic, raw in pending:
            try:
                with entered(spans[index]):
                    results[index] = await self._handle(command, topic=topic, raw=raw)
            except caught as exc:
                results[index] = exc

    async def _batched(
        self,
        pending: Sequence[tuple[int, Command, str, bytes]],
        results: list[HandleResult | BaseException | None],
        commit_many: Callable[[Sequence[Change]], Awaitable[None]],
        spans: Sequence[Span],
    ) -> bool:
        """Decide ``pending`` on one read per batch and commit them together; fill
        ``results`` and return ``True``, or ``False`` (nothing written, ``results`` of
        ``pending`` untouched) when the commit lost a race."""
        batches: dict[str, _Batch] = {}
        seen: set[str] = set()
        staged: list[tuple[int, list[_Staged]]] = []
        outcome: dict[int, HandleResult | PipelineStateError] = {}
        reads = _event_reader(self.store)
        processed: frozenset[str] | None = None
        if reads is not None:  # every inbox check and batch in one read
            pairs = [(c.batch_id, c.event_id) for _, c, _, _ in pending]
            processed, read = await reads.load_for_events(pairs)
            for batch_id, (state, has_waiting) in read.items():
                batches[batch_id] = await self._with_waiting(batch_id, state, has_waiting)
        for index, command, topic, raw in pending:
            batch_id = command.batch_id
            if command.event_id in seen:
                duplicate = True
            elif processed is not None:
                duplicate = command.event_id in processed
            else:
                duplicate = await self.store.is_processed(command.event_id)
            if duplicate and command.event_id not in seen:
                replayed = await self._replayed(command)
                if replayed is not None and replayed.event_id not in seen:
                    command, duplicate = replayed, False
            if duplicate:
                outcome[index] = HandleResult(
                    command.event_id, batch_id, None, duplicate=True, correlation_id=command.correlation_id
                )
                continue
            if batch_id not in batches:
                batches[batch_id] = await self._read(batch_id)
            await self._knowing_past(command, batches[batch_id])
            try:
                with entered(spans[index]):  # the outbox rows it emits carry its trace
                    steps = self._fold(command, topic, raw, batches[batch_id])
            except _NEVER_APPLIES as exc:
                outcome[index] = exc
                continue
            seen.add(command.event_id)
            staged.append((index, steps))
        changes = [step.change for _, steps in staged for step in steps]
        if changes:
            try:
                await commit_many(changes)
            except (ConcurrencyConflictError, DuplicateEventError):
                log.debug("batched commit of %d changes lost a race, handling one by one", len(changes))
                return False
            self._note_unsettled(changes)
        for index, steps in staged:
            outcome[index] = self._committed(steps, 1)
        for index, result in outcome.items():
            results[index] = result
        return True

    async def execute(
        self,
        payload: OperatorCommand | EngineInput | WireModel,
        *,
        event_id: str | None = None,
        correlation_id: str | None = None,
        record_refusal: bool = False,
    ) -> HandleResult:
        """Run an operator command (cancel, retry, ...), or an engine input or a payload of
        the profile's inbound wire that arrived by another route (HTTP). ``event_id`` is the
        idempotency key; a new one is made when absent. Such a command never waits: it
        applies, or is ignored, denied or rejected now (``record_refusal``: see :meth:`handle`)."""
        if isinstance(payload, WireModel):
            payload = self.profile.inbound.decode(payload)
        command = Command(payload, event_id or str(uuid.uuid4()), correlation_id or str(uuid.uuid4()))
        topic = f"operator.{type(payload).__name__}"
        return await self.handle(command, topic=topic, record_refusal=record_refusal)

    async def expire_overdue(self, *, limit: int = 1000) -> list[HandleResult]:
        """Fail the overdue phases of every batch whose deadline has passed.

        A batch that cannot be swept (its stored state is unreadable, it kept losing its
        compare-and-set, the decision refused it) is logged and left for the next sweep; the
        other batches are swept all the same. Such batches take no slot of ``limit`` in later
        sweeps (up to 10,000 of them are remembered and asked for on top), so
        overdue batches that cannot be swept never keep the others from their deadlines; nor
        do batches filed before their deadline (see ``_deadline_index``), which the sweep
        finds with nothing overdue yet: those of the last sweep are asked for on top too. A
        store that cannot be reached stops the sweep."""
        check_limit(limit)
        now = self.clock.now()
        results = []
        unswept, early = self._unswept, self._early
        asked = limit + len(unswept) + len(early)
        overdue = await self.store.overdue_batches(now, asked)
        if len(overdue) < asked:
            # Runs changed "in the future" (a process whose clock was ahead accepted them):
            # their deadlines may be that far ahead too; the phase guard ``overdue`` decides.
            ahead = await self.store.stalled_runs(now, MAX_STALLED_AGE_SECONDS, limit=limit)
            overdue = list(dict.fromkeys([*overdue, *(s.batch_id for s in ahead)]))
        self._unswept = failed = unswept.intersection(overdue)
        found_early: set[str] = set()
        self._early = found_early
        swept = 0
        for batch_id in overdue:
            if swept >= limit and batch_id not in failed:
                continue  # the page asked for room for the batches that failed before
            try:
                results.append(await self._expire(batch_id, now))
            except _ONE_BATCH as exc:
                log.error(
                    "deadline sweep skipped batch %s: %s: %s",
                    batch_id,
                    type(exc).__name__,
                    exc,
                    extra={"batch_id": batch_id},
                )
                if len(failed) < _MAX_UNSWEPT:
                    failed.add(batch_id)
                continue
            failed.discard(batch_id)
            # A batch filed early (see ``_deadline_index``) with nothing overdue yet takes no
            # slot, and the next sweep asks for one more row for it: it never keeps the
            # others from their deadlines.
            if results[-1].ignored != "nothing_overdue":
                swept += 1
            elif len(found_early) < _MAX_UNSWEPT:
                found_early.add(batch_id)
        return results

    async def _expire(self, batch_id: str, now: datetime) -> HandleResult:
        event_id = derive_id("expire", batch_id, now.isoformat())
        state = await self.store.load(batch_id)
        run = None if state is None else state.active_run
        # The sweep belongs to the run it expires: its log rows carry the run's correlation id.
        correlation_id = run.correlation_id if run is not None else str(uuid.uuid4())
        command = Command(ExpireOverdue(batch_id), event_id, correlation_id)
        return await self.handle(command, topic="operator.ExpireOverdue")

    async def get_batch(self, batch_id: str) -> BatchState:
        """The batch as it is shown: its state with its archived runs (``history``) read from
        the store's history (decisions never read them); :class:`BatchNotFoundError` when
        there is no such batch."""
        state = await self.shown_batch(batch_id)
        if state is None:
            raise BatchNotFoundError(batch_id)
        return state

    async def shown_batch(self, batch_id: str) -> BatchState | None:
        """:meth:`get_batch`, or ``None`` when there is no such batch."""
        state = await self.store.load(batch_id)
        if state is None or state.past.count == 0:
            return state
        return evolve(state, history=tuple(await self.store.history(batch_id)))

    # -- waiting facts --------------------------------------------------------------------
    async def waiting_count(self) -> int:
        """How many early facts wait (for the live summary)."""
        return await self.store.count_waiting()

    async def expired_waiting(self, now: datetime | None = None, *, limit: int = 100) -> list[ExpiredFact]:
        """The waiting facts that arrived more than :attr:`waiting_window_seconds` before
        ``now`` (default: the clock's now) and still cannot apply, oldest first.

        Each expired fact's batch is first re-attempted once (a fact that applies by now is
        applied, not expired). An expired pipeline request is then answered with the
        contract's denial (``batch_not_found`` or ``batch_not_ready``: never silent) and
        leaves the waiting set; it is not returned. Every other expired fact is returned,
        *still waiting*: write its dead letter (``raw`` to ``<topic>.DLQ`` with ``reason``),
        then call :meth:`forget_waiting` with its event id. A crash in between dead-letters
        it again on the next sweep (at-least-once: the dead letter keeps the event id).
        """
        check_limit(limit)
        now = self.clock.now() if now is None else now
        cutoff = now - timedelta(seconds=self.waiting_window_seconds)
        ahead = now + _CLOCK_STEP_HORIZON
        facts = await self.store.list_waiting(arrived_before=cutoff, limit=limit)
        if len(facts) < limit:
            # Stamped more than the horizon ahead: kept by a process whose clock was ahead
            # (CLOCK_STEP_HORIZON_SECONDS), it would otherwise wait until that time comes.
            # Such a fact reaches the oldest page (arrival order) within a window or two.
            # A fact found never to apply goes at once (it is among the oldest page, or
            # reaches it, or the cutoff, within a window).
            listed = {f.event_id for f in facts}
            oldest = await self.store.list_waiting(limit=limit)
            due = [f for f in oldest if (f.arrived_at > ahead or _marked(f)) and f.event_id not in listed]
            facts += due[: limit - len(facts)]
        expired: list[ExpiredFact] = []
        for batch_id in dict.fromkeys(f.batch_id for f in facts):
            try:
                await self.resume_waiting(batch_id)
                batch = await self._read(batch_id)
            except _ONE_BATCH as exc:
                # Its facts can never apply to a batch that cannot be read: they expire as
                # listed (their dead letters keep them for a replay once it is mended).
                _log_unswept("waiting sweep could not read batch", batch_id, exc)
                expired.extend(
                    ExpiredFact(f, f"waited for {f.waits_for}; its batch cannot be read: {exc}")
                    for f in facts
                    if f.batch_id == batch_id
                )
                continue
            for fact in batch.waiting:
                if _marked(fact):  # the reason names the mark, as a waited fact's what it waited for
                    reason = f"re-attempted once its batch was there: {fact.waits_for}"
                    expired.append(ExpiredFact(fact, reason))
                    continue
                if cutoff <= fact.arrived_at <= ahead:
                    continue
                if await self._deny_expired(fact):
                    continue
                reason = (
                    f"waited {self.waiting_window_seconds:g}s for {fact.waits_for} "
                    f"(since {fact.arrived_at.isoformat()})"
                )
                if fact.arrived_at > ahead:
                    reason = (
                        f"waited for {fact.waits_for}, stamped {fact.arrived_at.isoformat()} by a "
                        "clock ahead of this one"
                    )
                expired.append(ExpiredFact(fact, reason))
        return expired

    async def forget_waiting(self, event_ids: Sequence[str]) -> int:
        """Remove dead-lettered facts from the waiting set; their inbox result becomes
        ``dead_lettered:<what it waited for>``. Returns how many were removed."""
        if not event_ids:
            return 0
        wanted = set(event_ids)
        removed = 0
        now = self.clock.now()
        by_reason: dict[str, list[str]] = {}
        for fact in await self.store.list_waiting(limit=max(len(wanted) * 4, 1000)):
            if fact.event_id in wanted:
                by_reason.setdefault(fact.waits_for, []).append(fact.event_id)
                wanted.discard(fact.event_id)
        if wanted:
            by_reason.setdefault("expired", []).extend(sorted(wanted))
        for reason, ids in by_reason.items():
            removed += await self.store.forget_waiting(ids, f"{DEAD_LETTERED}{reason}", now)
        self.counters["waiting_dead_lettered"] += removed
        return removed

    async def sweep_waiting(
        self, dead_letter: Callable[[ExpiredFact], Awaitable[None]], *, limit: int = 100
    ) -> WaitingSweep:
        """One sweep of the waiting set, for a periodic task: re-attempt the batches of the
        oldest waiting facts (a safety net for a change made by another process while a
        fact was being deferred), then expire what waited too long (see
        :meth:`expired_waiting`), ``limit`` at a time for as long as pages come back full (at
        most 100 of them), so that facts expire as fast as they arrive:
        ``await dead_letter(fact)`` for each, and only once it returned,
        :meth:`forget_waiting` it. An exception from ``dead_letter`` propagates
        and leaves that fact (and the rest) waiting for the next sweep."""
        check_limit(limit)
        resumed = 0
        for batch_id in dict.fromkeys(f.batch_id for f in await self.store.list_waiting(limit=limit)):
            try:
                resumed += len(await self.resume_waiting(batch_id))
            except _ONE_BATCH as exc:  # expired_waiting below deals with its facts
                _log_unswept("waiting sweep could not re-attempt batch", batch_id, exc)
        denied_before = self.counters["waiting_denied"]
        dead = 0
        for _ in range(_SWEEP_PAGES):  # a full page: more may have expired, take them now
            page = await self.expired_waiting(limit=limit)
            for expired in page:
                await dead_letter(expired)
                dead += await self.forget_waiting([expired.event_id])
            if len(page) < limit:
                break
        return WaitingSweep(resumed, self.counters["waiting_denied"] - denied_before, dead)

    async def resume_waiting(self, batch_id: str) -> list[HandleResult | PipelineStateError]:
        """Re-attempt the waiting facts of ``batch_id`` now (in arrival order, as a change of
        the batch does); returns the results of those that left the waiting set."""
        async for attempt in self._attempts():
            with attempt:
                batch = await self._read(batch_id)
                steps = _with_rewaits(self._resume(batch), batch)
                if not steps:
                    return []
                await self._commit([s.change for s in steps])
                return [self._result(s, attempt.number) for s in steps]
        raise AssertionError("unreachable")  # pragma: no cover

    async def _deny_expired(self, fact: WaitingFact) -> bool:
        """Answer an expired pipeline request with its denial; ``False`` for other facts."""
        try:
            command = self._fact_command(fact)
        except InvalidMessageError:
            return False
        if not isinstance(command.payload, RequestPipeline):
            return False
        async for attempt in self._attempts():
            with attempt:
                batch = await self._read(fact.batch_id)
                if all(w.event_id != fact.event_id for w in batch.waiting):
                    return True  # resolved meanwhile
                step = self._decided(command, fact.topic, batch.state, resolves=fact.event_id)
                await self._commit([step.change])
                self.counters["waiting_denied"] += 1
                log.warning(
                    "pipeline request %s for batch %s waited %gs for %s: %s",
                    fact.event_id,
                    fact.batch_id,
                    self.waiting_window_seconds,
                    fact.waits_for,
                    step.change.inbox.result if step.change.inbox else "?",
                    extra={"batch_id": fact.batch_id, "correlation_id": command.correlation_id},
                )
                return True
        return True  # pragma: no cover

    # -- the unit of work -----------------------------------------------------------------
    async def handle(
        self, command: Command, *, topic: str, raw: bytes | None = None, record_refusal: bool = False
    ) -> HandleResult:
        """Handle one command in one unit of work (retried from a fresh read after a lost
        compare-and-set). With ``raw`` (the message as received) an early fact is kept to
        wait; without it, it is decided at once. Either way, when the change moves the
        batch, its waiting facts are re-attempted in the same unit of work. The work is one
        span of the current trace (:mod:`pipeline_state._tracing`).

        ``record_refusal``: a command the batch's state refuses
        (:class:`~pipeline_state.errors.BadCommandError`,
        :class:`~pipeline_state.errors.IllegalTransitionError`) is recorded in the inbox as
        ``rejected:<error>`` before the error is raised, so a repeat of its event id is a
        duplicate and never applies later, to a state the first attempt did not see. For an
        event id a client chose as its idempotency key (HTTP's ``Idempotency-Key``); without
        it a refusal records nothing and the same event id may apply once the state allows it
        (the CLI's ids, derived from the action, name the intent, not one attempt)."""
        with handling(topic) as span:
            result = await self._handle(command, topic=topic, raw=raw, record_refusal=record_refusal)
            if self._unsettled:
                await self._settle_new_batches()
            return handled(span, topic, result)

    async def _handle(
        self, command: Command, *, topic: str, raw: bytes | None, record_refusal: bool = False
    ) -> HandleResult:
        """:meth:`handle` in the span of its caller: one unit of work
        (:func:`~pipeline_state._unit_of_work.run_unit_of_work`)."""
        batch_id = command.batch_id
        reads = _event_reader(self.store)
        read: list[_Batch] = []  # the batch read with this attempt's inbox check, if any

        async def processed() -> bool:
            nonlocal command
            if reads is None:
                seen = await self.store.is_processed(command.event_id)
            else:
                seen, state, has_waiting = await reads.load_for_event(batch_id, command.event_id)
                if not seen:
                    read.append(await self._with_waiting(batch_id, state, has_waiting))
            if not seen:
                return False
            replayed = await self._replayed(command)
            if replayed is None:
                return True
            command = replayed  # a dead-lettered fact replayed: handled under a derived id
            return False

        lost: list[ConcurrencyConflictError] = []  # this call's lost compare-and-sets
        done: set[str] = set()  # resumed facts the store found handled before (see commit)

        async def decide() -> list[_Staged]:
            batch = await self._knowing_past(command, read.pop() if read else await self._read(batch_id))
            if lost:
                _check_moved(batch.state, lost[-1])
            return self._fold(command, topic, raw, batch, record_refusal=record_refusal, done=done)

        async def commit(steps: list[_Staged]) -> None:
            while True:
                try:
                    await self._commit([s.change for s in steps])
                    return
                except ConcurrencyConflictError as exc:
                    lost.append(exc)
                    raise
                except DuplicateEventError as exc:
                    # A waiting fact this command woke was handled before (a redelivery the
                    # inbox purge forgot; the store knows it by the messages it emitted): it
                    # ends as such, and the command is decided again without it. The command
                    # itself being the duplicate is for run_unit_of_work to answer.
                    fact = exc.event_id
                    if (
                        fact == command.event_id
                        or fact in done
                        or all(s.change.resolves != fact for s in steps)
                    ):
                        raise
                    done.add(fact)
                    batch = await self._knowing_past(command, await self._read(batch_id))
                    steps[:] = self._fold(
                        command, topic, raw, batch, record_refusal=record_refusal, done=done
                    )

        async def committed(steps: list[_Staged], attempt: int) -> HandleResult:
            return self._committed(steps, attempt)

        return await run_unit_of_work(
            self._attempts(batch_id),
            processed=processed,
            decide=decide,
            commit=commit,
            committed=committed,
            duplicate=functools.partial(self._duplicate, command),
        )

    async def _replayed(self, command: Command) -> Command | None:
        """``command``, whose event id the inbox holds, under the id a replay of it is handled
        with when that entry closed a dead-lettered fact (see ``pipeline_state._replay``);
        ``None`` when it is a duplicate."""
        seen = getattr(self.store, "was_dead_lettered", None)
        if callable(seen) and seen(command.event_id) is False:
            return None  # the inbox check just found a plain duplicate: no second read
        event_id = await unprocessed_replay_id(self.store, command.event_id)
        if event_id is None or event_id == command.event_id:
            return None
        self.counters["replayed"] += 1
        return attrs.evolve(command, event_id=event_id)

    def _attempts(self, batch_id: str | None = None) -> Retrying:
        """The attempts of one unit of work (:func:`~pipeline_state._unit_of_work.conflict_retries`)."""
        return conflict_retries(self.max_attempts, log, "version conflict", batch_id)

    @staticmethod
    def _duplicate(command: Command, attempt: int) -> HandleResult:
        return HandleResult(
            command.event_id,
            command.batch_id,
            None,
            duplicate=True,
            attempts=attempt,
            correlation_id=command.correlation_id,
        )

    async def _read(self, batch_id: str) -> _Batch:
        """The batch's state and, only when it has any, its waiting facts."""
        state, has_waiting = await self.store.load_with_waiting(batch_id)
        return await self._with_waiting(batch_id, state, has_waiting)

    async def _with_waiting(self, batch_id: str, state: BatchState | None, has_waiting: bool) -> _Batch:
        """The batch of ``state``, with its waiting facts read when ``has_waiting``; then the
        ids of its archived runs too when its summary lacks them, since any decision that
        re-attempts a waiting fact may ask about them (the sweeps, an expired request's
        denial and a re-decision decide from this read alone)."""
        waiting = await self.store.list_waiting(batch_id, limit=_RESUME_LIMIT) if has_waiting else []
        batch = _Batch(state, waiting)
        if waiting and state is not None and state.past.count and not state.past.known:
            await self._list_archived_ids(batch, state)
        return batch

    async def _knowing_past(self, command: Command, batch: _Batch) -> _Batch:
        """``batch``, its summary listing the ids of its archived runs when deciding
        ``command`` may ask about them (:func:`~pipeline_state._decide.asks_archived_ids`)
        and the summary lacks them (the SQL store does not write them): read from the
        store's history for these rare inputs, so an ordinary event neither reads nor
        rewrites ids that grow with the history."""
        state = batch.state
        if (
            state is None
            or state.past.known
            or not asks_archived_ids(state, command.payload, resumes=bool(batch.waiting))
        ):
            return batch
        await self._list_archived_ids(batch, state)
        return batch

    async def _list_archived_ids(self, batch: _Batch, state: BatchState) -> None:
        """``batch`` with ``state``, its summary listing the ``(run id, correlation id)`` of
        each archived run: one light query on a store that has it, else from the runs
        themselves."""
        if isinstance(self.store, ArchiveIndexStore):
            archived = await self.store.archived_ids(state.batch_id)
        else:
            archived = [(run.run_id, run.correlation_id) for run in await self.store.history(state.batch_id)]
        batch.state = attrs.evolve(state, past=state.past.knowing(archived))

    async def _commit(self, changes: Sequence[Change]) -> None:
        if len(changes) == 1:
            await self.store.commit(changes[0])
        elif (commit_many := getattr(self.store, "commit_many", None)) is not None:
            await commit_many(changes)
        else:
            for change in changes:  # a store without commit_many: one unit of work per change
                await self.store.commit(change)
        self._note_unsettled(changes)

    def _note_unsettled(self, changes: Sequence[Change]) -> None:
        """After ``changes`` committed: the batches they created, or kept a fact for while
        they did not exist, to look at again (:meth:`_settle_new_batches`)."""
        for change in changes:
            if change.expected_version is None and (change.state is not None or change.waiting is not None):
                self._unsettled.add(change.batch_id)

    async def _settle_new_batches(self) -> None:
        """Resume the facts of batches that the commits of this process created, or kept a
        fact for while they did not exist, if any wait once those commits are done.

        A batch's creation and an early fact of it can be decided at the same moment (two
        callers, two processes): the creation read no waiting fact and the fact read no
        batch, so neither change resumes the other and no later change of the batch may come.
        Each side looks again after its own commit; whichever looks last finds both. A store
        error here is logged and left to :meth:`sweep_waiting`: what it would resume is kept."""
        while True:
            try:  # another thread's service call may take the last one first
                batch_id = self._unsettled.pop()
            except KeyError:
                return
            try:
                state, has_waiting = await self.store.load_with_waiting(batch_id)
                if state is not None and has_waiting:
                    await self.resume_waiting(batch_id)
            except PipelineStateError as exc:
                log.warning(
                    "could not resume the waiting facts of new batch %s (left to the sweep): %s",
                    batch_id,
                    exc,
                    extra={"batch_id": batch_id},
                )

    def _fold(
        self,
        command: Command,
        topic: str,
        raw: bytes | None,
        batch: _Batch,
        *,
        record_refusal: bool = False,
        done: frozenset[str] | set[str] = frozenset(),
    ) -> list[_Staged]:
        """Decide ``command`` on ``batch`` (and advance ``batch`` as if committed): defer it
        when it is early, else decide it, then re-attempt the batch's waiting facts if it
        moved the batch. The one code path of :meth:`handle` and :meth:`handle_many`.
        ``record_refusal``: see :meth:`handle`; ``done``: waiting facts known to have been
        handled before, which end as duplicates instead of being decided again.
        Raises what :func:`~pipeline_state._decide.decide` raises for the command itself."""
        state = batch.state
        reason = None
        if raw is not None:
            others = _others_waiting(command, batch.waiting, self.profile.inbound)
            reason = waits_for(state, command, self.profile, waiting=others)
        if reason is not None:
            if len(batch.waiting) >= MAX_WAITING_PER_BATCH:
                raise WaitingLimitError(batch_id=command.batch_id, limit=MAX_WAITING_PER_BATCH)
            step = self._deferred(command, topic, raw or b"", state, reason)
            if step.change.state is not None:
                batch.state = step.change.state
            assert step.change.waiting is not None
            batch.waiting.append(step.change.waiting)
            return [step]
        try:
            step = self._decided(command, topic, state)
        except _NEVER_APPLIES as exc:
            if not record_refusal:
                raise
            return [self._refused(command, topic, state, exc)]
        if step.change.state is not None:
            batch.state = step.change.state
        steps = [step]
        if batch.waiting and step.decision is not None and step.decision.changed:
            steps = _with_rewaits(steps + self._resume(batch, done), batch)
        return steps

    def _fact_command(self, fact: WaitingFact) -> Command:
        """The command of a waiting fact, under the fact's event id: a replayed dead letter
        waits under the id derived for it (``pipeline_state._replay``), while its message
        still carries the original one, which the inbox closed."""
        command = _command(self.profile.inbound, fact.topic, fact.raw, self.limits)
        if command.event_id != fact.event_id:
            command = attrs.evolve(command, event_id=fact.event_id)
        return command

    def _resume(self, batch: _Batch, done: frozenset[str] | set[str] = frozenset()) -> list[_Staged]:
        """Re-attempt ``batch``'s waiting facts in arrival order against its state; each that
        no longer waits is decided (and leaves the waiting set). After a fact moves the
        batch, start again from the oldest. A fact that still waits, but now for something
        else (its batch moved on, not far enough), gets its new reason in ``batch.rewaits``
        (see :func:`_with_rewaits`), so lists and dead letters name what it waits for now."""
        steps: list[_Staged] = []
        moved = True
        now_waiting: dict[str, str] = {}
        commands: dict[str, Command] = {}  # each fact parsed once, however many passes
        while moved and batch.waiting:
            moved = False
            now_waiting = {}
            for fact in list(batch.waiting):
                if fact.event_id in done:  # handled before: it leaves, as a duplicate
                    steps.append(self._rejected(fact, batch.state, DuplicateEventError(fact.event_id)))
                    batch.waiting.remove(fact)
                    continue
                if _marked(fact):
                    continue  # kept for its dead letter only
                command = commands.get(fact.event_id)
                if command is None:
                    try:
                        command = commands[fact.event_id] = self._fact_command(fact)
                    except InvalidMessageError as exc:  # stored by an older version, say
                        steps.append(self._never_applies(fact, batch, exc))
                        continue
                others = _others_waiting(command, batch.waiting, self.profile.inbound)
                reason = waits_for(batch.state, command, self.profile, waiting=others, deferred=True)
                if reason is not None:
                    now_waiting[fact.event_id] = reason
                    continue
                try:
                    step = self._decided(command, fact.topic, batch.state, resolves=fact.event_id)
                except _NEVER_APPLIES as exc:
                    steps.append(self._never_applies(fact, batch, exc, command))
                    continue
                batch.waiting.remove(fact)
                steps.append(step)
                if step.change.state is not None:
                    batch.state = step.change.state
                if step.decision is not None and step.decision.changed:
                    moved = True
                    break
        batch.rewaits = tuple(
            (f.event_id, now_waiting[f.event_id])
            for f in batch.waiting
            if now_waiting.get(f.event_id, f.waits_for) != f.waits_for
        )
        if batch.rewaits:
            batch.waiting = [
                attrs.evolve(f, waits_for=now_waiting.get(f.event_id, f.waits_for)) for f in batch.waiting
            ]
        return steps

    def _decided(
        self, command: Command, topic: str, state: BatchState | None, *, resolves: str | None = None
    ) -> _Staged:
        decision, change = self._unit_of_work(command, topic, state, resolves=resolves)
        return _Staged(command.event_id, command.batch_id, command.correlation_id, topic, change, decision)

    def _deferred(
        self, command: Command, topic: str, raw: bytes, state: BatchState | None, reason: str
    ) -> _Staged:
        """Keep ``command`` waiting. On a known batch the version moves on (the state is
        otherwise unchanged), so a writer that read the batch before the fact was kept
        loses its compare-and-set and sees it on its fresh read."""
        now = self.clock.now()
        bumped = None if state is None else evolve(state, version=state.version + 1)
        change = Change(
            batch_id=command.batch_id,
            expected_version=None if state is None else state.version,
            state=bumped,
            at=now,
            inbox=InboxEntry(command.event_id, topic, command.batch_id, f"deferred:{reason}", now),
            waiting=WaitingFact(command.event_id, topic, command.batch_id, raw, reason, now),
        )
        return _Staged(
            command.event_id, command.batch_id, command.correlation_id, topic, change, waiting=reason
        )

    def _refused(
        self, command: Command, topic: str, state: BatchState | None, error: PipelineStateError
    ) -> _Staged:
        """A command the batch's state refuses, recorded in the inbox as ``rejected:<error>``
        (nothing else changes) and raised to its caller once committed: a repeat of its event
        id (its idempotency key) is then a duplicate, and never applies later to a state the
        first attempt did not see (a run started since, say)."""
        change = self._rejection(command.event_id, topic, command.batch_id, state, error)
        return _Staged(command.event_id, command.batch_id, command.correlation_id, topic, change, error=error)

    def _never_applies(
        self,
        fact: WaitingFact,
        batch: _Batch,
        error: PipelineStateError,
        command: Command | None = None,
    ) -> _Staged:
        """A waiting fact that turned out never to apply: it stays in the waiting set, marked
        ``never_applies:<error>`` (a rewait: its inbox entry still says it was deferred), so
        that the next waiting sweep writes its dead letter before it forgets it, as the same
        record consumed in order would have been dead-lettered. Nothing else changes."""
        mark = f"{NEVER_APPLIES}{type(error).__name__}: {error}"
        if len(mark) > _NEVER_APPLIES_ROOM:
            mark = mark[: _NEVER_APPLIES_ROOM - 3] + "..."
        index = batch.waiting.index(fact)
        batch.waiting[index] = attrs.evolve(fact, waits_for=mark)
        state = batch.state
        change = Change(
            batch_id=fact.batch_id,
            expected_version=None if state is None else state.version,
            state=None,
            at=self.clock.now(),
            rewaits=((fact.event_id, mark),),
        )
        correlation = fact.event_id if command is None else command.correlation_id
        return _Staged(fact.event_id, fact.batch_id, correlation, fact.topic, change, error=error)

    def _rejected(
        self,
        fact: WaitingFact,
        state: BatchState | None,
        error: PipelineStateError,
        command: Command | None = None,
    ) -> _Staged:
        """A waiting fact that leaves without applying (a duplicate of one handled before):
        ``rejected:<error>`` becomes its inbox result (the error is in its result)."""
        correlation = fact.event_id if command is None else command.correlation_id
        change = self._rejection(
            fact.event_id, fact.topic, fact.batch_id, state, error, resolves=fact.event_id
        )
        return _Staged(fact.event_id, fact.batch_id, correlation, fact.topic, change, error=error)

    def _rejection(
        self,
        event_id: str,
        topic: str,
        batch_id: str,
        state: BatchState | None,
        error: PipelineStateError,
        *,
        resolves: str | None = None,
    ) -> Change:
        """The change that records ``error`` as the inbox result of ``event_id`` (``resolves``:
        the waiting fact it ends) and nothing else, under compare-and-set on ``state``."""
        now = self.clock.now()
        return Change(
            batch_id=batch_id,
            expected_version=None if state is None else state.version,
            state=None,
            at=now,
            inbox=InboxEntry(event_id, topic, batch_id, refusal_result(error), now),
            resolves=resolves,
        )

    def _unit_of_work(
        self, command: Command, topic: str, state: BatchState | None, *, resolves: str | None = None
    ) -> tuple[Decision, Change]:
        """Decide ``command`` on ``state`` (read at version ``state.version``) and build the
        change that commits the decision: new state, outbox envelopes, log rows, inbox entry
        (replacing the waiting fact ``resolves``'s when it re-attempts one)."""
        now = self.clock.now()
        decision = decide(state, command, profile=self.profile, now=now)
        batch_id = command.batch_id
        change = Change(
            batch_id=batch_id,
            expected_version=None if state is None else state.version,
            state=decision.state if decision.changed else None,
            at=now,
            outbox=self._envelopes(command, decision, now),
            inbox=InboxEntry(command.event_id, topic, batch_id, _result_label(decision), now),
            transitions=_log_rows(command, batch_id, decision, now),
            resolves=resolves,
            republish=decision.resend,
            archived=decision.archived,
            unpark=decision.unpark,
        )
        return decision, change

    def _committed(self, steps: Sequence[_Staged], attempt: int) -> HandleResult:
        """The result of the committed ``steps`` (the main command first); the error of a
        refused command whose refusal was recorded (see :meth:`_refused`)."""
        first = steps[0]
        if first.error is not None and first.change.resolves is None:
            self.counters["refused"] += 1
            raise first.error
        result = self._result(first, attempt)
        assert isinstance(result, HandleResult)  # only a resumed fact can end in an error
        if len(steps) > 1:
            result = attrs.evolve(result, resumed=tuple(self._result(s, attempt) for s in steps[1:]))
        return result

    def _result(self, step: _Staged, attempt: int) -> HandleResult | PipelineStateError:
        """Log a committed step and give its result (the error of a rejected waiting fact)."""
        command, topic = step, step.topic
        if step.error is not None:
            log.error(
                "waiting %s %s for batch %s can never apply%s: %s",
                topic,
                command.event_id,
                command.batch_id,
                " (kept for its dead letter)" if step.change.resolves is None else "",
                step.error,
                extra=_log_extra(step),
            )
            self.counters["waiting_rejected"] += 1
            return step.error
        if step.waiting is not None:
            self.counters["deferred"] += 1
            log.info(
                "%s %s for batch %s waits for %s",
                topic,
                command.event_id,
                command.batch_id,
                step.waiting,
                extra=_log_extra(step),
            )
            return HandleResult(
                command.event_id,
                command.batch_id,
                None,
                attempts=attempt,
                correlation_id=command.correlation_id,
                waiting=step.waiting,
            )
        decision = step.decision
        assert decision is not None
        if step.change.resolves is not None:
            self.counters["resumed"] += 1
        if decision.ignored:
            log.info(
                "ignored %s for batch %s: %s",
                topic,
                command.batch_id,
                decision.ignored,
                extra=_log_extra(step),
            )
        if decision.flags and CORRELATION_MISMATCH in decision.flags:
            self.counters[CORRELATION_MISMATCH] += 1
            log.warning(
                "%s for batch %s carries correlation id %s, which belongs to no run of the batch: "
                "applied to the active run %s and flagged %s",
                topic,
                command.batch_id,
                command.correlation_id,
                decision.run_id,
                CORRELATION_MISMATCH,
                extra=_log_extra(step),
            )
        return HandleResult(
            command.event_id,
            command.batch_id,
            decision,
            step.change.outbox,
            duplicate=decision.ignored == ALREADY_HANDLED,
            attempts=attempt,
            correlation_id=command.correlation_id,
        )

    def _envelopes(self, command: Command, decision: Decision, now: datetime) -> tuple[OutboxMessage, ...]:
        """The envelopes of ``decision``'s emits, each with the event id derived from the
        command's and the emit's index (:func:`~pipeline_state._decide.outbox_event_id`)."""
        emits = decision.emits
        if not emits:
            return ()
        stamp = now.isoformat()
        source = self.profile.source_service
        cause = command.event_id
        trace = current_trace_context()  # the span handling the command: consumers continue it
        out = []
        for index, emit in enumerate(emits):
            event_id = outbox_event_id(cause, index)
            payload = emit.payload
            value = {
                "event_id": event_id,
                "event_type": emit.topic,
                "event_timestamp": stamp,
                "source_service": source,
                "schema_version": 1,
                "correlation_id": emit.correlation_id,
                "data": payload.__pydantic_serializer__.to_python(payload, mode="json"),
                "metadata": {"causation_id": cause},
            }
            out.append(OutboxMessage(event_id, emit.topic, emit.key, value, trace))
        return tuple(out)


def _log_rows(
    command: Command, batch_id: str, decision: Decision, now: datetime
) -> tuple[TransitionRecord, ...]:
    """The transition log rows of ``decision``'s moves. The fields go by position, in
    declaration order (batch, entity, name, trigger, source, dest, run, event, correlation,
    at, note, requested by): a third cheaper than by keyword, and there is one row per move."""
    event_id, correlation_id, requested_by = command.event_id, command.correlation_id, command.requested_by
    return tuple(
        TransitionRecord(
            batch_id,
            m.entity,
            m.name,
            m.trigger,
            m.source,
            m.dest,
            m.run_id,
            event_id,
            correlation_id,
            now,
            m.note,
            requested_by,
        )
        for m in decision.moves
    )
