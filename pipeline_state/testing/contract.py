"""The store and outbox contract: one test suite every adapter must pass, unchanged.

Subclass :class:`StoreContract` in a test module (name the subclass ``Test...``) and
override the ``store`` fixture with a factory for a fresh, empty store of your backend;
every test below then runs against it::

    import pytest
    from pipeline_state import InMemoryStore
    from pipeline_state.testing.contract import StoreContract

    class TestInMemoryStore(StoreContract):
        @pytest.fixture
        async def store(self):
            yield InMemoryStore()

The tests pin the behaviour the ports document: compare-and-set on the version (checked
even when there is nothing to write), inbox deduplication, all-or-nothing commits, due
deadlines, listing, and the outbox rules (order per key, claims, backoff, parking,
published rows never coming back, rows committed late still delivered). Stores with the
optional ``commit_many`` (:class:`~pipeline_state.ports.BatchingStore`) are also held to
its rules: changes applied in order and chained per batch, all or nothing; the
``commit_many`` tests skip for stores without it. Needs ``pytest`` (with
``pytest-asyncio`` in auto mode).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import attrs
import pytest

from pipeline_state._clock import ManualClock
from pipeline_state._lifecycle import BatchStatus, PhaseStatus, RunStatus
from pipeline_state._model import BatchState, ItemRef, Past, PhaseRun, Run
from pipeline_state._profile import Profile
from pipeline_state._service import PipelineService
from pipeline_state.errors import ConcurrencyConflictError, DuplicateEventError, StoreError
from pipeline_state.ports import (
    ArchiveIndexStore,
    BatchingStore,
    Change,
    EventReadingStore,
    InboxEntry,
    Outbox,
    OutboxMessage,
    OutboxRow,
    PurgeCutoffs,
    Purged,
    PurgingStore,
    RunCountingStore,
    Store,
    TransitionRecord,
    WaitingFact,
)
from pipeline_state.profiles import default_profile

from .builders import Envelopes

__all__ = [
    "T0",
    "ContractStore",
    "StoreContract",
    "archived_run",
    "make_state",
    "message",
    "with_deadline",
]

T0 = datetime(2025, 1, 1, tzinfo=UTC)
"""The instant the contract's states and changes are stamped with."""


class ContractStore(Store, Outbox, Protocol):
    """What the contract drives: a store that is also the outbox."""


def _batching(store: ContractStore) -> BatchingStore:
    """``store`` as a :class:`BatchingStore`; skips the test when it has no ``commit_many``."""
    if not isinstance(store, BatchingStore):
        pytest.skip(f"{type(store).__name__} has no commit_many (optional)")
    return store


def _event_reading(store: ContractStore) -> EventReadingStore:
    """``store`` as an :class:`EventReadingStore`; skips the test when it has not the
    one-read loads."""
    if not isinstance(store, EventReadingStore):
        pytest.skip(f"{type(store).__name__} has no load_for_event / load_for_events (optional)")
    return store


def _run_counting(store: ContractStore) -> RunCountingStore:
    """``store`` as a :class:`RunCountingStore`; skips the test when it cannot count its
    runs."""
    if not isinstance(store, RunCountingStore):
        pytest.skip(f"{type(store).__name__} has no active_runs (optional)")
    return store


def _archive_indexing(store: ContractStore) -> ArchiveIndexStore:
    """``store`` as an :class:`ArchiveIndexStore`; skips the test when it has no such read."""
    if not isinstance(store, ArchiveIndexStore):
        pytest.skip(f"{type(store).__name__} has no archived_ids (optional)")
    return store


def _purging(store: ContractStore) -> PurgingStore:
    """``store`` as a :class:`PurgingStore`; skips the test when it cannot purge."""
    if not isinstance(store, PurgingStore):
        pytest.skip(f"{type(store).__name__} has no purge (optional)")
    return store


def make_state(
    batch_id: str,
    *,
    version: int = 1,
    status: BatchStatus = BatchStatus.READY_FOR_PIPELINE_EXECUTION,
    user_id: str = "owner-1",
) -> BatchState:
    """A registered batch with two items and no run."""
    items = (ItemRef(f"{batch_id}-e0", f"{batch_id}-e0-text"), ItemRef(f"{batch_id}-e1", None))
    return BatchState(
        batch_id=batch_id,
        status=status,
        version=version,
        owner=user_id,
        category="ENG5",
        expected_items=2,
        item_ids=tuple(e.item_id for e in items),
        created_at=T0,
        updated_at=T0,
        items=items,
    )


def _phase(name: str, status: PhaseStatus, *, deadline_at: datetime | None = None) -> PhaseRun:
    return PhaseRun(
        name=name,
        depends_on=() if name == "ingest" else ("ingest",),
        status=status,
        deadline_seconds=None if deadline_at is None else 60.0,
        dispatched_at=T0,
        deadline_at=deadline_at,
        finished_at=None if status in (PhaseStatus.DISPATCH_INITIATED,) else T0,
        inputs=(ItemRef("e0", "t0"),),
        outputs=(ItemRef("e0", "t0-out"),) if status is PhaseStatus.COMPLETED_SUCCESSFULLY else (),
        failed_item_ids=("e1",) if status is PhaseStatus.FAILED else (),
        error="timeout" if status is PhaseStatus.FAILED else None,
    )


def archived_run(batch_id: str, owner: str = "owner-1") -> Run:
    """A finished run of ``batch_id`` (``index``, failed critically after ``ingest``)."""
    return Run(
        run_id=f"{batch_id}-run-0",
        pipeline_name="index",
        correlation_id="corr-0",
        requested_by=owner,
        accepted_at=T0,
        final_step="index",
        phases=(_phase("ingest", PhaseStatus.COMPLETED_SUCCESSFULLY), _phase("index", PhaseStatus.FAILED)),
        status=RunStatus.FAILED_CRITICALLY,
        completed_at=T0 + timedelta(seconds=5),
        plan=("ingest", "index"),
    )


def with_deadline(state: BatchState, deadline_at: datetime | None) -> BatchState:
    """``state`` processing a run whose active phase is due at ``deadline_at`` (``None``:
    no deadline), having archived one run (:func:`archived_run`: in ``past``, not in the
    state's ``history``)."""
    archived = archived_run(state.batch_id, state.owner)
    active = Run(
        run_id=f"{state.batch_id}-run-1",
        pipeline_name="transcode",
        correlation_id="corr-1",
        requested_by=state.owner,
        accepted_at=T0 + timedelta(seconds=6),
        final_step="transcode",
        phases=(
            _phase("ingest", PhaseStatus.DISPATCH_INITIATED, deadline_at=deadline_at),
            _phase("transcode", PhaseStatus.PENDING_DEPENDENCIES),
        ),
        pruned=(),
        is_retry=True,
        retry_reason="again",
        plan=("ingest", "transcode"),
    )
    return attrs.evolve(
        state, status=BatchStatus.PROCESSING_PIPELINES, active_run=active, past=Past.of((archived,))
    )


def message(event_id: str, key: str | None, topic: str = "contract.topic") -> OutboxMessage:
    """An outbox message whose envelope carries its own id."""
    value = {"event_id": event_id, "event_type": topic, "data": {"n": 1, "nested": [1, "two", None]}}
    return OutboxMessage(event_id, topic, key, value)


def _inbox(event_id: str, batch_id: str, result: str = "applied", at: datetime = T0) -> InboxEntry:
    return InboxEntry(event_id, "contract.in", batch_id, result, at)


