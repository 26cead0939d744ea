"""The results service: one unit of work per event, announcements once per run, the inbox
with retention, superseded completions, the cache hook, races and bad input."""

from __future__ import annotations

from datetime import timedelta

import pytest
from results_events import at, completion, dispatch, outcome, registered, skipped, uid

from pipeline_state import InMemoryRuntime, InvalidMessageError, ManualClock, StoreUnavailableError
from pipeline_state._decide import derive_id
from pipeline_state.errors import ConcurrencyConflictError, UnknownTopicError
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.results import (
    BatchResults,
    InMemoryResultsStore,
    RecordingCacheInvalidator,
    ResultsChange,
    ResultsService,
    RetentionPolicy,
    StoreOwnerLookup,
)
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

READY = Topic.RESULTS_READY.value
NOTIFY = Topic.TEACHER_NOTIFICATION.value


def _by_topic(store: InMemoryResultsStore, topic: str) -> list[dict[str, object]]:
    return [r.message.value for r in store.outbox_rows() if r.message.topic == topic]


async def test_completion_announces_results_ready_and_notifies_the_teacher(
    results: ResultsService, store: InMemoryResultsStore, clock: ManualClock
) -> None:
    await results.handle_message(*registered("b1", user_id="t1", class_id="k1", essays=3))
    phases = {
        "spellcheck": ("completed_successfully", 3, 0, 2.0),
        "nlp": ("completed_with_partial_success", 2, 1, 3.0),
    }
    handled = await results.handle_message(
        *completion(
            "b1", "r1", "corr-1", pipeline="nlp", final_status="completed_with_failures", phases=phases,
            successful=2, failed=1, duration=5.0, when=at(10), event_id="done-1",
        )
    )  # fmt: skip

    assert handled.result == "applied"
    assert handled.announced == ("r1",)
    ready, note = handled.messages
    assert (ready.topic, ready.key, note.topic, note.key) == (READY, "b1", NOTIFY, "t1")
    assert ready.event_id == derive_id("results", "b1", "r1", "ready")
    assert ready.value["data"] == {
        "batch_id": "b1",
        "user_id": "t1",
        "total_essays": 3,
        "completed_essays": 2,
        "phase_results": {
            "spellcheck": {
                "status": "completed_successfully",
                "successful": 3,
                "failed": 0,
                "duration_seconds": 2.0,
            },
            "nlp": {
                "status": "completed_with_partial_success",
                "successful": 2,
                "failed": 1,
                "duration_seconds": 3.0,
            },
        },
        "overall_status": "completed_with_failures",
        "processing_duration_seconds": 5.0,
    }
    data = note.value["data"]
    assert (data["notification_type"], data["category"], data["priority"]) == (
        "batch_results_ready", "processing_results", "high",
    )  # fmt: skip
    assert (data["teacher_id"], data["batch_id"], data["correlation_id"]) == ("t1", "b1", uid("corr-1"))
    assert data["payload"]["run_id"] == "r1"
    assert data["payload"]["superseded"] is False
    for message in handled.messages:
        assert message.value["correlation_id"] == uid("corr-1")
        assert message.value["event_timestamp"] == clock.now().isoformat()
        assert message.value["metadata"] == {"causation_id": uid("done-1")}
    assert [m.value for m in handled.messages] == [r.message.value for r in store.outbox_rows()]

    batch = await store.load("b1")
    assert batch is not None
    assert (batch.status, batch.essays_succeeded, batch.essays_failed, batch.version) == (
        "completed_with_failures", 2, 1, 2,
    )  # fmt: skip
    assert batch.announced == ("r1",)


@pytest.mark.parametrize(
    ("pipeline", "final_status"),
    [
        ("cj_assessment", "completed_successfully"),
        ("nlp", "completed_with_failures"),
        ("ai_feedback", "failed_critically"),
        ("comprehensive", "cancelled"),
    ],
)
async def test_every_pipeline_and_final_status_is_announced_once(
    results: ResultsService, store: InMemoryResultsStore, pipeline: str, final_status: str
) -> None:
    await results.handle_message(*registered("b1"))
    done = completion("b1", "r1", "corr-1", pipeline=pipeline, final_status=final_status, when=at(5))
    first = await results.handle_message(*done)
    assert first.announced == ("r1",)
    assert _by_topic(store, READY)[0]["data"]["overall_status"] == final_status  # type: ignore[index]

    again = await results.handle_message(*done)  # redelivered: same event id
    assert (again.result, again.messages) == ("duplicate", ())
    fresh = completion("b1", "r1", "corr-1", pipeline=pipeline, final_status=final_status, when=at(5))
    repeat = await results.handle_message(*fresh)  # the same completion re-sent with a new id
    assert (repeat.result, repeat.messages) == ("unchanged", ())
    assert len(_by_topic(store, READY)) == len(_by_topic(store, NOTIFY)) == 1


