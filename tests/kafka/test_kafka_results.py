"""``serve --consumers results``: the results projection beside the orchestrator, through a
real broker; and the parts of the results consumer that need no broker (store choice,
inbox purge, settings)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest
from kafka_harness import fast_settings, running, wait_status, wait_until
from pipeline_state_kafka import ProducerLike, dlq_topic
from pipeline_state_kafka.testing import Collected, Collector, LocalBroker, send_envelopes
from pipeline_state_service import (
    MEMORY_URL,
    RESULTS_CONSUMER,
    OpenedResultsStore,
    ResultsConsumer,
    ServeContext,
    ServeSettings,
    UnknownConsumerError,
    open_results_consumer,
    open_results_store,
    register_results_store,
    resolve_consumer,
    results_factory,
)

from pipeline_state import BatchStatus, InMemoryStore, ManualClock, PipelineService
from pipeline_state._cli import build_parser
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.results import CONSUMED_TOPICS, InMemoryResultsStore
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

pytestmark = pytest.mark.kafka

READY = Topic.RESULTS_READY.value
NOTIFY = Topic.TEACHER_NOTIFICATION.value
COMPLETED = Topic.PIPELINE_COMPLETED.value
REGISTERED = Topic.ESSAYS_REGISTERED.value


def _results_notes(out: Collector) -> list[Collected]:
    return [r for r in out.on(NOTIFY) if r.data.get("notification_type") == "batch_results_ready"]


def _serve_settings(bootstrap: str, prefix: str) -> ServeSettings:
    """Settings as ``serve --store memory:// --consumers results`` reads them, with the
    quick group joins and fetches of the test harness."""
    flags = ["--store", MEMORY_URL, "--group-id", f"{prefix}group", "--consumers", RESULTS_CONSUMER]
    args = build_parser().parse_args(["serve", "--kafka", bootstrap, *flags])
    settings = ServeSettings.from_args(args, environ={"PIPELINE_STATE_TOPIC_PREFIX": prefix})
    assert settings.consumers == ("results",)
    fast = fast_settings(bootstrap, prefix)
    return attrs.evolve(
        settings,
        consumer=fast.consumer,
        summary="off",
        sweep_seconds=0,
        relay_idle_seconds=0.2,
        shutdown_seconds=5.0,
    )


async def test_kafka_results_consumer_announces_every_run_once_and_keeps_the_read_model(
    broker: LocalBroker, prefix: str, producer: ProducerLike
) -> None:
    env = HuleEduEnvelopes()
    guest, regular = f"g-{uuid.uuid4().hex[:6]}", f"c-{uuid.uuid4().hex[:6]}"
    g_ids, c_ids = env.item_ids(guest, 3), env.item_ids(regular, 3)
    c1, c2, c3 = (str(uuid.uuid4()) for _ in range(3))

    async def send(*deliveries: tuple[str, dict[str, Any]]) -> None:
        await send_envelopes(producer, deliveries, topic_prefix=prefix)

    topics = [READY, NOTIFY, COMPLETED, dlq_topic(f"{prefix}{COMPLETED}").removeprefix(prefix)]
    async with (
        running(_serve_settings(broker.bootstrap, prefix)) as runner,
        Collector(broker.bootstrap, topics, topic_prefix=prefix) as out,
    ):
        results = runner.plugins["results"].state
        assert isinstance(results, ResultsConsumer)
        assert isinstance(results.store, InMemoryResultsStore)
        queries = results.queries

        # Two batches made ready: a guest batch, and a regular one that goes through matching.
        await send(
            env.register(guest, owner="teacher-a", items=3),
            env.register(regular, owner="teacher-b", items=3, group_id="class-x"),
        )
        await wait_status(runner, guest, BatchStatus.AWAITING_CONTENT_VALIDATION)
        await wait_status(runner, regular, BatchStatus.AWAITING_CONTENT_VALIDATION)
        await send(env.provisioned(guest, g_ids), env.provisioned(regular, c_ids))
        await wait_status(runner, regular, BatchStatus.AWAITING_GROUP_VALIDATION)
        await send(env.group_confirmed(regular, "class-x", c_ids))
        await wait_status(runner, regular, BatchStatus.GROUP_VALIDATION_COMPLETED)
        await send(env.items_ready(regular, c_ids))
        await wait_status(runner, regular, BatchStatus.READY_FOR_PIPELINE_EXECUTION)
        await wait_status(runner, guest, BatchStatus.READY_FOR_PIPELINE_EXECUTION)

        # Guest: cj_assessment with one essay failing. Regular: nlp whose spellcheck fails.
        await send(
            env.request(guest, "cj_assessment", requested_by="teacher-a", correlation_id=c1),
            env.request(regular, "nlp", requested_by="teacher-b", correlation_id=c2),
        )
        await wait_status(runner, guest, BatchStatus.PROCESSING_PIPELINES)
        await wait_status(runner, regular, BatchStatus.PROCESSING_PIPELINES)
        await send(
            env.outcome(guest, "spellcheck", c1, processed=g_ids),
            env.outcome(guest, "cj_assessment", c1, processed=g_ids[:2], failed=g_ids[2:]),
            env.outcome(regular, "spellcheck", c2, failed=c_ids),
        )
        await out.wait_for(lambda c: len(c.on(COMPLETED)) == 2, what="two completions")
        await wait_status(runner, guest, BatchStatus.READY_FOR_PIPELINE_EXECUTION)
        # Guest again: nlp, spellcheck pruned.
        await send(env.request(guest, "nlp", requested_by="teacher-a", correlation_id=c3))
        await wait_status(runner, guest, BatchStatus.PROCESSING_PIPELINES)
        await send(env.outcome(guest, "nlp", c3, processed=g_ids))
        await out.wait_for(
            lambda c: len(c.on(READY)) >= 3 and len(_results_notes(c)) >= 3,
            within=20,
            what="three results announcements",
        )

        # A redelivered completion (same event id) and a broken one on the completion topic.
        first = out.on(COMPLETED)[0]
        assert first.raw is not None
        assert first.key is not None
        await (await producer.send(f"{prefix}{COMPLETED}", first.raw, first.key.encode()))
        await (await producer.send(f"{prefix}{COMPLETED}", b"{not json", guest.encode()))
        dead = topics[-1]
        await out.wait_for(lambda c: len(c.on(dead)) == 1, what="the dead letter")
        await wait_until(lambda: runner.stats.duplicates >= 1, what="the redelivery to be seen")
        await asyncio.sleep(0.5)  # give a wrong second announcement time to show up

        runs = [r for r in out.unique(COMPLETED) if r.value is not None]
        completions = {r.data["correlation_id"]: r.data for r in runs}
        assert len(runs) == len(completions) == 3
        # BatchResultsReadyV1: exactly once per run, with that run's figures.
        ready = out.on(READY)
        assert len(ready) == len({r.event_id for r in ready}) == 3
        for record in ready:
            run = completions[record.envelope["correlation_id"]]
            assert record.key == run["batch_id"]
            assert record.data["overall_status"] == run["final_status"]
            assert record.data["completed_essays"] == run["successful_essay_count"]
            assert record.data["total_essays"] == run["successful_essay_count"] + run["failed_essay_count"]
        assert sorted(r.data["overall_status"] for r in ready) == [
            "completed_successfully",
            "completed_with_failures",
            "failed_critically",
        ]
        # The teacher notification: once per run, to the batch's owner, high priority.
        notes = _results_notes(out)
        assert len(notes) == len({r.event_id for r in notes}) == 3
        assert sorted(n.data["payload"]["run_id"] for n in notes) == sorted(
            run["run_id"] for run in completions.values()
        )
        for note in notes:
            owner = "teacher-a" if note.data["batch_id"] == guest else "teacher-b"
            assert (note.key, note.data["teacher_id"]) == (owner, owner)
            assert (note.data["category"], note.data["priority"]) == ("processing_results", "high")
        (letter,) = out.on(dead)
        assert letter.raw == b"{not json"
        assert letter.headers["dlq_consumer_group"] == f"{prefix}group.results"
        assert letter.headers["dlq_error_type"] == "InvalidMessageError"

        # The read model, through the queries.
        g = await queries.batch(guest)
        assert g is not None
        assert (g.status, g.user_id, g.class_id) == ("completed_successfully", "teacher-a", None)
        assert (g.essays_succeeded, g.essays_failed) == (3, 0)
        assert [r.pipeline_name for r in g.completions] == ["cj_assessment", "nlp"]
        assert [(p.name, p.status, p.successful, p.failed) for p in g.phases] == [
            ("spellcheck", "completed_successfully", 3, 0),
            ("cj_assessment", "completed_with_partial_success", 2, 1),
            ("nlp", "completed_successfully", 3, 0),
        ]
        assert all(p.duration_seconds is not None and p.duration_seconds >= 0 for p in g.phases)
        c = await queries.batch(regular)
        assert c is not None
        assert (c.status, c.user_id, c.class_id) == ("failed_critically", "teacher-b", "class-x")
        assert (c.essays_succeeded, c.essays_failed) == (0, 3)
        assert [(p.name, p.status) for p in c.phases] == [
            ("spellcheck", "failed"),
            ("nlp", "skipped_due_to_dependency_failure"),
        ]
        summary = await queries.class_json("class-x")
        assert summary is not None
        assert (summary["batch_count"], summary["batches_by_status"]) == (1, {"failed_critically": 1})
        assert (summary["essays_succeeded"], summary["essays_failed"]) == (0, 3)
        assert [b["batch_id"] for b in summary["batches"]] == [regular]
        assert await results.store.pending_count() == 0

        # The results store goes down: the record is retried, not committed and not lost.
        later = f"g-{uuid.uuid4().hex[:6]}"
        retries = runner.stats.retries
        results.store.available = False
        try:
            await send(env.register(later, owner="teacher-c", items=2))
            await wait_until(lambda: runner.stats.retries > retries, what="a retry")
            assert await runner.opened.store.load(later) is not None  # type: ignore[union-attr]
        finally:
            results.store.available = True

        async def registered() -> bool:
            batch = await queries.batch(later)
            return batch is not None and batch.user_id == "teacher-c"

        await wait_until(registered, within=15, what="the registration after the outage")
        assert runner.stats.dead_lettered == 1


# -- without a broker ------------------------------------------------------------------------


def _context(settings: ServeSettings | None = None, url: str = MEMORY_URL) -> ServeContext:
    store = InMemoryStore()
    return ServeContext(url, store, store, PipelineService(store), "", settings)


def test_kafka_results_is_a_builtin_consumer() -> None:
    assert resolve_consumer("results") is open_results_consumer
    with pytest.raises(UnknownConsumerError, match="results"):
        resolve_consumer("no-such-consumer")


def test_kafka_results_settings_come_from_the_environment() -> None:
    args = build_parser().parse_args(["serve", "--kafka", "h:9092", "--consumers", "results"])
    environ = {
        "PIPELINE_STATE_RESULTS_PURGE_SECONDS": "30",
        "PIPELINE_STATE_RESULTS_COMPLETION_RETENTION_HOURS": "12",
    }
    settings = ServeSettings.from_args(args, environ=environ)
    assert settings.consumers == ("results",)
    assert (settings.results_purge_seconds, settings.results_completion_retention_hours) == (30.0, 12.0)
    defaults = ServeSettings.from_args(args, environ={})
    assert (defaults.results_purge_seconds, defaults.results_completion_retention_hours) == (600.0, 72.0)


async def test_kafka_results_store_follows_the_store_url(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    memory = await open_results_store(MEMORY_URL)
    assert isinstance(memory.store, InMemoryResultsStore)
    assert (memory.durable, memory.fallback) == (False, False)

    import pipeline_state_sql

    # Without the sql extra (the SQL adapter cannot be imported), a SQL URL falls back to
    # memory, loudly.
    with monkeypatch.context() as without_sql:
        without_sql.setitem(sys.modules, "pipeline_state_sql", None)
        with caplog.at_level(logging.WARNING, logger="pipeline_state_kafka.results"):
            sql = await open_results_store("postgresql+asyncpg://app@db/results", schema="s1")
    assert isinstance(sql.store, InMemoryResultsStore)
    assert (sql.url, sql.fallback, sql.durable) == ("postgresql+asyncpg://app@db/results", True, False)
    assert "no SQL results store (" in caplog.text

    # When it exists, it is opened (its ``open_results`` context) with the store options,
    # and closed when the opened store is.
    seen: list[tuple[str, dict[str, Any]]] = []
    closed: list[str] = []

    @contextlib.asynccontextmanager
    async def sql_results(settings: pipeline_state_sql.Settings) -> AsyncIterator[InMemoryResultsStore]:
        seen.append((settings.store, settings.store_options()))
        try:
            yield InMemoryResultsStore()
        finally:
            closed.append(settings.store)

    monkeypatch.setattr(pipeline_state_sql, "open_results", sql_results)
    durable = await open_results_store("sqlite+aiosqlite:///r.db", upgrade=False, schema=None, lease=4.0)
    assert (durable.fallback, durable.durable) == (False, True)
    assert seen == [
        ("sqlite+aiosqlite:///r.db", {"upgrade": False, "schema": None, "lease": 4.0, "synchronous": "FULL"})
    ]
    assert closed == []
    await durable.close()
    assert closed == ["sqlite+aiosqlite:///r.db"]

    # A scheme registered by hand wins.
    mine = InMemoryResultsStore()

    async def custom(url: str, **options: Any) -> OpenedResultsStore:
        return OpenedResultsStore(mine, url=url)

    register_results_store("customdb", custom)
    assert (await open_results_store("customdb://x")).store is mine


async def test_kafka_results_inbox_is_purged_by_retention_from_the_settings() -> None:
    clock = ManualClock()
    settings = ServeSettings(kafka="h:9092", results_completion_retention_hours=1.0)
    factory = results_factory(clock=clock, purge_seconds=0.02)
    plugin = await factory(_context(settings))
    assert set(plugin.topics) == set(CONSUMED_TOPICS)
    assert {Topic.PHASE_OUTCOME.value, COMPLETED, REGISTERED} < set(plugin.topics)
    consumer = plugin.state
    assert isinstance(consumer, ResultsConsumer)
    store = consumer.store
    assert isinstance(store, InMemoryResultsStore)

    env = HuleEduEnvelopes(timestamp=clock.now())
    corr = str(uuid.uuid4())
    registration = env.wrap(
        REGISTERED,
        {
            "entity_id": "b1",
            "expected_essay_count": 1,
            "essay_ids": ["e1"],
            "user_id": "teacher-1",
            "course_code": "ENG5",
        },
    )
    outcome = env.outcome("b1", "spellcheck", corr, processed=["e1"])
    completion = env.wrap(
        COMPLETED,
        {
            "batch_id": "b1",
            "pipeline_name": "nlp",
            "run_id": "r1",
            "completed_phases": ["spellcheck"],
            "skipped_phases": [],
            "final_status": "completed_successfully",
            "processing_duration_seconds": 1.0,
            "successful_essay_count": 1,
            "failed_essay_count": 0,
            "phase_results": {},
            "correlation_id": corr,
            "metadata": {"entity_id": "b1", "entity_type": "batch", "timestamp": clock.now().isoformat()},
        },
    )
    emitted = []
    for topic, value in (registration, outcome, completion):
        handled = await plugin.handler(topic, json.dumps(value).encode())
        assert handled.result == "applied"
        emitted.append(handled.emitted)
    assert emitted == [0, 0, 2]  # the completion is announced: BatchResultsReadyV1 + notification
    assert store.inbox_size() == 3

    stop = asyncio.Event()
    (purge,) = plugin.tasks
    task = asyncio.create_task(purge(stop))
    try:
        clock.advance(timedelta(hours=2).total_seconds())  # past 1 h (completions), not 24 h
        await wait_until(lambda: store.inbox_size() == 2, within=5, what="the completion id purged")
        assert await store.inbox_entry(completion[1]["event_id"]) is None
        assert await store.inbox_entry(outcome[1]["event_id"]) is not None
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=5)
    # The completion's id is forgotten, yet its redelivery is not announced again.
    again = await plugin.handler(COMPLETED, json.dumps(completion[1]).encode())
    assert (again.result, again.emitted) == ("unchanged", 0)


async def test_kafka_results_store_opens_the_real_sql_results_store(tmp_path: Path) -> None:
    from pipeline_state_sql import SqlResultsStore

    opened = await open_results_store(
        f"sqlite+aiosqlite:///{tmp_path / 'results.db'}", upgrade=True, lease=5.0, synchronous="FULL"
    )
    try:
        assert isinstance(opened.store, SqlResultsStore)
        assert (opened.fallback, opened.durable) == (False, True)
    finally:
        await opened.close()


async def test_kafka_serve_http_app_serves_the_results_routes() -> None:
    import httpx
    from pipeline_state_http import HttpSettings
    from pipeline_state_service.web import build_http_app

    from pipeline_state import InMemoryStore, PipelineService

    settings = HttpSettings(api_token="t", internal_token="i", ops_token="o")
    token = {"Authorization": "Bearer t"}
    app = build_http_app(PipelineService(InMemoryStore()), results=InMemoryResultsStore(), settings=settings)
    assert app is not None
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=token) as client:
        assert (await client.get("/v1/results/teachers/teacher-a")).status_code == 200
        assert (await client.get("/v1/results/batches/unknown")).status_code == 404
    bare = build_http_app(PipelineService(InMemoryStore()), settings=settings)
    transport = httpx.ASGITransport(app=bare)
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=token) as client:
        assert (await client.get("/v1/results/teachers/teacher-a")).status_code == 404
