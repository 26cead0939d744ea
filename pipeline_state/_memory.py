"""In-memory adapters: the default store, bus and clock.

They are real adapters, not mocks: the store enforces compare-and-set on the version, the
inbox and outbox rules, and raises the same errors as the SQL adapter; the bus delivers to
subscribers and can be taken down to exercise the relay's retry path. They keep everything
in process memory, so they suit tests, demos and single-process tools.
"""

from __future__ import annotations

import heapq
import operator
import threading
from collections import OrderedDict, defaultdict, deque
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import attrs

from ._clock import ManualClock, SystemClock
from ._deadline_index import next_deadline
from ._lifecycle import BatchStatus
from ._limits import check_limit, check_offset
from ._memory_unit_of_work import MemoryUnitOfWork, Versions
from ._model import BatchState, Run, evolve
from .errors import (
    ConcurrencyConflictError,
    DuplicateEventError,
    PublishError,
    StoreError,
    StoreUnavailableError,
)
from .ports import (
    CLOCK_STEP_HORIZON_SECONDS,
    Change,
    InboxEntry,
    OutboxMessage,
    OutboxRow,
    PurgeCutoffs,
    Purged,
    StalledRun,
    TransitionRecord,
    WaitingFact,
)

__all__ = ["InMemoryBus", "InMemoryStore", "ManualClock", "SystemClock"]


_row_id = operator.attrgetter("id")
_transition_row = operator.attrgetter(*(f.name for f in attrs.fields(TransitionRecord)))
"""A transition record as the store keeps it: its fields in order (``TransitionRecord(*row)``)."""
_CLOCK_STEP_HORIZON = timedelta(seconds=CLOCK_STEP_HORIZON_SECONDS)
_LOGGED_AT = [f.name for f in attrs.fields(TransitionRecord)].index("at")


def _leased(row: OutboxRow, until: datetime) -> OutboxRow:
    """``row`` as a claim hands it out: with the end of its lease."""
    return OutboxRow(
        row.id, row.message, row.created_at, row.attempts, row.last_error, row.parked, row.published_at, until
    )


def _new_state(change: Change) -> BatchState | None:
    state = change.state
    # What the SQL store does too: the archived runs live in the history, not in the state.
    return evolve(state, history=()) if state is not None and state.history else state