def _log(batch_id: str, event_id: str, at: datetime = T0) -> TransitionRecord:
    return TransitionRecord(
        batch_id, "batch", batch_id, "finish_run", "processing_pipelines", "ready", None, event_id, "c", at
    )


def _fact(
    event_id: str, batch_id: str, *, at: datetime = T0, waits_for: str = "batch_registration"
) -> WaitingFact:
    raw = b'{"event_id": "' + event_id.encode() + b'", "nul": "\\u0000", "bytes": "\xc3\xa5"}'
    return WaitingFact(event_id, "contract.in", batch_id, raw, waits_for, at)


def _deferral(fact: WaitingFact, expected: int | None = None) -> Change:
    inbox = _inbox(fact.event_id, fact.batch_id, f"deferred:{fact.waits_for}")
    return Change(fact.batch_id, expected, None, fact.arrived_at, inbox=inbox, waiting=fact)


def _ids(rows: list[OutboxRow]) -> list[str]:
    return [r.message.event_id for r in rows]


class StoreContract:
    """The contract tests; subclass it and override the ``store`` fixture."""

    @pytest.fixture
    async def store(self) -> AsyncIterator[ContractStore]:
        raise NotImplementedError("override the store fixture with a factory for your backend")
        return  # pragma: no cover

    @pytest.fixture
    def profile(self) -> Profile:
        """The profile whose runs :meth:`test_every_state_of_the_profiles_runs_round_trips`
        drives through the store (default: the default profile); override it to hold
        the store to your own profile's states."""
        return default_profile()

    # -- helpers ----------------------------------------------------------------------------
    @staticmethod
    async def seed(
        store: ContractStore, batch_id: str, *, running: bool = False, deadline: datetime | None = None
    ) -> BatchState:
        """Insert a ready batch, or one running a phase due at ``deadline``."""
        state = make_state(batch_id)
        if running:
            state = with_deadline(state, deadline)
        await store.commit(Change(batch_id, None, state, T0))
        return state

    @staticmethod
    async def enqueue(store: ContractStore, *messages: OutboxMessage, at: datetime = T0) -> None:
        """Commit ``messages`` in one unit of work that writes no state."""
        batch_id = f"outbox-{messages[0].event_id}"
        await store.commit(Change(batch_id, None, None, at, outbox=messages))

    # -- state and compare-and-set --------------------------------------------------------
    async def test_load_unknown_batch_is_none(self, store: ContractStore) -> None:
        assert await store.load("nope") is None

    async def test_insert_then_load_round_trips(self, store: ContractStore) -> None:
        state = with_deadline(make_state("b1"), T0 + timedelta(seconds=60))
        await store.commit(Change("b1", None, state, T0))
        assert await store.load("b1") == state

    async def test_every_state_of_the_profiles_runs_round_trips(
        self, store: ContractStore, profile: Profile
    ) -> None:
        """Each pipeline of the profile's catalog runs once on one batch through a
        :class:`~pipeline_state._service.PipelineService` on the store (one item failing
        every phase that receives it): every state committed loads back equal, and the
        batch ends ready with one ended run per pipeline in its history."""
        service = PipelineService(store, profile=profile, clock=ManualClock(T0))
        env = Envelopes(profile=profile)
        items = env.item_ids("whole-1", min(3, profile.max_items_per_batch))
        failing = {items[0]} if len(items) > 1 else set()  # one item left to go on

        async def handled(delivery: tuple[str, dict[str, Any]]) -> list[dict[str, Any]]:
            result = await service.handle_message(*delivery)
            assert await store.load("whole-1") == result.state
            return [m.as_dict() for m in result.all_messages]

        await handled(env.register("whole-1", item_ids=items))
        await handled(env.provisioned("whole-1", items))
        for pipeline in profile.catalog.names:
            pending = await handled(env.request("whole-1", pipeline, prompt_payload={"prompt_ref": "p"}))
            while pending:
                message = pending.pop(0)
                if env.phase_of(message) is not None:
                    sent = set(env.sent_item_ids(message))
                    pending += await handled(env.answer(message, failed=sent & failing))
        state = await store.load("whole-1")
        assert state is not None
        assert state.active_run is None
        assert state.status is BatchStatus.READY_FOR_PIPELINE_EXECUTION
        assert state.history == ()
        assert [run.pipeline_name for run in await store.history("whole-1")] == list(profile.catalog.names)
        assert state.past.count == len(profile.catalog.names)

    async def test_archived_runs_go_to_the_history_not_to_the_state(self, store: ContractStore) -> None:
        state = with_deadline(make_state("h1"), None)
        first = archived_run("h1")
        await store.commit(Change("h1", None, state, T0, archived=(first,)))
        second = attrs.evolve(first, run_id="h1-run-9", correlation_id="corr-9")
        # A state handed over with its history (as get_batch shows it): the store drops it.
        # The ids outcomes and reports answered runs under are part of the state: kept.
        past = state.past.after(second).answering(second.run_id, "lost-corr").reporting("report-run")
        v2 = attrs.evolve(state, version=2, past=past, history=(first, second))
        await store.commit(Change("h1", 1, v2, T0, archived=(second,)))
        loaded = await store.load("h1")
        assert loaded == attrs.evolve(v2, history=())
        assert loaded is not None
        assert loaded.past.count == 2  # a store may leave the runs' ids out, never their count
        assert (loaded.past.answered, loaded.past.reported) == (past.answered, past.reported)
        # ... and lists them as committed or not at all (a decision trusts a full list).
        assert loaded.past.correlations in ((), v2.past.correlations)
        assert loaded.past.runs in ((), v2.past.runs)
        assert loaded.past.known == (loaded.past.runs != ())
        assert await store.history("h1") == [first, second]
        assert await store.history("unknown") == []

    async def test_archived_ids_are_those_of_the_history(self, store: ContractStore) -> None:
        index = _archive_indexing(store)
        state = with_deadline(make_state("h1"), None)
        first = archived_run("h1")
        second = attrs.evolve(first, run_id="h1-run-9", correlation_id="corr-9")
        v1 = attrs.evolve(state, past=Past.of((first,)))
        await store.commit(Change("h1", None, v1, T0, archived=(first,)))
        v2 = attrs.evolve(v1, version=2, past=v1.past.after(second))
        await store.commit(Change("h1", 1, v2, T0, archived=(second,)))
        assert await index.archived_ids("h1") == [(first.run_id, "corr-0"), ("h1-run-9", "corr-9")]
        assert await index.archived_ids("unknown") == []

    async def test_insert_of_existing_batch_conflicts(self, store: ContractStore) -> None:
        first = await self.seed(store, "b1")
        other = make_state("b1", user_id="someone-else")
        with pytest.raises(ConcurrencyConflictError) as info:
            await store.commit(Change("b1", None, other, T0))
        assert info.value.batch_id == "b1"
        assert await store.load("b1") == first

    async def test_update_on_read_version(self, store: ContractStore) -> None:
        first = await self.seed(store, "b1")
        second = attrs.evolve(first, version=2, status=BatchStatus.PROCESSING_PIPELINES)
        await store.commit(Change("b1", 1, second, T0))
        assert await store.load("b1") == second
        third = attrs.evolve(second, version=3, status=BatchStatus.READY_FOR_PIPELINE_EXECUTION)
        await store.commit(Change("b1", 2, third, T0))
        assert await store.load("b1") == third

    async def test_stale_version_conflicts_and_writes_nothing(self, store: ContractStore) -> None:
        first = await self.seed(store, "b1")
        second = attrs.evolve(first, version=2)
        await store.commit(Change("b1", 1, second, T0))
        stale = attrs.evolve(first, version=2, status=BatchStatus.CANCELLED)
        change = Change(
            "b1",
            1,
            stale,
            T0,
            outbox=(message("m1", "b1"),),
            inbox=_inbox("in-1", "b1"),
            transitions=(_log("b1", "in-1"),),
        )
        with pytest.raises(ConcurrencyConflictError) as info:
            await store.commit(change)
        assert (info.value.batch_id, info.value.expected) == ("b1", 1)
        assert await store.load("b1") == second
        assert not await store.is_processed("in-1")
        assert await store.pending_count() == 0

    async def test_version_must_grow(self, store: ContractStore) -> None:
        first = await self.seed(store, "b1")
        same = attrs.evolve(first, status=BatchStatus.CANCELLED)
        with pytest.raises(ConcurrencyConflictError):
            await store.commit(Change("b1", 1, same, T0))
        assert await store.load("b1") == first

    async def test_version_checked_when_nothing_to_write(self, store: ContractStore) -> None:
        first = await self.seed(store, "b1")
        await store.commit(Change("b1", 1, attrs.evolve(first, version=2), T0))
        stale = Change("b1", 1, None, T0, outbox=(message("m1", "b1"),), inbox=_inbox("in-1", "b1"))
        with pytest.raises(ConcurrencyConflictError):
            await store.commit(stale)
        assert not await store.is_processed("in-1")
        assert await store.pending_count() == 0
        fresh = Change("b1", 2, None, T0, outbox=(message("m1", "b1"),), inbox=_inbox("in-1", "b1"))
        await store.commit(fresh)
        assert await store.is_processed("in-1")
        assert await store.pending_count() == 1
        loaded = await store.load("b1")
        assert loaded is not None
        assert loaded.version == 2

    async def test_absence_checked_when_nothing_to_write(self, store: ContractStore) -> None:
        await self.seed(store, "b1")
        with pytest.raises(ConcurrencyConflictError):
            await store.commit(Change("b1", None, None, T0, inbox=_inbox("in-1", "b1")))
        assert not await store.is_processed("in-1")
        await store.commit(Change("b2", None, None, T0, inbox=_inbox("in-2", "b2", "ignored:x")))
        assert await store.load("b2") is None
        assert await store.is_processed("in-2")

    # -- inbox ----------------------------------------------------------------------------
    async def test_inbox_entry_is_recorded(self, store: ContractStore) -> None:
        assert not await store.is_processed("in-1")
        assert await store.inbox_entry("in-1") is None
        state = make_state("b1")
        await store.commit(Change("b1", None, state, T0, inbox=_inbox("in-1", "b1", "applied")))
        assert await store.is_processed("in-1")
        assert await store.inbox_entry("in-1") == _inbox("in-1", "b1", "applied")

    async def test_duplicate_event_is_rejected_and_writes_nothing(self, store: ContractStore) -> None:
        first = make_state("b1")
        await store.commit(Change("b1", None, first, T0, inbox=_inbox("in-1", "b1")))
        again = Change(
            "b1",
            1,
            attrs.evolve(first, version=2, status=BatchStatus.CANCELLED),
            T0,
            outbox=(message("m1", "b1"),),
            inbox=_inbox("in-1", "b1", "other"),
        )
        with pytest.raises(DuplicateEventError) as info:
            await store.commit(again)
        assert info.value.event_id == "in-1"
        assert await store.load("b1") == first
        assert await store.pending_count() == 0
        assert await store.inbox_entry("in-1") == _inbox("in-1", "b1")

    # -- deadlines and listing ------------------------------------------------------------
    async def test_overdue_batches(self, store: ContractStore) -> None:
        soon = await self.seed(store, "b-soon", running=True, deadline=T0 + timedelta(seconds=10))
        await self.seed(store, "b-later", running=True, deadline=T0 + timedelta(seconds=20))
        await self.seed(store, "a-later", running=True, deadline=T0 + timedelta(seconds=20))
        await self.seed(store, "b-none", running=True)
        await self.seed(store, "b-idle")
        assert await store.overdue_batches(T0 + timedelta(seconds=5)) == []
        assert await store.overdue_batches(T0 + timedelta(seconds=15)) == ["b-soon"]
        due = T0 + timedelta(seconds=20)
        # The most overdue first, then by id: a limited sweep never passes one over for ever.
        assert await store.overdue_batches(due) == ["b-soon", "a-later", "b-later"]
        assert await store.overdue_batches(due, limit=2) == ["b-soon", "a-later"]
        assert await store.overdue_batches(due, limit=1) == ["b-soon"]
        # A new state without an active deadline leaves the sweep.
        done = attrs.evolve(soon, version=2, active_run=None, status=BatchStatus.READY_FOR_PIPELINE_EXECUTION)
        await store.commit(Change("b-soon", 1, done, T0))
        assert await store.overdue_batches(due) == ["a-later", "b-later"]

    async def test_list_batches_by_status_in_id_order(self, store: ContractStore) -> None:
        for batch_id, status in [
            ("c", BatchStatus.READY_FOR_PIPELINE_EXECUTION),
            ("a", BatchStatus.READY_FOR_PIPELINE_EXECUTION),
            ("b", BatchStatus.CANCELLED),
            ("d", BatchStatus.READY_FOR_PIPELINE_EXECUTION),
        ]:
            await store.commit(Change(batch_id, None, make_state(batch_id, status=status), T0))
        assert [s.batch_id for s in await store.list_batches()] == ["a", "b", "c", "d"]
        ready = await store.list_batches(BatchStatus.READY_FOR_PIPELINE_EXECUTION)
        assert [s.batch_id for s in ready] == ["a", "c", "d"]
        assert ready[0] == make_state("a")
        page = await store.list_batches(BatchStatus.READY_FOR_PIPELINE_EXECUTION, limit=1, offset=1)
        assert [s.batch_id for s in page] == ["c"]
        assert await store.list_batches(BatchStatus.ARCHIVED) == []

    # -- outbox ---------------------------------------------------------------------------
    async def test_claim_returns_messages_as_committed(self, store: ContractStore) -> None:
        sent = (message("m1", "k1", "topic.a"), message("m2", None, "topic.b"))
        await self.enqueue(store, *sent, at=T0 + timedelta(seconds=3))
        rows = await store.claim(T0 + timedelta(seconds=3))
        assert [r.message for r in rows] == list(sent)
        assert all(r.created_at == T0 + timedelta(seconds=3) for r in rows)
        assert all(
            (r.attempts, r.last_error, r.parked, r.published_at) == (0, None, False, None) for r in rows
        )
        assert rows[0].id < rows[1].id

    async def test_rows_keep_their_trace_context_through_a_failed_attempt(self, store: ContractStore) -> None:
        context = (
            ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            ("tracestate", "k=v"),
        )
        await self.enqueue(
            store, attrs.evolve(message("m1", "k1"), trace_context=context), message("m2", "k2")
        )
        first = await store.claim(T0 + timedelta(seconds=1))
        assert [r.message.trace_context for r in first] == [context, ()]
        await store.mark_failed(first[0].id, "boom", T0, retry_at=T0 + timedelta(seconds=2), park=False)
        [again] = await store.claim(T0 + timedelta(seconds=3))
        assert (again.message.event_id, again.message.trace_context) == ("m1", context)

    async def test_claim_keeps_order_per_key(self, store: ContractStore) -> None:
        await self.enqueue(store, message("a1", "a"), message("b1", "b"))
        await self.enqueue(store, message("a2", "a"), message("n1", None))
        await self.enqueue(store, message("n2", None), message("b2", "b"))
        first = await store.claim(T0)
        assert _ids(first) == ["a1", "b1", "n1"]
        await store.mark_published([r.id for r in first], T0)
        second = await store.claim(T0)
        assert _ids(second) == ["a2", "n2", "b2"]

    async def test_claim_takes_oldest_first_up_to_limit(self, store: ContractStore) -> None:
        for i in range(5):
            await self.enqueue(store, message(f"m{i}", f"k{i}"))
        rows = await store.claim(T0, limit=3)
        assert _ids(rows) == ["m0", "m1", "m2"]

    async def test_claimed_rows_are_not_claimed_again(self, store: ContractStore) -> None:
        await self.enqueue(store, message("a1", "a"), message("b1", "b"))
        assert _ids(await store.claim(T0)) == ["a1", "b1"]
        await self.enqueue(store, message("a2", "a"))
        # Claimed and not yet marked: not handed to another relay, and a1 (in flight) holds a2 back.
        assert await store.claim(T0) == []
        assert await store.pending_count() == 3

    async def test_published_rows_never_come_back(self, store: ContractStore) -> None:
        await self.enqueue(store, message("m1", "k"))
        rows = await store.claim(T0)
        await store.mark_published([r.id for r in rows], T0)
        await store.mark_published([r.id for r in rows], T0)  # idempotent
        await self.enqueue(store, message("m2", "k"))
        assert _ids(await store.claim(T0 + timedelta(days=1))) == ["m2"]
        assert await store.pending_count() == 1

    async def test_failed_row_waits_for_retry_and_holds_its_key(self, store: ContractStore) -> None:
        await self.enqueue(store, message("a1", "a"))
        (a1,) = await store.claim(T0)
        await store.mark_failed(a1.id, "boom", T0, retry_at=T0 + timedelta(seconds=10), park=False)
        await self.enqueue(store, message("a2", "a"), message("b1", "b"))
        # a1 backs off until T0+10 and holds a2 back; b1 is free to go.
        (b1,) = await store.claim(T0 + timedelta(seconds=9))
        assert b1.message.event_id == "b1"
        await store.mark_published([b1.id], T0)
        again = await store.claim(T0 + timedelta(seconds=10))
        assert _ids(again)[:1] == ["a1"]
        assert (again[0].attempts, again[0].last_error, again[0].parked) == (1, "boom", False)
        assert again[0].message == a1.message
        await store.mark_failed(a1.id, "boom 2", T0, retry_at=T0 + timedelta(seconds=20), park=False)
        third = await store.claim(T0 + timedelta(seconds=20))
        assert (_ids(third)[:1], third[0].attempts, third[0].last_error) == (["a1"], 2, "boom 2")

    async def test_parked_row_leaves_delivery_and_frees_its_key(self, store: ContractStore) -> None:
        await self.enqueue(store, message("a1", "a"))
        (a1,) = await store.claim(T0)
        await store.mark_failed(a1.id, "poison", T0, retry_at=T0 + timedelta(seconds=1), park=True)
        await self.enqueue(store, message("a2", "a"))
        assert await store.pending_count() == 1
        parked = await store.parked()
        assert [(r.message, r.attempts, r.last_error, r.parked) for r in parked] == [
            (a1.message, 1, "poison", True)
        ]
        later = await store.claim(T0 + timedelta(days=1))
        assert _ids(later) == ["a2"]

    async def test_row_committed_after_newer_rows_went_out_is_delivered(self, store: ContractStore) -> None:
        await self.enqueue(store, message("m1", "k1"), message("m2", "k2"))
        rows = await store.claim(T0)
        await store.mark_published([r.id for r in rows], T0)
        # A row committed now (possibly with any id) is still found: no "last seen" cursor.
        await self.enqueue(store, message("late", "k1"), at=T0 - timedelta(seconds=30))
        assert _ids(await store.claim(T0)) == ["late"]

    async def test_pending_count(self, store: ContractStore) -> None:
        assert await store.pending_count() == 0
        await self.enqueue(store, message("m1", "a"), message("m2", "b"), message("m3", "c"))
        assert await store.pending_count() == 3
        rows = await store.claim(T0)
        await store.mark_published([rows[0].id], T0)
        await store.mark_failed(rows[1].id, "x", T0, retry_at=T0, park=True)
        assert await store.pending_count() == 1
        assert _ids(await store.parked()) == ["m2"]

    # -- commit_many (optional) -----------------------------------------------------------
    async def test_commit_many_chains_changes_in_order(self, store: ContractStore) -> None:
        batching = _batching(store)
        v1 = make_state("b1")
        v2 = attrs.evolve(v1, version=2, status=BatchStatus.PROCESSING_PIPELINES)
        v3 = with_deadline(attrs.evolve(v2, version=3), T0 + timedelta(seconds=30))
        other = make_state("b2")
        await batching.commit_many(
            [
                Change("b1", None, v1, T0, outbox=(message("m1", "b1"),), inbox=_inbox("in-1", "b1")),
                Change("b2", None, other, T0, inbox=_inbox("in-2", "b2")),
                Change("b1", 1, v2, T0, outbox=(message("m2", "b1"),), inbox=_inbox("in-3", "b1")),
                Change("b1", 2, None, T0, outbox=(message("m3", "b2"),), inbox=_inbox("in-4", "b1", "x")),
                Change("b1", 2, v3, T0, inbox=_inbox("in-5", "b1"), transitions=(_log("b1", "in-5"),)),
            ]
        )
        assert await store.load("b1") == v3
        assert await store.load("b2") == other
        for n in range(1, 6):
            assert await store.is_processed(f"in-{n}")
        assert await store.inbox_entry("in-4") == _inbox("in-4", "b1", "x")
        assert await store.overdue_batches(T0 + timedelta(seconds=30)) == ["b1"]
        rows = await store.claim(T0, limit=10)
        assert [r.message for r in rows] == [message("m1", "b1"), message("m3", "b2")]
        await store.mark_published([r.id for r in rows], T0)
        assert _ids(await store.claim(T0)) == ["m2"]  # m2 waited behind m1 (same key, older)

    async def test_commit_many_conflict_anywhere_writes_nothing(self, store: ContractStore) -> None:
        batching = _batching(store)
        seeded = await self.seed(store, "b0")
        v1 = make_state("b1")
        batch = [
            Change("b1", None, v1, T0, outbox=(message("m1", "b1"),), inbox=_inbox("in-1", "b1")),
            Change("b0", 1, attrs.evolve(seeded, version=2), T0, inbox=_inbox("in-2", "b0")),
            # Stale: the chain is at version 1 for b1, not 2.
            Change("b1", 2, attrs.evolve(v1, version=3), T0, inbox=_inbox("in-3", "b1")),
        ]
        with pytest.raises(ConcurrencyConflictError) as info:
            await batching.commit_many(batch)
        assert (info.value.batch_id, info.value.expected) == ("b1", 2)
        assert await store.load("b1") is None
        assert await store.load("b0") == seeded
        assert not any([await store.is_processed(f"in-{n}") for n in (1, 2, 3)])
        assert await store.pending_count() == 0
        # A version that does not grow within the chain conflicts too.
        same = [
            Change("b1", None, v1, T0),
            Change("b1", 1, attrs.evolve(v1, status=BatchStatus.CANCELLED), T0),
        ]
        with pytest.raises(ConcurrencyConflictError):
            await batching.commit_many(same)
        assert await store.load("b1") is None

    async def test_commit_many_duplicate_writes_nothing(self, store: ContractStore) -> None:
        batching = _batching(store)
        await store.commit(Change("b0", None, None, T0, inbox=_inbox("old", "b0")))
        v1 = make_state("b1")
        repeated = [
            Change("b1", None, v1, T0, outbox=(message("m1", "b1"),), inbox=_inbox("in-1", "b1")),
            Change("b1", 1, None, T0, outbox=(message("m2", "b1"),), inbox=_inbox("in-1", "b1", "other")),
        ]
        known = [
            Change("b1", None, v1, T0, inbox=_inbox("in-1", "b1")),
            Change("b0", None, None, T0, inbox=_inbox("old", "b0", "other")),
        ]
        for batch, event_id in ((repeated, "in-1"), (known, "old")):
            with pytest.raises(DuplicateEventError) as info:
                await batching.commit_many(batch)
            assert info.value.event_id == event_id
            assert await store.load("b1") is None
            assert not await store.is_processed("in-1")
            assert await store.pending_count() == 0
        assert await store.inbox_entry("old") == _inbox("old", "b0")
        await batching.commit_many([])
        assert await store.load("b1") is None

    # -- the one-read loads (optional) ------------------------------------------------------
    async def test_load_for_event_answers_the_inbox_check_and_the_batch(self, store: ContractStore) -> None:
        reads = _event_reading(store)
        assert await reads.load_for_event("b1", "e1") == (False, None, False)
        state = await self.seed(store, "b1")
        await store.commit(_deferral(_fact("w1", "b1"), expected=1))
        assert await reads.load_for_event("b1", "e1") == (False, state, True)
        assert await reads.load_for_event("b1", "w1") == (True, None, False)  # processed: not read
        assert await reads.load_for_event("b2", "w1") == (True, None, False)
        # The same answers as the two reads it replaces.
        assert await store.is_processed("w1")
        assert not await store.is_processed("e1")
        assert await store.load_with_waiting("b1") == (state, True)

    async def test_load_for_events_answers_every_pair_at_once(self, store: ContractStore) -> None:
        reads = _event_reading(store)
        assert await reads.load_for_events([]) == (frozenset(), {})
        b1, b2 = await self.seed(store, "b1"), await self.seed(store, "b2")
        await store.commit(Change("b1", 1, attrs.evolve(b1, version=2), T0, inbox=_inbox("e1", "b1")))
        await store.commit(_deferral(_fact("w1", "b2"), expected=1))
        b1 = attrs.evolve(b1, version=2)
        pairs = [("b1", "e1"), ("b2", "w1"), ("b2", "e3"), ("b3", "e4"), ("b1", "e1")]
        processed, read = await reads.load_for_events(pairs)
        assert processed == {"e1", "w1"}
        # b1's only event was processed, so it is not read; b3 is not stored.
        assert read == {"b2": (b2, True), "b3": (None, False)}
        processed, read = await reads.load_for_events([("b1", "e5")])
        assert (processed, read) == (frozenset(), {"b1": (b1, False)})

    # -- counting the runs (optional) -------------------------------------------------------
    async def test_active_runs_counts_the_running_batches_and_the_oldest_run(
        self, store: ContractStore
    ) -> None:
        counting = _run_counting(store)
        assert await counting.active_runs() == (0, None)
        await self.seed(store, "idle")
        for name, hours in (("late", 5), ("early", 2), ("middle", 3)):
            state = with_deadline(make_state(name), None)
            assert state.active_run is not None
            run = attrs.evolve(state.active_run, accepted_at=T0 + timedelta(hours=hours, microseconds=5))
            await store.commit(Change(name, None, attrs.evolve(state, active_run=run), T0))
        await store.commit(Change("gone", None, make_state("gone", status=BatchStatus.CANCELLED), T0))
        count, oldest = await counting.active_runs()
        assert count == 3
        assert oldest is not None
        assert abs(oldest - (T0 + timedelta(hours=2, microseconds=5))) < timedelta(milliseconds=1)
        # What listing the running batches would say.
        listed = await store.list_batches(BatchStatus.PROCESSING_PIPELINES)
        assert count == len(listed)
        early = await store.load("early")
        assert early is not None
        await store.commit(
            Change(
                "early",
                early.version,
                attrs.evolve(
                    early,
                    active_run=None,
                    status=BatchStatus.READY_FOR_PIPELINE_EXECUTION,
                    version=early.version + 1,
                ),
                T0,
            )
        )
        count, oldest = await counting.active_runs()
        assert count == 2
        assert oldest is not None
        assert abs(oldest - (T0 + timedelta(hours=3, microseconds=5))) < timedelta(milliseconds=1)

    # -- waiting facts ----------------------------------------------------------------------
    async def test_waiting_fact_is_kept_with_its_inbox_entry(self, store: ContractStore) -> None:
        first, second = _fact("w1", "b1"), _fact("w2", "b1", at=T0 + timedelta(seconds=1))
        other = _fact("w3", "b2", at=T0 + timedelta(seconds=2))
        for fact in (first, second, other):
            await store.commit(_deferral(fact))
        assert await store.load_with_waiting("b1") == (None, True)
        assert await store.load_with_waiting("b9") == (None, False)
        assert await store.count_waiting() == 3
        listed = await store.list_waiting()
        assert [attrs.evolve(f, seq=0) for f in listed] == [first, second, other]  # raw exact
        assert listed[0].seq < listed[1].seq < listed[2].seq
        assert [f.event_id for f in await store.list_waiting("b1")] == ["w1", "w2"]
        assert [f.event_id for f in await store.list_waiting(limit=1)] == ["w1"]
        before = T0 + timedelta(seconds=1)
        assert [f.event_id for f in await store.list_waiting(arrived_before=before)] == ["w1"]
        assert await store.inbox_entry("w1") == _inbox("w1", "b1", "deferred:batch_registration")
        # A redelivery is a duplicate and keeps nothing more.
        with pytest.raises(DuplicateEventError):
            await store.commit(_deferral(first))
        assert await store.count_waiting() == 3
        # The batch's flag follows it once registered.
        await self.seed(store, "b1")
        assert await store.load_with_waiting("b1") == (make_state("b1"), True)

    async def test_resolving_a_waiting_fact_replaces_its_inbox_entry(self, store: ContractStore) -> None:
        state = await self.seed(store, "b1")
        await store.commit(_deferral(_fact("w1", "b1"), expected=1))
        moved = attrs.evolve(state, version=2, status=BatchStatus.PROCESSING_PIPELINES)
        resolve = Change(
            "b1",
            1,
            moved,
            T0,
            outbox=(message("m1", "b1"),),
            inbox=_inbox("w1", "b1", "applied"),
            resolves="w1",
        )
        await store.commit(resolve)
        assert await store.load_with_waiting("b1") == (moved, False)
        assert await store.inbox_entry("w1") == _inbox("w1", "b1", "applied")
        assert await store.count_waiting() == 0
        # Resolved once only: a second writer that re-attempted it too loses.
        again = Change("b1", 2, None, T0, inbox=_inbox("w1", "b1", "ignored:x"), resolves="w1")
        with pytest.raises(ConcurrencyConflictError):
            await store.commit(again)
        assert await store.inbox_entry("w1") == _inbox("w1", "b1", "applied")
        assert await store.pending_count() == 1

    async def test_commit_many_keeps_and_resolves_in_one_go(self, store: ContractStore) -> None:
        batching = _batching(store)
        state = make_state("b1")
        fact = _fact("w1", "b1")
        await batching.commit_many(
            [
                _deferral(fact),
                Change("b1", None, state, T0, inbox=_inbox("in-1", "b1")),
                Change("b1", 1, None, T0, inbox=_inbox("w1", "b1", "ignored:late"), resolves="w1"),
            ]
        )
        assert await store.load_with_waiting("b1") == (state, False)
        assert await store.inbox_entry("w1") == _inbox("w1", "b1", "ignored:late")

    async def test_commit_many_carries_archived_runs_re_sends_and_rewaits(self, store: ContractStore) -> None:
        """Every part of a change counts in ``commit_many`` as in ``commit``: the runs it
        archives, the rows it re-queues and what its waiting facts wait for now (a group
        commit or a resumed fact goes this way)."""
        batching = _batching(store)
        await self.enqueue(store, message("sent-1", "h1"))
        rows = await store.claim(T0)
        await store.mark_published([r.id for r in rows], T0)
        await store.commit(_deferral(_fact("w1", "h1")))
        state = with_deadline(make_state("h1"), None)
        first = archived_run("h1")
        later = T0 + timedelta(seconds=5)
        await batching.commit_many(
            [
                Change("h1", None, state, later, inbox=_inbox("in-1", "h1"), archived=(first,)),
                Change(
                    "h1",
                    1,
                    attrs.evolve(state, version=2),
                    later,
                    inbox=_inbox("in-2", "h1"),
                    republish=("sent-1",),
                    rewaits=(("w1", "batch_state:ready"),),
                ),
            ]
        )
        assert await store.history("h1") == [first]
        assert [(f.event_id, f.waits_for) for f in await store.list_waiting("h1")] == [
            ("w1", "batch_state:ready")
        ]
        assert _ids(await store.claim(later)) == ["sent-1"]

    async def test_forget_waiting_records_the_result(self, store: ContractStore) -> None:
        await store.commit(_deferral(_fact("w1", "b1")))
        await store.commit(_deferral(_fact("w2", "b1")))
        later = T0 + timedelta(hours=1)
        assert (
            await store.forget_waiting(["w1", "nope", "w1"], "dead_lettered:batch_registration", later) == 1
        )
        assert [f.event_id for f in await store.list_waiting()] == ["w2"]
        entry = await store.inbox_entry("w1")
        assert entry is not None
        assert (entry.result, entry.processed_at) == ("dead_lettered:batch_registration", later)
        assert await store.forget_waiting([], "x", later) == 0

    async def test_rewaits_update_what_a_fact_waits_for_in_place(self, store: ContractStore) -> None:
        await store.commit(_deferral(_fact("w1", "b1")))
        await store.commit(_deferral(_fact("w2", "b1")))
        later = T0 + timedelta(seconds=5)
        change = Change("b9", None, None, later, rewaits=(("w1", "batch_state:ready"), ("gone", "x")))
        await store.commit(change)
        waiting = await store.list_waiting()
        assert [(f.event_id, f.waits_for) for f in waiting] == [
            ("w1", "batch_state:ready"),
            ("w2", "batch_registration"),
        ]  # arrival order and arrival time kept
        assert waiting[0].arrived_at == _fact("w1", "b1").arrived_at

    # -- republish and stalled runs -----------------------------------------------------------
    async def test_republish_requeues_rows_with_the_same_event_id(self, store: ContractStore) -> None:
        await self.enqueue(store, message("a1", "b1"), message("p1", "b1"))
        rows = await store.claim(T0)
        await store.mark_published([rows[0].id], T0)
        (parked,) = await store.claim(T0)
        await store.mark_failed(parked.id, "too big", T0, retry_at=T0, park=True)
        assert await store.pending_count() == 0
        later = T0 + timedelta(seconds=30)
        await store.commit(Change("b9", None, None, later, republish=("a1", "p1", "unknown")))
        assert await store.pending_count() == 2
        assert await store.parked() == []
        # Both go out again, one row of the key at a time (the order between them is the
        # store's: a re-queued row keeps its place, a re-created one comes last).
        sent: list[OutboxRow] = []
        for _ in range(2):
            again = await store.claim(later, limit=10)
            assert len(again) == 1
            sent += again
            await store.mark_published([again[0].id], later)
        assert sorted(r.message.event_id for r in sent) == ["a1", "p1"]
        assert {r.message.event_id: r.message for r in sent} == {
            "a1": message("a1", "b1"),
            "p1": message("p1", "b1"),
        }
        assert [(r.attempts, r.last_error, r.parked, r.published_at) for r in sent] == [
            (0, None, False, None)
        ] * 2
        assert await store.claim(later) == []

    async def test_stalled_runs_oldest_first_with_parked_rows(self, store: ContractStore) -> None:
        for n, batch_id in enumerate(("s2", "s1", "s3")):
            state = attrs.evolve(
                with_deadline(make_state(batch_id), None), updated_at=T0 + timedelta(seconds=10 * n)
            )
            await store.commit(Change(batch_id, None, state, T0))
        await self.seed(store, "idle")
        await self.enqueue(store, message("cmd-s1", "s1"))
        (row,) = await store.claim(T0)
        await store.mark_failed(row.id, "poison", T0, retry_at=T0, park=True)
        now = T0 + timedelta(seconds=100)
        stalled = await store.stalled_runs(now, 85)
        assert [s.batch_id for s in stalled] == ["s2", "s1"]
        first = stalled[0]
        assert (first.run_id, first.pipeline_name, first.last_change_at) == ("s2-run-1", "transcode", T0)
        assert first.accepted_at == T0 + timedelta(seconds=6)
        assert first.active_phases == ("ingest", "transcode")
        assert first.parked == ()
        assert [r.message.event_id for r in stalled[1].parked] == ["cmd-s1"]
        assert [s.batch_id for s in await store.stalled_runs(now, 0, limit=2)] == ["s2", "s1"]
        assert await store.stalled_runs(now, 1000) == []

    # -- every part of a change, in every shape the service writes it ---------------------------
    # (each rule below was found missing by mutation testing: a store that broke it passed the
    # contract and broke the engine's promise; tests/core/test_core_contract_mutants.py)
    async def test_outbox_of_a_change_that_archives_a_run(self, store: ContractStore) -> None:
        """A run's completion event is written with the change that archives the run."""
        state = with_deadline(make_state("h1"), None)
        done = attrs.evolve(
            state, version=2, active_run=None, status=BatchStatus.READY_FOR_PIPELINE_EXECUTION
        )
        await store.commit(Change("h1", None, state, T0))
        completion = message("done-1", "h1")
        await store.commit(Change("h1", 1, done, T0, outbox=(completion,), archived=(archived_run("h1"),)))
        assert _ids(await store.claim(T0)) == ["done-1"]

    async def test_inbox_of_a_change_with_state_and_messages(self, store: ContractStore) -> None:
        """The inbox entry of a change that writes a state and messages is recorded with them:
        the event again is a duplicate that writes nothing."""
        first = make_state("b1")
        await store.commit(
            Change("b1", None, first, T0, outbox=(message("m1", "b1"),), inbox=_inbox("in-1", "b1"))
        )
        again = Change(
            "b1",
            1,
            attrs.evolve(first, version=2),
            T0,
            outbox=(message("m2", "b1"),),
            inbox=_inbox("in-1", "b1"),
        )
        with pytest.raises(DuplicateEventError):
            await store.commit(again)
        assert await store.load("b1") == first
        assert _ids(await store.claim(T0, limit=10)) == ["m1"]

    async def test_a_fact_kept_with_a_state(self, store: ContractStore) -> None:
        """A fact deferred on a known batch is kept by the change that moves the batch's
        version on (what the service writes)."""
        state = make_state("b1")
        await store.commit(Change("b1", None, state, T0))
        fact = _fact("w1", "b1")
        bumped = attrs.evolve(state, version=2)
        await store.commit(attrs.evolve(_deferral(fact, 1), state=bumped))
        assert [f.event_id for f in await store.list_waiting("b1")] == ["w1"]
        assert await store.load_with_waiting("b1") == (bumped, True)

    async def test_republish_rewaits_and_resolves_with_a_state(self, store: ContractStore) -> None:
        """``republish``, ``rewaits`` and ``resolves`` count in a change that writes a state
        (a deadline's re-send, a resumed fact)."""
        await self.enqueue(store, message("cmd-1", "b1"))
        rows = await store.claim(T0)
        await store.mark_published([r.id for r in rows], T0)
        state = make_state("b1")
        await store.commit(Change("b1", None, state, T0))
        await store.commit(
            attrs.evolve(_deferral(_fact("w1", "b1"), 1), state=attrs.evolve(state, version=2))
        )
        await store.commit(
            attrs.evolve(_deferral(_fact("w2", "b1"), 2), state=attrs.evolve(state, version=3))
        )
        later = T0 + timedelta(seconds=5)
        await store.commit(
            Change(
                "b1",
                3,
                attrs.evolve(state, version=4),
                later,
                inbox=_inbox("w1", "b1", "applied"),
                resolves="w1",
                rewaits=(("w2", "run_start"),),
                republish=("cmd-1",),
            )
        )
        assert [(f.event_id, f.waits_for) for f in await store.list_waiting("b1")] == [("w2", "run_start")]
        assert _ids(await store.claim(later)) == ["cmd-1"]

    async def test_resolves_without_a_state(self, store: ContractStore) -> None:
        """A fact resolved by a change that writes no state leaves the waiting set."""
        await store.commit(_deferral(_fact("w1", "b9")))
        await store.commit(
            Change("b9", None, None, T0, inbox=_inbox("w1", "b9", "ignored:late"), resolves="w1")
        )
        assert await store.list_waiting("b9") == []
        assert await store.inbox_entry("w1") == _inbox("w1", "b9", "ignored:late")

    async def test_a_deadline_added_by_an_update_and_the_earliest_of_two(self, store: ContractStore) -> None:
        """A deadline that an update adds is swept, and a run with two phases due is overdue at
        the earlier of their deadlines."""
        await self.seed(store, "b1")
        running = with_deadline(make_state("b1", version=2), T0 + timedelta(seconds=600))
        run = running.active_run
        assert run is not None
        two = attrs.evolve(
            run,
            phases=(
                run.phases[0],
                _phase("transcode", PhaseStatus.DISPATCH_INITIATED, deadline_at=T0 + timedelta(seconds=60)),
            ),
        )
        await store.commit(Change("b1", 1, attrs.evolve(running, active_run=two), T0))
        assert await store.overdue_batches(T0 + timedelta(seconds=59)) == []
        assert await store.overdue_batches(T0 + timedelta(seconds=60)) == ["b1"]

    async def test_waiting_facts_come_back_in_arrival_order(self, store: ContractStore) -> None:
        """Arrival order, not id order or time order: facts whose ids sort against their
        arrival, arriving at the same instant."""
        for event_id in ("w-c", "w-a", "w-b"):
            await store.commit(_deferral(_fact(event_id, "b1")))
        assert [f.event_id for f in await store.list_waiting("b1")] == ["w-c", "w-a", "w-b"]
        assert [f.event_id for f in await store.list_waiting()] == ["w-c", "w-a", "w-b"]

    async def test_list_waiting_honours_a_large_limit(self, store: ContractStore) -> None:
        """The service reads up to 2,000 facts of a batch: a store returns what it is asked."""
        for n in range(120):
            await store.commit(_deferral(_fact(f"w{n:03}", "b1")))
        assert len(await store.list_waiting("b1", limit=2000)) == 120

    async def test_commit_many_keeps_every_fact_of_a_batch(self, store: ContractStore) -> None:
        batching = _batching(store)
        await batching.commit_many([_deferral(_fact("w1", "b1")), _deferral(_fact("w2", "b1"))])
        assert [f.event_id for f in await store.list_waiting("b1")] == ["w1", "w2"]

    async def test_batch_ids_differ_in_case(self, store: ContractStore) -> None:
        """Ids are exact: ``b1`` and ``B1`` are two batches (no case-folding collation)."""
        await self.seed(store, "b1")
        assert await store.load("B1") is None
        await self.seed(store, "B1")
        assert (await store.load("B1")) == make_state("B1")

    async def test_mark_published_marks_the_rows_it_names(self, store: ContractStore) -> None:
        """Behind a parked row of its key, the row published is the one named: it never comes
        back, and the parked row stays parked."""
        await self.enqueue(store, message("poison", "k"), message("next", "k"))
        (poison,) = await store.claim(T0)
        await store.mark_failed(poison.id, "poison", T0, retry_at=T0, park=True)
        (nxt,) = await store.claim(T0)
        assert nxt.message.event_id == "next"
        await store.mark_published([nxt.id], T0)
        later = T0 + timedelta(days=1)
        assert await store.claim(later) == []
        assert _ids(await store.parked()) == ["poison"]

    async def test_a_lease_ends(self, store: ContractStore) -> None:
        """A row claimed by a relay that never marked it (it died) is claimed again once the
        lease has passed (a day here: longer than any store's lease in these tests)."""
        await self.enqueue(store, message("m1", "k"))
        assert _ids(await store.claim(T0)) == ["m1"]
        assert await store.claim(T0) == []
        assert _ids(await store.claim(T0 + timedelta(days=1))) == ["m1"]

    async def test_forget_waiting_skips_facts_no_longer_waiting(self, store: ContractStore) -> None:
        await store.commit(_deferral(_fact("w1", "b9")))
        await store.commit(Change("b9", None, None, T0, inbox=_inbox("w1", "b9", "applied"), resolves="w1"))
        assert await store.forget_waiting(["w1"], "dead_lettered:x", T0 + timedelta(hours=1)) == 0
        assert await store.inbox_entry("w1") == _inbox("w1", "b9", "applied")

    async def test_unpark_requeues_only_rows_still_parked(self, store: ContractStore) -> None:
        """``Change.unpark`` (an operator's republish) delivers a parked row again and leaves a
        pending, published or unknown one as it is: a second request, or one racing the
        relay, never delivers a row twice."""
        await self.enqueue(store, message("p1", "a"), message("d1", "b"))
        for row in await store.claim(T0):
            if row.message.event_id == "p1":
                await store.mark_failed(row.id, "down", T0, retry_at=T0, park=True)
            else:
                await store.mark_published([row.id], T0)
        unpark = Change("b9", None, None, T0, unpark=("p1", "d1", "unknown"))
        await store.commit(unpark)
        assert await store.parked() == []
        assert _ids(await store.claim(T0)) == ["p1"]  # d1 stays published
        await store.commit(Change("b9", None, None, T0, unpark=("p1",)))  # p1 is pending: left alone
        (p1,) = await store.claim(T0 + timedelta(days=1))  # its lease ran out; still one row
        await store.mark_published([p1.id], T0)
        await store.commit(Change("b9", None, None, T0, unpark=("p1",)))  # published: left alone
        assert await store.claim(T0 + timedelta(days=2)) == []
        assert await store.pending_count() == 0

    async def test_a_due_time_or_lease_far_ahead_of_the_clock_counts_as_passed(
        self, store: ContractStore
    ) -> None:
        """``CLOCK_STEP_HORIZON_SECONDS``: a lease or retry due time more than an hour ahead of
        the claimer's clock was written by a clock ahead of it (a crashed process's, or its
        own before a backward step) and counts as passed; one within the hour holds."""
        await self.enqueue(store, message("leased", "c"))
        assert _ids(await store.claim(T0 + timedelta(days=365))) == ["leased"]  # a clock a year ahead
        await self.enqueue(store, message("soon", "a"), message("far", "b"))
        rows = {r.message.event_id: r for r in await store.claim(T0)}
        assert sorted(rows) == ["far", "leased", "soon"]
        await store.mark_failed(rows["soon"].id, "down", T0, retry_at=T0 + timedelta(minutes=30), park=False)
        await store.mark_failed(rows["far"].id, "down", T0, retry_at=T0 + timedelta(days=365), park=False)
        assert _ids(await store.claim(T0 + timedelta(seconds=1))) == ["far"]  # "leased" is leased now

    async def test_stalled_runs_include_a_run_changed_far_ahead_of_the_clock(
        self, store: ContractStore
    ) -> None:
        await self.seed(store, "b-ahead", running=True)
        await self.seed(store, "b-soon", running=True)
        for batch_id, ahead in (("b-ahead", timedelta(days=365)), ("b-soon", timedelta(minutes=10))):
            state = await store.load(batch_id)
            assert state is not None
            moved = attrs.evolve(state, version=state.version + 1, updated_at=T0 + ahead)
            await store.commit(Change(batch_id, state.version, moved, T0))
        stalled = await store.stalled_runs(T0, 3600)
        assert [s.batch_id for s in stalled] == ["b-ahead"]

    # -- retention (optional: PurgingStore) -----------------------------------------------
    @staticmethod
    async def processed(store: ContractStore, event_id: str, at: datetime, *, logged: bool = False) -> None:
        """Record ``event_id`` as processed at ``at`` (and log one move then, with ``logged``)."""
        log = (_log(f"p-{event_id}", event_id, at),) if logged else ()
        await store.commit(
            Change(f"p-{event_id}", None, None, at, inbox=_inbox(event_id, "b", at=at), transitions=log)
        )

    async def test_purge_forgets_inbox_entries_before_the_cutoff_but_waiting_facts(
        self, store: ContractStore
    ) -> None:
        purging = _purging(store)
        for n, seconds in enumerate((0, 1, 10)):
            await self.processed(store, f"in-{n}", T0 + timedelta(seconds=seconds))
        await store.commit(_deferral(_fact("w1", "b9")))
        purged = await purging.purge(PurgeCutoffs(processed_before=T0 + timedelta(seconds=5)))
        assert purged == Purged(inbox=2)
        assert [await store.is_processed(e) for e in ("in-0", "in-1", "in-2", "w1")] == [
            False,
            False,
            True,
            True,
        ]
        assert await store.count_waiting() == 1
        # Forgotten, an event id is new again: committing it is no duplicate.
        await self.processed(store, "in-0", T0 + timedelta(seconds=20))
        assert await store.is_processed("in-0")

    async def test_purge_takes_the_oldest_first_up_to_the_limit(self, store: ContractStore) -> None:
        purging = _purging(store)
        for n in range(4):
            await self.processed(store, f"in-{n}", T0 + timedelta(seconds=n), logged=True)
        cutoffs = PurgeCutoffs(processed_before=T0 + timedelta(days=1), logged_before=T0 + timedelta(days=1))
        assert await purging.purge(cutoffs, limit=2) == Purged(inbox=2, transitions=2)
        assert [await store.is_processed(f"in-{n}") for n in range(4)] == [False, False, True, True]
        assert await purging.purge(cutoffs, limit=2) == Purged(inbox=2, transitions=2)
        assert await purging.purge(cutoffs, limit=2) == Purged()
        for bad in (0, 1.5, True):
            with pytest.raises(ValueError, match="limit"):
                await purging.purge(cutoffs, limit=bad)  # type: ignore[arg-type]

    async def test_an_event_emitted_again_by_the_same_inbound_event_is_a_duplicate(
        self, store: ContractStore
    ) -> None:
        """The inbox forgot an inbound event (purged) while a message it emitted is still in
        the outbox, unpublished: handled again, the same event emits the same id (emitted ids
        derive from the inbound one), and the store answers a duplicate, writing nothing. A
        message of another inbound event under a taken id is refused as a store error."""
        purging = _purging(store)

        def caused(event_id: str, cause: str) -> OutboxMessage:
            value = {
                "event_id": event_id,
                "event_type": "contract.topic",
                "metadata": {"causation_id": cause},
            }
            return OutboxMessage(event_id, "contract.topic", "d1", value)

        state = make_state("d1")
        await store.commit(Change("d1", None, state, T0, (caused("out-1", "in-1"),), _inbox("in-1", "d1")))
        assert await purging.purge(PurgeCutoffs(processed_before=T0 + timedelta(days=1))) == Purged(inbox=1)
        later = T0 + timedelta(days=2)
        again = Change("d1", 1, attrs.evolve(state, version=2), later, (caused("out-1", "in-1"),))
        with pytest.raises(DuplicateEventError):
            await store.commit(attrs.evolve(again, inbox=_inbox("in-1", "d1", at=later)))
        with pytest.raises(StoreError) as info:
            await store.commit(
                attrs.evolve(again, outbox=(caused("out-1", "in-2"),), inbox=_inbox("in-2", "d1"))
            )
        assert not isinstance(info.value, DuplicateEventError)
        assert (await store.load("d1")).version == 1  # type: ignore[union-attr]
        assert not await store.is_processed("in-1")
        assert not await store.is_processed("in-2")
        assert await store.pending_count() == 1

    async def test_purge_forgets_log_rows_before_the_cutoff_only(self, store: ContractStore) -> None:
        purging = _purging(store)
        await self.processed(store, "old", T0, logged=True)
        await self.processed(store, "new", T0 + timedelta(hours=1), logged=True)
        assert await purging.purge(PurgeCutoffs(logged_before=T0 + timedelta(minutes=1))) == Purged(
            transitions=1
        )
        assert await purging.purge(PurgeCutoffs(logged_before=T0 + timedelta(minutes=1))) == Purged()
        # The inbox was not asked: both entries stay.
        assert await store.is_processed("old")
        assert await store.is_processed("new")

    async def test_purge_without_cutoffs_keeps_everything(self, store: ContractStore) -> None:
        purging = _purging(store)
        await self.processed(store, "e1", T0, logged=True)
        await self.enqueue(store, message("m1", "k"))
        await store.mark_published([r.id for r in await store.claim(T0)], T0)
        assert await purging.purge(PurgeCutoffs()) == Purged()
        assert await store.is_processed("e1")
        assert await purging.purge(PurgeCutoffs(logged_before=T0 + timedelta(days=1))) == Purged(
            transitions=1
        )