async def test_completion_before_the_owner_is_announced_when_the_owner_arrives(
    results: ResultsService, store: InMemoryResultsStore
) -> None:
    first = await results.handle_message(*completion("b1", "r1", "corr-1", when=at(5)))
    assert (first.result, first.messages) == ("applied", ())
    created = await store.load("b1")
    assert created is not None
    assert (created.status, created.owner) == ("completed_successfully", None)

    handled = await results.handle_message(*registered("b1", user_id="t7", class_id="k1"))
    assert handled.announced == ("r1",)
    assert [m.key for m in handled.messages] == ["b1", "t7"]
    summary = await store.class_results("k1")
    assert summary is not None
    assert (summary.batch_count, summary.batches_by_status) == (1, {"completed_successfully": 1})


async def test_old_completion_after_a_newer_one_does_not_overwrite_it(
    results: ResultsService, store: InMemoryResultsStore
) -> None:
    await results.handle_message(*registered("b1", class_id="k1"))
    await results.handle_message(
        *completion("b1", "r2", "corr-2", pipeline="nlp", successful=3, when=at(100))
    )
    late = await results.handle_message(
        *completion(
            "b1", "r1", "corr-1", final_status="failed_critically", successful=0, failed=3, when=at(50)
        )
    )
    assert late.result == "superseded"
    batch = await store.load("b1")
    assert batch is not None
    assert batch.latest is not None
    assert (batch.latest.run_id, batch.status, batch.essays_succeeded) == ("r2", "completed_successfully", 3)
    assert [r.run_id for r in batch.completions] == ["r1", "r2"]
    # The older run still gets its one announcement, marked as superseded for the reader.
    assert late.announced == ("r1",)
    assert late.messages[1].value["data"]["payload"]["superseded"] is True
    summary = await store.class_results("k1")
    assert summary is not None
    assert (summary.batches_by_status, summary.essays_succeeded, summary.essays_failed) == (
        {"completed_successfully": 1}, 3, 0,
    )  # fmt: skip


async def test_outcomes_update_progress_without_announcing(
    results: ResultsService, store: InMemoryResultsStore, cache: RecordingCacheInvalidator
) -> None:
    await results.handle_message(*registered("b1", user_id="t1", class_id="k1"))
    await results.handle_message(*dispatch("b1", "spellcheck", "corr-1", items=["e0", "e1"]))
    handled = await results.handle_message(
        *outcome("b1", "spellcheck", "corr-1", processed=["e0"], failed=["e1"])
    )
    assert (handled.result, handled.messages) == ("applied", ())
    batch = await store.load("b1")
    assert batch is not None
    assert batch.status == "processing"
    assert [(p.name, p.status, p.successful, p.failed) for p in batch.phases] == [
        ("spellcheck", "completed_with_partial_success", 1, 1)
    ]
    assert cache.calls[-1] == ("results:batch:b1", "results:class:k1", "results:teacher:t1")


# -- idempotency and retention ------------------------------------------------------------------


async def test_inbox_entries_expire_per_event_type(
    results: ResultsService, store: InMemoryResultsStore, clock: ManualClock
) -> None:
    await results.handle_message(*registered("b1", event_id="reg"))
    await results.handle_message(*outcome("b1", "spellcheck", "corr-1", event_id="out"))
    done = completion("b1", "r1", "corr-1", when=at(5), event_id="done")
    await results.handle_message(*done)
    assert store.inbox_size() == 3

    clock.advance(timedelta(hours=24, seconds=1).total_seconds())
    assert await results.purge_inbox() == 1  # the outcome (24 h)
    assert await store.inbox_entry(uid("out")) is None
    assert await store.inbox_entry(uid("done")) is not None
    clock.advance(timedelta(hours=48).total_seconds())
    assert await results.purge_inbox() == 2  # the completion and the registration (72 h)
    assert store.inbox_size() == 0

    # Past retention the id is forgotten, yet the repeat still changes nothing and is not
    # announced again: the read model remembers announced runs.
    late = await results.handle_message(*done)
    assert (late.result, late.messages) == ("unchanged", ())
    assert len(_by_topic(store, READY)) == 1


async def test_retention_is_configurable(store: InMemoryResultsStore, clock: ManualClock) -> None:
    policy = RetentionPolicy().with_retention(Topic.PIPELINE_COMPLETED.value, timedelta(hours=1))
    results = ResultsService(store, clock=clock, retention=policy)
    await results.handle_message(*completion("b1", "r1", "corr-1", event_id="done"))
    clock.advance(3599)
    assert await results.purge_inbox() == 0
    clock.advance(2)
    assert await results.purge_inbox() == 1
    assert RetentionPolicy().retention(Topic.PIPELINE_COMPLETED.value) == timedelta(hours=72)
    with pytest.raises(ValueError, match="positive"):
        RetentionPolicy({"t": timedelta(0)})


# -- the cache hook -----------------------------------------------------------------------------


async def test_cache_is_invalidated_after_changes_only(
    results: ResultsService, cache: RecordingCacheInvalidator
) -> None:
    done = completion("b1", "r1", "corr-1", when=at(5))
    await results.handle_message(*done)
    assert cache.calls == [("results:batch:b1",)]
    await results.handle_message(*done)  # duplicate
    await results.handle_message(*completion("b1", "r1", "corr-1", when=at(5)))  # unchanged
    assert len(cache.calls) == 1
    await results.handle_message(*registered("b1", user_id="t1", class_id="k1"))
    assert cache.calls[-1] == ("results:batch:b1", "results:class:k1", "results:teacher:t1")
    assert "results:class:k1" in cache.keys