class InMemoryStore:
    """Batch state, inbox, transition log and outbox in dictionaries.

    Every ``commit`` and ``commit_many`` runs without awaiting in between, so it is atomic
    with respect to other coroutines, and under a lock, so it is atomic with respect to other
    threads too (a service used from several event loops, one per thread); claims and marks
    of the outbox take the same lock. ``claim`` hands out at most the oldest due row of each
    key and leases it for ``lease_seconds``, so a second relay never gets a row that is on
    its way. Set :attr:`available` to ``False`` to make every call raise
    :class:`~pipeline_state.errors.StoreUnavailableError`, as a down database would.

    Published rows are dropped, but their messages are remembered (the last
    ``keep_published`` of them) so that a change's ``republish`` can queue them again. A
    message of a batch whose active run has a phase deadline pending is kept past that
    bound until the batch has none (a phase's re-send queues its command again, and phase
    commands are keyed by their batch), as the SQL store's ``purge_published`` keeps them.
    """

    def __init__(
        self, *, keep_transitions: bool = True, lease_seconds: float = 30.0, keep_published: int = 100_000
    ) -> None:
        self.available = True
        self._lock = threading.Lock()
        self.lease = timedelta(seconds=lease_seconds)
        self._leases: dict[int, datetime] = {}
        # States and inbox in the shared engine; the log, like its inbox, in plain tuples of
        # strings and datetimes (the garbage collector stops tracking such tuples).
        self._work: MemoryUnitOfWork[Change, BatchState] = MemoryUnitOfWork(_new_state, self._append)
        self._batches = self._work.documents
        self._inbox = self._work.inbox
        self._history: dict[str, list[Run]] = {}  # archived runs (Change.archived), per batch
        self._deadlines: dict[str, datetime] = {}
        self._transitions: list[tuple[Any, ...]] | None = [] if keep_transitions else None
        self._outbox: dict[int, OutboxRow] = {}
        self._outbox_ids: dict[str, int] = {}  # the rows' event ids (unique, as the SQL store's)
        # Pending row ids of each key, oldest first, and a heap of (head row id, key): a claim
        # looks at the heads in age order instead of scanning rows held back by their key.
        self._by_key: dict[str | None, deque[int]] = {}
        self._heads: list[tuple[int, str | None]] = []
        self._retry_at: dict[int, datetime] = {}
        self._next_row = 1
        self._waiting: dict[str, WaitingFact] = {}  # by event id, in arrival order
        self._waiting_by_batch: dict[str, dict[str, WaitingFact]] = {}  # the same, per batch
        self._next_seq = 1
        self._published: OrderedDict[str, OutboxMessage] = OrderedDict()
        self._keep_published = keep_published
        # Published messages past ``keep_published`` of batches with a deadline pending.
        self._pinned: dict[str, dict[str, OutboxMessage]] = {}

    def _check(self) -> None:
        if not self.available:
            raise StoreUnavailableError("the in-memory store was taken offline")

    # -- Store ----------------------------------------------------------------------------
    async def load(self, batch_id: str) -> BatchState | None:
        self._check()
        return self._batches.get(batch_id)

    async def history(self, batch_id: str) -> list[Run]:
        """The archived runs of a batch, oldest first."""
        self._check()
        return list(self._history.get(batch_id, ()))

    async def archived_ids(self, batch_id: str) -> list[tuple[str, str]]:
        """``(run_id, correlation_id)`` of each archived run, oldest first."""
        self._check()
        return [(run.run_id, run.correlation_id) for run in self._history.get(batch_id, ())]

    async def commit(self, change: Change) -> None:
        self._check()
        with self._lock:
            self._validate(change, self._work.versions((change,)), set())
            self._apply(change)

    async def commit_many(self, changes: Sequence[Change]) -> None:
        """Commit ``changes`` in order, all or nothing (see
        :meth:`~pipeline_state.ports.BatchingStore.commit_many`): the whole sequence is
        checked against a simulated view of versions and inbox ids before anything is
        applied, so a conflict or duplicate anywhere writes nothing."""
        self._check()
        with self._lock:
            versions = self._work.versions(changes)
            seen: set[str] = set()
            for change in changes:
                self._validate(change, versions, seen)
            for change in changes:
                self._apply(change)

    def _validate(self, change: Change, versions: Versions, seen: set[str]) -> None:
        """Check ``change`` against ``versions`` and the inbox (plus the ids in ``seen``)
        with the engine, then its waiting facts, and advance the simulated view as if it
        were applied. Raises as ``commit`` does."""
        actual = versions[change.batch_id]
        self._work.check(change, versions, seen, replaces=change.resolves)
        if change.resolves is not None:
            # Waiting now, or kept by an earlier change of the sequence; not resolved since.
            marker = f"resolved\x00{change.resolves}"
            kept = change.resolves in self._waiting or f"kept\x00{change.resolves}" in seen
            if not kept or marker in seen:
                raise ConcurrencyConflictError(change.batch_id, change.expected_version, actual)
            seen.add(marker)
        if change.waiting is not None:
            seen.add(f"kept\x00{change.waiting.event_id}")
        for message in change.outbox:
            self._check_event_id(change, message.event_id, seen)

    def _check_event_id(self, change: Change, event_id: str, seen: set[str]) -> None:
        """An outbox row's event id is unique while the row is kept (the SQL store's unique
        index): a message under an id still in the outbox is refused. When the inbound
        event of ``change`` wrote it (its inbox entry purged since: emitted ids derive from
        the inbound one), that is a :class:`~pipeline_state.errors.DuplicateEventError`;
        under another event's id, a :class:`~pipeline_state.errors.StoreError`."""
        marker = f"out\x00{event_id}"
        row_id = self._outbox_ids.get(event_id)
        if row_id is None and marker not in seen:
            seen.add(marker)
            return
        cause = change.inbox.event_id if change.inbox is not None else None
        if row_id is not None and cause is not None:
            metadata = self._outbox[row_id].message.value.get("metadata")
            if isinstance(metadata, dict) and metadata.get("causation_id") == cause:
                raise DuplicateEventError(cause)
        raise StoreError(
            f"the outbox already holds a message with event id {event_id!r} (batch {change.batch_id!r})"
        )

    def _apply(self, change: Change) -> None:
        """Write a validated ``change`` (no checks, no awaits): state, inbox entry and outbox
        messages with the engine, then the deadline, the log and the waiting set."""
        self._work.apply(change)
        if change.state is not None:
            deadline = next_deadline(change.state)
            if deadline is None:
                self._deadlines.pop(change.batch_id, None)
                if self._pinned:
                    self._pinned.pop(change.batch_id, None)
            else:
                self._deadlines[change.batch_id] = deadline
        if change.archived:
            self._history.setdefault(change.batch_id, []).extend(change.archived)
        if self._transitions is not None and change.transitions:
            self._transitions.extend(map(_transition_row, change.transitions))
        if change.resolves is not None:
            self._drop_waiting(change.resolves)
        if change.waiting is not None:
            fact = attrs.evolve(change.waiting, seq=self._next_seq)
            self._next_seq += 1
            self._keep_waiting(fact)
        for event_id, waits_for in change.rewaits:
            still = self._waiting.get(event_id)
            if still is not None:
                self._keep_waiting(attrs.evolve(still, waits_for=waits_for))
        if change.republish:
            self._requeue(change.republish, change.at, change.batch_id)
        if change.unpark:
            self._unpark(change.unpark)

    def _keep_waiting(self, fact: WaitingFact) -> None:
        """Add ``fact`` to the waiting set, or replace it in place (arrival order kept)."""
        self._waiting[fact.event_id] = fact
        self._waiting_by_batch.setdefault(fact.batch_id, {})[fact.event_id] = fact

    def _drop_waiting(self, event_id: str) -> bool:
        fact = self._waiting.pop(event_id, None)
        if fact is None:
            return False
        of_batch = self._waiting_by_batch[fact.batch_id]
        del of_batch[event_id]
        if not of_batch:
            del self._waiting_by_batch[fact.batch_id]
        return True

    def _requeue(self, event_ids: Sequence[str], now: datetime, batch_id: str) -> None:
        """Deliver the messages ``event_ids`` again: an unpublished row is reset in place;
        a published one (remembered) gets a new row; unknown ids are skipped."""
        wanted = set(event_ids)
        for row_id, row in self._outbox.items():
            if row.message.event_id in wanted:
                wanted.discard(row.message.event_id)
                self._outbox[row_id] = attrs.evolve(row, attempts=0, last_error=None, parked=False)
                self._retry_at.pop(row_id, None)
                self._leases.pop(row_id, None)
        for event_id in event_ids:
            if event_id not in wanted:
                continue
            message = self._published.pop(event_id, None)
            if message is None and self._pinned:
                message = self._unpin(batch_id, event_id)
            if message is not None:
                self._add_row(message, now)

    def _unpark(self, event_ids: Sequence[str]) -> None:
        """Deliver the parked rows of ``event_ids`` again (rows not parked stay as they are)."""
        wanted = set(event_ids)
        for row_id, row in self._outbox.items():
            if row.parked and row.message.event_id in wanted:
                self._outbox[row_id] = attrs.evolve(row, attempts=0, last_error=None, parked=False)
                self._retry_at.pop(row_id, None)
                self._leases.pop(row_id, None)

    def _unpin(self, batch_id: str, event_id: str) -> OutboxMessage | None:
        """A published message of ``batch_id`` kept past the bound (see the class doc)."""
        messages = self._pinned.get(batch_id)
        return None if messages is None else messages.pop(event_id, None)

    def _append(self, messages: Sequence[OutboxMessage], at: datetime) -> None:
        for message in messages:
            self._add_row(message, at)

    def _add_row(self, message: OutboxMessage, at: datetime) -> None:
        row_id = self._next_row
        self._next_row += 1
        self._outbox[row_id] = OutboxRow(row_id, message, at)
        self._outbox_ids[message.event_id] = row_id
        key = message.key
        queue = self._by_key.get(key)
        if queue is None:
            self._by_key[key] = deque((row_id,))
            heapq.heappush(self._heads, (row_id, key))
        else:
            queue.append(row_id)

    def _drop_row(self, row_id: int, key: str | None) -> None:
        """Forget published row ``row_id`` in its key's queue (a new head enters the heap)."""
        queue = self._by_key[key]
        if queue[0] != row_id:
            queue.remove(row_id)  # behind a parked head: the head does not change
            return
        queue.popleft()
        if queue:
            heapq.heappush(self._heads, (queue[0], key))
        else:
            del self._by_key[key]

    async def is_processed(self, event_id: str) -> bool:
        self._check()
        return event_id in self._inbox

    async def inbox_entry(self, event_id: str) -> InboxEntry | None:
        self._check()
        return self._work.inbox_entry(event_id)

    async def overdue_batches(self, now: datetime, limit: int = 1000) -> list[str]:
        check_limit(limit)
        self._check()
        with self._lock:  # other threads commit to these dictionaries
            due = sorted((at, b) for b, at in self._deadlines.items() if at <= now)
            return [b for _, b in due[:limit]]

    async def list_batches(
        self, status: BatchStatus | None = None, *, limit: int = 100, offset: int = 0
    ) -> list[BatchState]:
        check_limit(limit)
        check_offset(offset)
        self._check()
        with self._lock:  # other threads commit to these dictionaries
            ids = sorted(b for b, s in self._batches.items() if status is None or s.status is status)
            return [self._batches[b] for b in ids[offset : offset + limit]]

    async def active_runs(self) -> tuple[int, datetime | None]:
        """How many batches run a pipeline and when the oldest run was accepted
        (:class:`~pipeline_state.ports.RunCountingStore`): one pass, nothing sorted or
        copied."""
        self._check()
        with self._lock:  # other threads commit to these dictionaries
            count = 0
            oldest: datetime | None = None
            processing = BatchStatus.PROCESSING_PIPELINES
            for state in self._batches.values():
                if state.status is not processing:
                    continue
                count += 1
                run = state.active_run
                if run is not None and (oldest is None or run.accepted_at < oldest):
                    oldest = run.accepted_at
            return count, oldest

    # -- waiting facts ----------------------------------------------------------------------
    async def load_with_waiting(self, batch_id: str) -> tuple[BatchState | None, bool]:
        self._check()
        return self._batches.get(batch_id), batch_id in self._waiting_by_batch

    def was_dead_lettered(self, event_id: str) -> bool | None:
        """Whether the inbox entry of ``event_id`` closes a fact the waiting sweep
        dead-lettered (``pipeline_state._replay``); ``None`` when there is none."""
        entry = self._inbox.get(event_id)
        return None if entry is None else entry[2].startswith("dead_lettered:")

    async def load_for_event(self, batch_id: str, event_id: str) -> tuple[bool, BatchState | None, bool]:
        """:meth:`is_processed` and :meth:`load_with_waiting` in one call
        (:class:`~pipeline_state.ports.EventReadingStore`)."""
        self._check()
        if event_id in self._inbox:
            return True, None, False
        return False, self._batches.get(batch_id), batch_id in self._waiting_by_batch

    async def load_for_events(
        self, events: Sequence[tuple[str, str]]
    ) -> tuple[frozenset[str], dict[str, tuple[BatchState | None, bool]]]:
        """:meth:`load_for_event` for several pairs
        (:meth:`~pipeline_state.ports.EventReadingStore.load_for_events`)."""
        self._check()
        processed = frozenset(e for _, e in events if e in self._inbox)
        read = {
            b: (self._batches.get(b), b in self._waiting_by_batch) for b, e in events if e not in processed
        }
        return processed, read

    async def list_waiting(
        self, batch_id: str | None = None, *, limit: int = 100, arrived_before: datetime | None = None
    ) -> list[WaitingFact]:
        check_limit(limit)
        self._check()
        with self._lock:  # other threads commit to these dictionaries
            if batch_id is None:
                facts = self._waiting.values()
            else:
                facts = self._waiting_by_batch.get(batch_id, {}).values()
            out: list[WaitingFact] = []
            for fact in facts:
                if len(out) >= limit:
                    break
                if arrived_before is not None and fact.arrived_at >= arrived_before:
                    continue
                out.append(fact)
            return out

    async def count_waiting(self) -> int:
        self._check()
        return len(self._waiting)

    async def forget_waiting(self, event_ids: Sequence[str], result: str, now: datetime) -> int:
        self._check()
        with self._lock:  # other threads commit to these dictionaries
            removed = 0
            for event_id in dict.fromkeys(event_ids):
                fact = self._waiting.get(event_id)
                if fact is None or not self._drop_waiting(event_id):
                    continue
                removed += 1
                self._inbox[event_id] = (fact.topic, fact.batch_id, result, now)
            return removed

    async def stalled_runs(self, now: datetime, older_than: float, *, limit: int = 100) -> list[StalledRun]:
        check_limit(limit)
        self._check()
        with self._lock:  # other threads commit to these dictionaries
            cutoff, ahead = now - timedelta(seconds=older_than), now + _CLOCK_STEP_HORIZON
            stalled = sorted(
                (
                    s
                    for s in self._batches.values()
                    if s.active_run is not None and not cutoff < s.updated_at <= ahead
                ),
                key=lambda s: (s.updated_at, s.batch_id),
            )[:limit]
            return [
                StalledRun.of(
                    s, [r for r in self._outbox.values() if r.parked and r.message.key == s.batch_id]
                )
                for s in stalled
            ]

    async def purge(self, cutoffs: PurgeCutoffs, *, limit: int = 5_000) -> Purged:
        """Forget inbox entries and transition log rows past their cutoffs (at most ``limit``
        of each), as :meth:`~pipeline_state.ports.PurgingStore.purge` says. Both are kept in
        the order they were written and walked from their start, so a round costs what it
        deletes, not the size of the store; the oldest go first unless the clock went back
        (then the rows behind a newer one wait until it expires).

        Published outbox rows are dropped here as soon as they are published (the last
        ``keep_published`` messages stay for a re-send), so ``outbox`` is always 0."""
        check_limit(limit)
        self._check()
        with self._lock:
            return Purged(
                inbox=self._purge_inbox(cutoffs.processed_before, limit),
                transitions=self._purge_log(cutoffs.logged_before, limit),
            )

    def _purge_inbox(self, before: datetime | None, limit: int) -> int:
        if before is None:
            return 0
        inbox, waiting = self._inbox, self._waiting
        gone: list[str] = []
        for event_id, row in inbox.items():  # in the order of processing: the oldest first
            if row[3] >= before or len(gone) == limit:
                break
            if event_id not in waiting:
                gone.append(event_id)
        for event_id in gone:
            del inbox[event_id]
        return len(gone)

    def _purge_log(self, before: datetime | None, limit: int) -> int:
        rows = self._transitions
        if before is None or not rows:
            return 0
        at, count, end = _LOGGED_AT, 0, min(limit, len(rows))
        while count < end and rows[count][at] < before:  # appended in the order of the moves
            count += 1
        del rows[:count]
        return count

    # -- inspection -----------------------------------------------------------------------

    def transitions(
        self, batch_id: str | None = None, *, event_id: str | None = None
    ) -> list[TransitionRecord]:
        """The transition log (of ``batch_id``; with ``event_id``, the rows that event wrote)."""
        rows = self._transitions or []
        records = [TransitionRecord(*r) for r in rows if batch_id is None or r[0] == batch_id]
        return records if event_id is None else [r for r in records if r.event_id == event_id]

    def outbox_messages(self) -> list[OutboxMessage]:
        """Every message still in the outbox (unpublished or parked), oldest first."""
        with self._lock:
            return [row.message for row in self._outbox.values()]

    def batch_count(self) -> int:
        return len(self._batches)

    # -- Outbox ---------------------------------------------------------------------------
    async def claim(self, now: datetime, limit: int = 100) -> list[OutboxRow]:
        check_limit(limit)
        self._check()
        with self._lock:
            return self._claim(now, limit)

    def _claim(self, now: datetime, limit: int) -> list[OutboxRow]:
        heads = self._heads
        claimed: list[OutboxRow] = []
        if not heads:
            return claimed
        kept: list[tuple[int, str | None]] = []
        lease_until = now + self.lease
        horizon = now + max(self.lease, _CLOCK_STEP_HORIZON)
        outbox, retry_at, leases = self._outbox, self._retry_at, self._leases
        # Only the oldest unparked row of a key may go (an older row holds the rest back).
        while heads and len(claimed) < limit:
            entry = heapq.heappop(heads)
            row_id, key = entry
            queue = self._by_key.get(key)
            if not queue or queue[0] != row_id:
                continue  # stale: that head was published
            kept.append(entry)  # it stays the key's head until it is published
            for head in queue:
                row = outbox[head]
                if not row.parked:
                    break
            else:
                continue  # every row of the key is parked
            # Held until due and while leased, but not by a time so far ahead that a clock
            # ahead of this one wrote it (CLOCK_STEP_HORIZON_SECONDS): that counts as passed.
            if (retry_at and now < retry_at.get(head, now) <= horizon) or (
                leases and now < leases.get(head, now) <= horizon
            ):
                continue
            leases[head] = lease_until
            claimed.append(_leased(row, lease_until))
        for entry in kept:
            heapq.heappush(heads, entry)
        if len(claimed) > 1:
            claimed.sort(key=_row_id)
        return claimed

    async def mark_published(self, row_ids: Sequence[int], now: datetime) -> None:
        self._check()
        with self._lock:
            self._mark_published(row_ids)

    def _mark_published(self, row_ids: Sequence[int]) -> None:
        published, keep = self._published, self._keep_published
        for row_id in row_ids:
            # Published rows are dropped: memory stays flat however long the process runs.
            row = self._outbox.pop(row_id, None)
            self._retry_at.pop(row_id, None)
            self._leases.pop(row_id, None)
            if row is None:
                continue
            message = row.message
            if self._outbox_ids.get(message.event_id) == row_id:
                del self._outbox_ids[message.event_id]
            self._drop_row(row_id, message.key)
            if keep > 0:
                published[message.event_id] = message
                while len(published) > keep:
                    event_id, old = published.popitem(last=False)
                    if old.key is not None and old.key in self._deadlines:  # a re-send may need it
                        self._pinned.setdefault(old.key, {})[event_id] = old

    async def mark_failed(
        self,
        row_id: int,
        error: str,
        now: datetime,
        *,
        retry_at: datetime,
        park: bool,
        leased_until: datetime | None = None,
    ) -> bool:
        self._check()
        with self._lock:
            row = self._outbox.get(row_id)
            if row is None:
                return False  # published (by another relay, after this one's lease ended)
            if leased_until is not None and self._leases.get(row_id) != leased_until:
                return False  # claimed again since, under another lease: not the failing relay's row
            self._outbox[row_id] = attrs.evolve(row, attempts=row.attempts + 1, last_error=error, parked=park)
            self._retry_at[row_id] = retry_at
            self._leases.pop(row_id, None)
            return True

    async def pending_count(self) -> int:
        self._check()
        with self._lock:  # other threads commit to these dictionaries
            if not self._outbox:
                return 0
            return sum(1 for r in self._outbox.values() if r.published_at is None and not r.parked)

    async def parked(self, limit: int = 100) -> list[OutboxRow]:
        check_limit(limit)
        self._check()
        with self._lock:  # other threads commit to these dictionaries
            return [r for r in self._outbox.values() if r.parked][:limit]

    async def outbox_backlog(self) -> tuple[int, datetime | None, int]:
        """Pending rows, when the oldest of them was written, and parked rows."""
        self._check()
        with self._lock:  # other threads commit to these dictionaries
            pending = [r.created_at for r in self._outbox.values() if r.published_at is None and not r.parked]
            parked = sum(1 for r in self._outbox.values() if r.parked)
            return len(pending), min(pending, default=None), parked


