"""The results store contract: one test suite every results store must pass, unchanged.

Subclass :class:`ResultsStoreContract` in a test module (name the subclass ``Test...``) and
override the ``store`` fixture with a factory for a fresh, empty store of your backend::

    import pytest
    from pipeline_state.profiles.huleedu.results import InMemoryResultsStore
    from pipeline_state.profiles.huleedu.testing.results_contract import ResultsStoreContract

    class TestInMemoryResultsStore(ResultsStoreContract):
        @pytest.fixture
        async def store(self):
            return InMemoryResultsStore()

The tests pin what :class:`~pipeline_state.profiles.huleedu.results.ports.ResultsStore` documents: read models
round-trip with their version, compare-and-set on the version (checked even when there is
nothing to write), inbox deduplication and per-type purging, all-or-nothing commits, class
deltas added up into class summaries, listings by teacher and class, and the outbox rules a
relay relies on. Needs ``pytest`` (with ``pytest-asyncio`` in auto mode).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

import attrs
import pytest

from pipeline_state.errors import ConcurrencyConflictError, DuplicateEventError
from pipeline_state.ports import InboxEntry, Outbox, OutboxMessage, OutboxRow
from pipeline_state.profiles.huleedu.results.model import (
    BatchResults,
    ClassDelta,
    ClassResults,
    Owner,
    PhaseDispatch,
    PhaseOutcome,
    PhaseResultView,
    RunCompletion,
)
from pipeline_state.profiles.huleedu.results.ports import ClassPageStore, ResultsChange, ResultsStore

__all__ = ["T0", "ContractResultsStore", "ResultsStoreContract", "sample_batch"]

T0 = datetime(2025, 1, 1, tzinfo=UTC)
"""The instant the contract's values and changes are stamped with."""

COMPLETED = "huleedu.batch.pipeline.completed.v1"
OUTCOME = "huleedu.els.batch.phase.outcome.v1"


class ContractResultsStore(ResultsStore, Outbox, Protocol):
    """What the contract drives: a results store that is also its outbox."""


def sample_batch(
    batch_id: str,
    *,
    version: int = 1,
    user_id: str | None = "teacher-1",
    class_id: str | None = "class-1",
    completed: bool = True,
    in_progress: bool = False,
) -> BatchResults:
    """A read model with every kind of fact: an owner (unless ``user_id`` is ``None``), a
    completed ``cj_assessment`` run (2 essays succeeded, 1 failed) and, when
    ``in_progress``, the engine's dispatch of a phase of a newer run and its outcome."""
    owner = None if user_id is None else Owner(user_id, class_id, 3, T0, f"{batch_id}-registered")
    run = RunCompletion(
        run_id=f"{batch_id}-run-1",
        correlation_id=f"{batch_id}-corr-1",
        pipeline_name="cj_assessment",
        final_status="completed_with_failures",
        completed_phases=("spellcheck", "cj_assessment"),
        skipped_phases=(),
        processing_duration_seconds=12.5,
        successful_essays=2,
        failed_essays=1,
        phase_results=(
            PhaseResultView("spellcheck", "completed_with_partial_success", 2, 1, 4.0),
            PhaseResultView("cj_assessment", "completed_successfully", 2, 0, 8.5),
        ),
        completed_at=T0 + timedelta(seconds=20),
        event_id=f"{batch_id}-completed-1",
    )
    outcome = PhaseOutcome(
        correlation_id=f"{batch_id}-corr-2",
        phase="nlp",
        status="completed_successfully",
        successful=2,
        failed=0,
        observed_at=T0 + timedelta(seconds=30),
        event_id=f"{batch_id}-outcome-2",
    )
    dispatch = PhaseDispatch(
        correlation_id=f"{batch_id}-corr-2",
        phase="nlp",
        items=3,
        observed_at=T0 + timedelta(seconds=25),
        event_id=f"{batch_id}-dispatch-2",
    )
    return BatchResults(
        batch_id=batch_id,
        owner=owner,
        completions=(run,) if completed else (),
        outcomes=(outcome,) if in_progress else (),
        dispatches=(dispatch,) if in_progress else (),
        announced=(run.run_id,) if completed and owner is not None else (),
        version=version,
        updated_at=T0 + timedelta(seconds=version),
    )