class _BrokenCache:
    async def invalidate(self, keys: object) -> None:
        raise ConnectionError("cache down")


async def test_failing_cache_hook_is_reported_and_the_commit_stands(
    store: InMemoryResultsStore, clock: ManualClock
) -> None:
    results = ResultsService(store, clock=clock, cache=_BrokenCache())
    handled = await results.handle_message(*completion("b1", "r1", "corr-1"))
    assert handled.cache_error == "ConnectionError: cache down"
    assert await store.load("b1") is not None


# -- races, bad input, unavailable store --------------------------------------------------------


class _RacingStore(InMemoryResultsStore):
    """A real store whose first ``load`` is overtaken by another writer before it returns."""

    def __init__(self) -> None:
        super().__init__()
        self.races = 1

    async def load(self, batch_id: str) -> BatchResults | None:
        current = await super().load(batch_id)
        if self.races:
            self.races -= 1
            version = 0 if current is None else current.version
            rival = BatchResults(batch_id, version=version + 1)
            await self.commit(ResultsChange(batch_id, None if current is None else version, rival, at(0)))
        return current


async def test_lost_race_is_retried_from_a_fresh_read(clock: ManualClock) -> None:
    store = _RacingStore()
    results = ResultsService(store, clock=clock)
    handled = await results.handle_message(*completion("b1", "r1", "corr-1"))
    assert (handled.result, handled.attempts) == ("applied", 2)
    batch = await store.load("b1")
    assert batch is not None
    assert (batch.version, batch.status) == (2, "completed_successfully")


async def test_race_lost_every_time_raises(clock: ManualClock) -> None:
    store = _RacingStore()
    store.races = 5
    results = ResultsService(store, clock=clock, max_attempts=3)
    with pytest.raises(ConcurrencyConflictError):
        await results.handle_message(*completion("b1", "r1", "corr-1"))


async def test_bad_input_is_refused_and_writes_nothing(
    results: ResultsService, store: InMemoryResultsStore
) -> None:
    with pytest.raises(UnknownTopicError):
        await results.handle_message(*HuleEduEnvelopes().register("b1"))
    with pytest.raises(InvalidMessageError):
        await results.handle_message(Topic.PIPELINE_COMPLETED.value, b"{not json")
    topic, value = completion("b1", "r1", "corr-1")
    del value["data"]["run_id"]
    with pytest.raises(InvalidMessageError) as info:
        await results.handle_message(topic, value)
    assert info.value.field == "data.run_id"
    assert await store.list_batches() == []
    assert store.inbox_size() == 0


async def test_unavailable_store_raises(results: ResultsService, store: InMemoryResultsStore) -> None:
    store.available = False
    with pytest.raises(StoreUnavailableError):
        await results.handle_message(*completion("b1", "r1", "corr-1"))
    store.available = True
    assert await store.load("b1") is None


async def test_owner_comes_from_the_pipeline_store_when_given_a_lookup(
    store: InMemoryResultsStore, clock: ManualClock
) -> None:
    rt = InMemoryRuntime()
    await rt.deliver(*HuleEduEnvelopes().register("b1", owner="t3", group_id="k9"))
    results = ResultsService(store, clock=clock, owners=StoreOwnerLookup(rt.store))
    handled = await results.handle_message(*completion("b1", "r1", "corr-1"))
    assert handled.announced == ("r1",)
    batch = await store.load("b1")
    assert batch is not None
    assert (batch.user_id, batch.class_id) == ("t3", "k9")
    assert await StoreOwnerLookup(rt.store).owner("nope") is None


def test_every_consumed_topic_has_a_default_retention() -> None:
    """An event type without a retention is never purged: every topic the projection
    consumes (the phase commands and pruned-phase notices included) has one."""
    from pipeline_state.profiles.huleedu.results import CONSUMED_TOPICS, DEFAULT_RETENTION

    assert set(DEFAULT_RETENTION) == set(CONSUMED_TOPICS) == set(ResultsService.topics)
    assert DEFAULT_RETENTION[Topic.NLP.value] == timedelta(hours=24)
    assert DEFAULT_RETENTION[Topic.PHASE_SKIPPED.value] == timedelta(hours=24)


async def test_a_skip_for_another_reason_writes_nothing(
    results: ResultsService, store: InMemoryResultsStore
) -> None:
    """A ``PhaseSkippedV1`` that is not ``already_completed`` states nothing the read model
    keeps: ``unchanged``, and no read model is created for it (its event id is remembered)."""
    handled = await results.handle_message(
        *skipped("b9", "nlp", "c1", reason="dependency_failed", event_id="s")
    )
    assert (handled.result, handled.messages) == ("unchanged", ())
    assert await store.load("b9") is None
    assert await store.inbox_entry(uid("s")) is not None