Subscriber = Callable[[OutboxMessage], Awaitable[None]]


class InMemoryBus:
    """A message bus in memory: keeps every published message per topic, in order, and
    hands each to the subscribers of its topic. Set :attr:`available` to ``False`` to make
    publishing fail with :class:`~pipeline_state.errors.PublishError`, as a lost broker would.
    """

    def __init__(self) -> None:
        self.available = True
        self._log: list[OutboxMessage] = []
        self._subscribers: defaultdict[str, list[Subscriber]] = defaultdict(list)

    def subscribe(self, topic: str, handler: Subscriber) -> None:
        self._subscribers[topic].append(handler)

    async def publish(self, messages: Sequence[OutboxMessage]) -> Sequence[BaseException | None]:
        if not self.available:
            raise PublishError("the in-memory bus was taken offline")
        subscribers = self._subscribers
        for message in messages:
            self._log.append(message)
            if subscribers:
                for handler in subscribers.get(message.topic, ()):
                    await handler(message)
        return [None] * len(messages)

    def messages(self, topic: str | None = None, *, since: int = 0) -> list[OutboxMessage]:
        """Everything published so far (on ``topic``), in publishing order; with ``since``,
        only what was published after the first ``since`` messages (see :meth:`count`)."""
        log = self._log[since:] if since else self._log
        return [m for m in log if topic is None or m.topic == topic]

    def count(self) -> int:
        """How many messages were published so far (all topics), without copying them."""
        return len(self._log)

    def clear(self) -> None:
        self._log.clear()
