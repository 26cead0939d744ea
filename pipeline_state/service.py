"""The application service: load, decide, then commit state, outbox and inbox together.

:class:`PipelineService` is the imperative shell around :func:`~pipeline_state.decide.decide`.
For each inbound message it checks the inbox, loads the batch, decides, turns the emitted
events into envelopes with deterministic ids, and commits everything in one unit of work
guarded by compare-and-set on the batch version. A lost race is retried from a fresh read.
:meth:`PipelineService.handle_many` commits many messages in one transaction (one fsync)
with the outcome of handling them one by one.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import attrs

from .commands import Command, ExpireOverdue, OperatorCommand
from .decide import Decision, decide, derive_id
from .errors import (
    BadCommandError,
    BatchNotFoundError,
    ConcurrencyConflictError,
    DuplicateEventError,
    IllegalTransitionError,
    InvalidMessageError,
    PipelineStateError,
)
from .events import WireModel, parse_message
from .memory import SystemClock
from .model import BatchState
from .ports import Change, Clock, InboxEntry, OutboxMessage, Store, TransitionRecord
from .profile import Profile, huleedu_profile

__all__ = ["HandleResult", "InboundMessage", "PipelineService"]

log = logging.getLogger("pipeline_state.service")


@attrs.frozen
class HandleResult:
    """What handling one command did.

    ``duplicate`` is true when the event id had been processed before (nothing was done);
    otherwise ``decision`` is what was committed and ``messages`` the outbox rows written.
    """

    event_id: str
    batch_id: str
    decision: Decision | None
    messages: tuple[OutboxMessage, ...] = ()
    duplicate: bool = False
    attempts: int = 1
    correlation_id: str | None = None

    @property
    def ignored(self) -> str | None:
        if self.duplicate:
            return "duplicate_event"
        return None if self.decision is None else self.decision.ignored

    @property
    def state(self) -> BatchState | None:
        return None if self.decision is None else self.decision.state


InboundMessage = tuple[str, bytes | str | Mapping[str, Any]]
"""An inbound ``(topic, raw message)`` pair, as :meth:`PipelineService.handle_many` takes it."""

_NEVER_APPLIES = (BadCommandError, IllegalTransitionError)
"""What :func:`~pipeline_state.decide.decide` raises for input that cannot apply."""


def _command(topic: str, raw: bytes | str | Mapping[str, Any]) -> Command:
    """Parse an inbound message into the command it carries (raises
    :class:`~pipeline_state.errors.InvalidMessageError`)."""
    envelope, payload = parse_message(topic, raw)
    return Command(payload, str(envelope.event_id), str(envelope.correlation_id))


def _result_label(decision: Decision) -> str:
    if decision.denial is not None:
        return f"denied:{decision.denial.reason}"
    if decision.ignored is not None:
        return f"ignored:{decision.ignored}"
    return "applied"


class PipelineService:
    """Runs commands against a store with the rules of the profile.

    ``max_attempts`` bounds retries after a lost compare-and-set; the last
    :class:`~pipeline_state.errors.ConcurrencyConflictError` propagates if all fail.
    """

    def __init__(
        self,
        store: Store,
        *,
        profile: Profile | None = None,
        clock: Clock | None = None,
        max_attempts: int = 8,
    ) -> None:
        self.store = store
        self.profile = profile or huleedu_profile()
        self.clock: Clock = clock or SystemClock()
        self.max_attempts = max_attempts

    # -- entry points ---------------------------------------------------------------------
    async def handle_message(self, topic: str, raw: bytes | str | Mapping[str, Any]) -> HandleResult:
        """Parse one inbound message and handle it. Raises
        :class:`~pipeline_state.errors.InvalidMessageError` for input that breaks the contract
        and :class:`~pipeline_state.errors.BadCommandError` for input that can never apply."""
        return await self.handle(_command(topic, raw), topic=topic)

    async def handle_many(
        self, messages: Sequence[InboundMessage]
    ) -> list[HandleResult | PipelineStateError]:
        """Handle ``(topic, raw)`` messages in order, committing them all in one unit of work.

        Returns one entry per message, in order: exactly what calling :meth:`handle_message`
        on each in turn would return (same decisions, outbox messages and event ids, same
        final states), with the error it would raise in the slot of a message that breaks
        the contract (:class:`~pipeline_state.errors.InvalidMessageError`) or can never
        apply (:class:`~pipeline_state.errors.BadCommandError`,
        :class:`~pipeline_state.errors.IllegalTransitionError`). A repeated event id, in
        the store's inbox or earlier in ``messages``, is a duplicate.

        Each batch is loaded once and the decisions are folded over its messages; the
        changes go to :meth:`~pipeline_state.ports.BatchingStore.commit_many` together
        (one transaction). If that loses a race (a conflict or duplicate: nothing was
        written), or the store has no ``commit_many``, the messages are handled one by one
        with :meth:`handle`, which retries from fresh reads. Store errors propagate
        (:class:`~pipeline_state.errors.StoreUnavailableError`: nothing of this call is
        lost by retrying it whole, the inbox makes redelivery harmless).
        """
        results: list[HandleResult | PipelineStateError | None] = [None] * len(messages)
        pending: list[tuple[int, Command, str]] = []
        for index, (topic, raw) in enumerate(messages):
            try:
                pending.append((index, _command(topic, raw), topic))
            except (InvalidMessageError, BadCommandError) as exc:
                results[index] = exc
        commit_many = getattr(self.store, "commit_many", None)
        if pending and (commit_many is None or not await self._batched(pending, results, commit_many)):
            for index, command, topic in pending:
                try:
                    results[index] = await self.handle(command, topic=topic)
                except _NEVER_APPLIES as exc:
                    results[index] = exc
        done = [r for r in results if r is not None]
        if len(done) != len(messages):  # pragma: no cover - every slot is filled above
            raise AssertionError("handle_many left a message without a result")
        return done

    async def _batched(
        self,
        pending: Sequence[tuple[int, Command, str]],
        results: list[HandleResult | PipelineStateError | None],
        commit_many: Callable[[Sequence[Change]], Awaitable[None]],
    ) -> bool:
        """Decide ``pending`` on one read per batch and commit them together; fill
        ``results`` and return ``True``, or ``False`` (nothing written, ``results`` of
        ``pending`` untouched) when the commit lost a race."""
        states: dict[str, BatchState | None] = {}
        staged: dict[str, tuple[int, Command, str, Decision, Change]] = {}  # by event id
        outcome: dict[int, HandleResult | PipelineStateError] = {}
        for index, command, topic in pending:
            batch_id = command.batch_id
            if command.event_id in staged or await self.store.is_processed(command.event_id):
                outcome[index] = HandleResult(
                    command.event_id, batch_id, None, duplicate=True, correlation_id=command.correlation_id
                )
                continue
            if batch_id not in states:
                states[batch_id] = await self.store.load(batch_id)
            try:
                decision, change = self._unit_of_work(command, topic, states[batch_id])
            except _NEVER_APPLIES as exc:
                outcome[index] = exc
                continue
            if change.state is not None:
                states[batch_id] = change.state
            staged[command.event_id] = (index, command, topic, decision, change)
        if staged:
            try:
                await commit_many([item[4] for item in staged.values()])
            except (ConcurrencyConflictError, DuplicateEventError):
                log.debug("batched commit of %d changes lost a race, handling one by one", len(staged))
                return False
        for index, command, topic, decision, change in staged.values():
            outcome[index] = self._committed(command, topic, decision, change, 1)
        for index, result in outcome.items():
            results[index] = result
        return True

    async def execute(
        self,
        payload: OperatorCommand | WireModel,
        *,
        event_id: str | None = None,
        correlation_id: str | None = None,
    ) -> HandleResult:
        """Run an operator command (cancel, retry, ...) or a payload that arrived by another
        route (HTTP). ``event_id`` is the idempotency key; a new one is made when absent."""
        command = Command(payload, event_id or str(uuid.uuid4()), correlation_id or str(uuid.uuid4()))
        return await self.handle(command, topic=f"operator.{type(payload).__name__}")

    async def expire_overdue(self, *, limit: int = 1000) -> list[HandleResult]:
        """Fail the overdue phases of every batch whose deadline has passed."""
        now = self.clock.now()
        results = []
        for batch_id in await self.store.overdue_batches(now, limit):
            event_id = derive_id("expire", batch_id, now.isoformat())
            state = await self.store.load(batch_id)
            run = None if state is None else state.active_run
            # The sweep belongs to the run it expires: its log rows carry the run's correlation id.
            correlation_id = run.correlation_id if run is not None else str(uuid.uuid4())
            command = Command(ExpireOverdue(batch_id), event_id, correlation_id)
            results.append(await self.handle(command, topic="operator.ExpireOverdue"))
        return results

    async def get_batch(self, batch_id: str) -> BatchState:
        state = await self.store.load(batch_id)
        if state is None:
            raise BatchNotFoundError(batch_id)
        return state

    # -- the unit of work -----------------------------------------------------------------
    async def handle(self, command: Command, *, topic: str) -> HandleResult:
        batch_id = command.batch_id
        for attempt in range(1, self.max_attempts + 1):
            if await self.store.is_processed(command.event_id):
                return HandleResult(
                    command.event_id,
                    batch_id,
                    None,
                    duplicate=True,
                    attempts=attempt,
                    correlation_id=command.correlation_id,
                )
            state = await self.store.load(batch_id)
            decision, change = self._unit_of_work(command, topic, state)
            try:
                await self.store.commit(change)
            except DuplicateEventError:
                return HandleResult(
                    command.event_id,
                    batch_id,
                    None,
                    duplicate=True,
                    attempts=attempt,
                    correlation_id=command.correlation_id,
                )
            except ConcurrencyConflictError:
                if attempt == self.max_attempts:
                    raise
                log.debug("version conflict on %s, retrying from a fresh read", batch_id)
                await asyncio.sleep(0)
                continue
            return self._committed(command, topic, decision, change, attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def _unit_of_work(
        self, command: Command, topic: str, state: BatchState | None
    ) -> tuple[Decision, Change]:
        """Decide ``command`` on ``state`` (read at version ``state.version``) and build the
        change that commits the decision: new state, outbox envelopes, log rows, inbox entry.
        The one code path of :meth:`handle` and :meth:`handle_many`."""
        now = self.clock.now()
        decision = decide(state, command, profile=self.profile, now=now)
        change = Change(
            batch_id=command.batch_id,
            expected_version=None if state is None else state.version,
            state=decision.state if decision.changed else None,
            at=now,
            outbox=self._envelopes(command, decision, now),
            inbox=InboxEntry(command.event_id, topic, command.batch_id, _result_label(decision), now),
            transitions=self._log_rows(command, decision, now),
        )
        return decision, change

    @staticmethod
    def _committed(
        command: Command, topic: str, decision: Decision, change: Change, attempt: int
    ) -> HandleResult:
        """The result of a committed ``change`` (logging an ignored input)."""
        if decision.ignored:
            log.info(
                "ignored %s for batch %s: %s",
                topic,
                command.batch_id,
                decision.ignored,
                extra={"batch_id": command.batch_id, "correlation_id": command.correlation_id},
            )
        return HandleResult(
            command.event_id,
            command.batch_id,
            decision,
            change.outbox,
            attempts=attempt,
            correlation_id=command.correlation_id,
        )

    def _envelopes(self, command: Command, decision: Decision, now: datetime) -> tuple[OutboxMessage, ...]:
        stamp = now.isoformat()
        source = self.profile.source_service
        out = []
        for index, emit in enumerate(decision.emits):
            event_id = derive_id(command.event_id, "out", str(index))
            value = {
                "event_id": event_id,
                "event_type": emit.topic,
                "event_timestamp": stamp,
                "source_service": source,
                "schema_version": 1,
                "correlation_id": emit.correlation_id,
                "data": emit.payload.model_dump(mode="json"),
                "metadata": {"causation_id": command.event_id},
            }
            out.append(OutboxMessage(event_id, emit.topic, emit.key, value))
        return tuple(out)

    @staticmethod
    def _log_rows(command: Command, decision: Decision, now: datetime) -> tuple[TransitionRecord, ...]:
        return tuple(
            TransitionRecord(
                batch_id=command.batch_id,
                entity=m.entity,
                name=m.name,
                trigger=m.trigger,
                source=m.source,
                dest=m.dest,
                run_id=m.run_id,
                event_id=command.event_id,
                correlation_id=command.correlation_id,
                at=now,
            )
            for m in decision.moves
        )