def _inbox(event_id: str, batch_id: str, topic: str = COMPLETED, at: datetime = T0) -> InboxEntry:
    return InboxEntry(event_id, topic, batch_id, "applied", at)


def _message(event_id: str, key: str | None, topic: str = "contract.results") -> OutboxMessage:
    value = {"event_id": event_id, "event_type": topic, "data": {"n": 1, "nested": [1, "two", None]}}
    return OutboxMessage(event_id, topic, key, value)


def _delta(batch: BatchResults, sign: int = 1) -> ClassDelta:
    assert batch.class_id is not None
    return ClassDelta(
        batch.class_id,
        batches=sign,
        by_status=((batch.status, sign),),
        essays_succeeded=sign * batch.essays_succeeded,
        essays_failed=sign * batch.essays_failed,
    )


def _ids(rows: Sequence[OutboxRow]) -> list[str]:
    return [r.message.event_id for r in rows]


class ResultsStoreContract:
    """The contract tests; subclass it and override the ``store`` fixture."""

    @pytest.fixture
    async def store(self) -> ContractResultsStore:
        """A fresh, empty store (a subclass may ``yield`` it instead, to clean up after)."""
        raise NotImplementedError("override the store fixture with a factory for your backend")

    # -- helpers ----------------------------------------------------------------------------
    @staticmethod
    async def insert(
        store: ContractResultsStore, batch: BatchResults, *, event_id: str | None = None
    ) -> None:
        """Commit ``batch`` as a new read model with its class delta."""
        deltas = () if batch.class_id is None else (_delta(batch),)
        inbox = None if event_id is None else _inbox(event_id, batch.batch_id)
        await store.commit(ResultsChange(batch.batch_id, None, batch, T0, inbox, (), deltas))

    @staticmethod
    async def enqueue(store: ContractResultsStore, *messages: OutboxMessage, at: datetime = T0) -> None:
        """Commit ``messages`` in a unit of work that writes no read model."""
        batch_id = f"outbox-{messages[0].event_id}"
        await store.commit(ResultsChange(batch_id, None, None, at, outbox=messages))

    # -- read models and compare-and-set -------------------------------------------------
    async def test_load_unknown_batch_is_none(self, store: ContractResultsStore) -> None:
        assert await store.load("nope") is None

    async def test_insert_then_load_round_trips(self, store: ContractResultsStore) -> None:
        batch = sample_batch("b1", in_progress=True)
        await self.insert(store, batch)
        loaded = await store.load("b1")
        assert loaded == batch
        assert loaded is not None
        assert (loaded.version, loaded.updated_at) == (1, T0 + timedelta(seconds=1))
        assert loaded.completions == batch.completions
        assert loaded.outcomes == batch.outcomes
        assert loaded.dispatches == batch.dispatches
        assert loaded.status == "processing"

    async def test_guest_batch_without_owner_round_trips(self, store: ContractResultsStore) -> None:
        batch = sample_batch("b1", user_id=None, completed=True)
        await self.insert(store, batch)
        assert await store.load("b1") == batch

    async def test_insert_of_existing_batch_conflicts(self, store: ContractResultsStore) -> None:
        await self.insert(store, sample_batch("b1"))
        with pytest.raises(ConcurrencyConflictError):
            await self.insert(store, sample_batch("b1", class_id="other"))
        loaded = await store.load("b1")
        assert loaded is not None
        assert loaded.class_id == "class-1"

    async def test_update_on_read_version(self, store: ContractResultsStore) -> None:
        await self.insert(store, sample_batch("b1", completed=False))
        newer = sample_batch("b1", version=2)
        await store.commit(ResultsChange("b1", 1, newer, T0))
        loaded = await store.load("b1")
        assert loaded == newer
        assert loaded is not None
        assert loaded.version == 2

    async def test_stale_version_conflicts_and_writes_nothing(self, store: ContractResultsStore) -> None:
        first = sample_batch("b1", completed=False)
        await self.insert(store, first)
        await store.commit(ResultsChange("b1", 1, sample_batch("b1", version=2, completed=False), T0))
        stale = ResultsChange(
            "b1",
            1,
            sample_batch("b1", version=2),
            T0,
            _inbox("ev-stale", "b1"),
            (_message("m-stale", "b1"),),
            (ClassDelta("class-1", essays_succeeded=5),),
        )
        with pytest.raises(ConcurrencyConflictError):
            await store.commit(stale)
        loaded = await store.load("b1")
        assert loaded is not None
        assert (loaded.version, loaded.completions) == (2, ())
        assert await store.inbox_entry("ev-stale") is None
        assert await store.pending_count() == 0
        summary = await store.class_results("class-1")
        assert summary is not None
        assert summary.essays_succeeded == 0

    async def test_version_must_grow(self, store: ContractResultsStore) -> None:
        await self.insert(store, sample_batch("b1"))
        with pytest.raises(ConcurrencyConflictError):
            await store.commit(ResultsChange("b1", 1, sample_batch("b1", version=1, class_id="x"), T0))
        loaded = await store.load("b1")
        assert loaded is not None
        assert loaded.class_id == "class-1"

    async def test_version_checked_when_nothing_to_write(self, store: ContractResultsStore) -> None:
        await self.insert(store, sample_batch("b1"))
        with pytest.raises(ConcurrencyConflictError):
            await store.commit(ResultsChange("b1", 7, None, T0, _inbox("ev-1", "b1")))
        assert await store.inbox_entry("ev-1") is None
        await store.commit(ResultsChange("b1", 1, None, T0, _inbox("ev-1", "b1")))
        assert await store.inbox_entry("ev-1") == _inbox("ev-1", "b1")

    async def test_absence_checked_when_nothing_to_write(self, store: ContractResultsStore) -> None:
        await self.insert(store, sample_batch("b1"))
        with pytest.raises(ConcurrencyConflictError):
            await store.commit(ResultsChange("b1", None, None, T0, _inbox("ev-1", "b1")))
        assert await store.inbox_entry("ev-1") is None

    # -- inbox ----------------------------------------------------------------------------
    async def test_inbox_entry_is_recorded(self, store: ContractResultsStore) -> None:
        await self.insert(store, sample_batch("b1"), event_id="ev-1")
        assert await store.inbox_entry("ev-1") == _inbox("ev-1", "b1")
        assert await store.inbox_entry("ev-2") is None

    async def test_duplicate_event_is_rejected_and_writes_nothing(self, store: ContractResultsStore) -> None:
        await self.insert(store, sample_batch("b1"), event_id="ev-1")
        again = ResultsChange(
            "b2",
            None,
            sample_batch("b2"),
            T0,
            _inbox("ev-1", "b2"),
            (_message("m1", "b2"),),
            (_delta(sample_batch("b2")),),
        )
        with pytest.raises(DuplicateEventError):
            await store.commit(again)
        assert await store.load("b2") is None
        assert await store.pending_count() == 0
        summary = await store.class_results("class-1")
        assert summary is not None
        assert summary.batch_count == 1

    async def test_purge_removes_expired_entries_of_each_type(self, store: ContractResultsStore) -> None:
        entries = [
            _inbox("c-old", "b1", COMPLETED, T0),
            _inbox("c-new", "b1", COMPLETED, T0 + timedelta(hours=10)),
            _inbox("o-old", "b1", OUTCOME, T0),
            _inbox("x-old", "b1", "other.topic", T0),
        ]
        await self.insert(store, sample_batch("b1"))
        for entry in entries:
            await store.commit(ResultsChange("b1", 1, None, entry.processed_at, entry))
        purged = await store.purge_inbox(
            {COMPLETED: T0 + timedelta(hours=5), OUTCOME: T0, "unused.topic": T0 + timedelta(days=9)}
        )
        assert purged == 1
        assert await store.inbox_entry("c-old") is None
        for kept in ("c-new", "o-old", "x-old"):
            assert await store.inbox_entry(kept) is not None, kept
        # A purged id can be processed again.
        await store.commit(ResultsChange("b1", 1, None, T0, _inbox("c-old", "b1")))
        assert await store.purge_inbox({OUTCOME: T0 + timedelta(seconds=1)}) == 1
        assert await store.inbox_entry("o-old") is None

    # -- class summaries ------------------------------------------------------------------
    async def test_class_deltas_add_up(self, store: ContractResultsStore) -> None:
        assert await store.class_results("class-1") is None
        await self.insert(store, sample_batch("b1"))
        await self.insert(store, sample_batch("b2", completed=False))
        await self.insert(store, sample_batch("b3", class_id="class-2"))
        summary = await store.class_results("class-1")
        assert summary == ClassResults(
            "class-1",
            batch_count=2,
            by_status=(("completed_with_failures", 1), ("registered", 1)),
            essays_succeeded=2,
            essays_failed=1,
        )
        assert summary.batches_by_status == {"completed_with_failures": 1, "registered": 1}
        other = await store.class_results("class-2")
        assert other is not None
        assert other.batch_count == 1

    async def test_batch_moving_between_statuses_and_classes(self, store: ContractResultsStore) -> None:
        before = sample_batch("b1", completed=False)
        await self.insert(store, before)
        after = sample_batch("b1", version=2, class_id="class-2")
        moves = (_delta(before, -1), _delta(after))
        await store.commit(ResultsChange("b1", 1, after, T0, class_deltas=moves))
        assert await store.class_results("class-1") is None
        assert await store.class_results("class-2") == ClassResults(
            "class-2", 1, (("completed_with_failures", 1),), 2, 1
        )

    # -- listings -------------------------------------------------------------------------
    async def test_list_batches_by_teacher_and_class_in_id_order(self, store: ContractResultsStore) -> None:
        await self.insert(store, sample_batch("c", user_id="t1"))
        await self.insert(store, sample_batch("a", user_id="t1", class_id="class-2"))
        await self.insert(store, sample_batch("b", user_id="t2"))
        await self.insert(store, sample_batch("d", user_id=None))
        assert [b.batch_id for b in await store.list_batches()] == ["a", "b", "c", "d"]
        assert [b.batch_id for b in await store.list_batches(user_id="t1")] == ["a", "c"]
        assert [b.batch_id for b in await store.list_batches(class_id="class-1")] == ["b", "c"]
        both = await store.list_batches(user_id="t1", class_id="class-1")
        assert [b.batch_id for b in both] == ["c"]
        page = await store.list_batches(limit=2, offset=1)
        assert [b.batch_id for b in page] == ["b", "c"]
        assert await store.list_batches(user_id="nobody") == []
        listed = await store.list_batches(user_id="t2")
        assert listed == [sample_batch("b", user_id="t2")]

    async def test_class_page_is_the_summary_and_the_page_read_together(
        self, store: ContractResultsStore
    ) -> None:
        """A store with the optional :class:`ClassPageStore` read answers the same as its two
        reads on a quiet store (the race it closes: ``tests/http/test_http_results_race.py``)."""
        if not isinstance(store, ClassPageStore):
            pytest.skip("the store reads a class's summary and page apart (no class_page)")
        assert await store.class_page("class-1") is None
        for batch_id in ("c", "a", "b"):
            await self.insert(store, sample_batch(batch_id, completed=batch_id != "b"))
        await self.insert(store, sample_batch("d", class_id="class-2"))
        summary = await store.class_results("class-1")
        assert summary is not None
        assert await store.class_page("class-1") == (summary, await store.list_batches(class_id="class-1"))
        page = await store.class_page("class-1", limit=2, offset=1)
        assert page is not None
        assert (page[0], [b.batch_id for b in page[1]]) == (summary, ["b", "c"])
        assert await store.class_page("class-1", offset=10) == (summary, [])

    # -- outbox ---------------------------------------------------------------------------
    async def test_outbox_rows_commit_with_the_read_model(self, store: ContractResultsStore) -> None:
        batch = sample_batch("b1")
        sent = (_message("m1", "b1", "topic.a"), _message("m2", "teacher-1", "topic.b"))
        at = T0 + timedelta(seconds=3)
        await store.commit(ResultsChange("b1", None, batch, at, _inbox("ev", "b1"), sent))
        rows = await store.claim(at)
        assert [r.message for r in rows] == list(sent)
        assert all(r.created_at == at and r.attempts == 0 and not r.parked for r in rows)
        assert rows[0].id < rows[1].id

    async def test_claim_keeps_order_per_key_and_leases(self, store: ContractResultsStore) -> None:
        await self.enqueue(store, _message("a1", "a"), _message("b1", "b"))
        await self.enqueue(store, _message("a2", "a"), _message("n1", None))
        await self.enqueue(store, _message("n2", None), _message("b2", "b"))
        first = await store.claim(T0)
        assert _ids(first) == ["a1", "b1", "n1"]
        assert await store.claim(T0) == []  # leased, and they hold their keys back
        await store.mark_published([r.id for r in first], T0)
        assert _ids(await store.claim(T0)) == ["a2", "n2", "b2"]

    async def test_a_lease_ends(self, store: ContractResultsStore) -> None:
        """A row claimed by a relay that never marked it (it died) is claimed again once the
        lease has passed (a day here: longer than any store's lease in these tests)."""
        await self.enqueue(store, _message("a1", "a"))
        assert _ids(await store.claim(T0)) == ["a1"]
        assert await store.claim(T0) == []
        assert _ids(await store.claim(T0 + timedelta(days=1))) == ["a1"]

    async def test_failed_row_backs_off_then_parks(self, store: ContractResultsStore) -> None:
        await self.enqueue(store, _message("a1", "a"))
        (a1,) = await store.claim(T0)
        await store.mark_failed(a1.id, "boom", T0, retry_at=T0 + timedelta(seconds=10), park=False)
        await self.enqueue(store, _message("a2", "a"), _message("b1", "b"))
        assert _ids(await store.claim(T0 + timedelta(seconds=9))) == ["b1"]
        (again,) = [r for r in await store.claim(T0 + timedelta(seconds=10)) if r.id == a1.id]
        assert (again.attempts, again.last_error, again.message) == (1, "boom", a1.message)
        await store.mark_failed(a1.id, "poison", T0, retry_at=T0, park=True)
        assert [r.message.event_id for r in await store.parked()] == ["a1"]
        assert "a2" in _ids(await store.claim(T0 + timedelta(days=1)))
        assert await store.pending_count() == 2

    async def test_published_rows_never_come_back(self, store: ContractResultsStore) -> None:
        await self.enqueue(store, _message("m1", "k"))
        rows = await store.claim(T0)
        await store.mark_published([r.id for r in rows], T0)
        await store.mark_published([r.id for r in rows], T0)  # idempotent
        assert await store.claim(T0 + timedelta(days=1)) == []
        assert await store.pending_count() == 0

    async def test_sample_batch_is_consistent(self) -> None:
        """The helper's read model means what the tests above assume."""
        batch = sample_batch("b1", in_progress=True)
        assert batch.status == "processing"
        # Without the newer run (its dispatch and outcome), the completed run shows; the
        # dispatch alone is a run in progress.
        assert attrs.evolve(batch, outcomes=(), dispatches=()).status == "completed_with_failures"
        assert attrs.evolve(batch, outcomes=()).status == "processing"
        assert sample_batch("b1", completed=False).status == "registered"
