"""A restart of the results consumer mid-stream, on the in-memory, SQLite and PostgreSQL
results stores. The same events (some redelivered after the restart, as Kafka does for offsets
not committed) must give the same read model, class and teacher views and announcements on
every store.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from results_events import Delivery, at, completion, dispatch, outcome, registered, skipped

from pipeline_state import ManualClock
from pipeline_state.profiles.huleedu.results import (
    InMemoryResultsStore,
    ResultsQueries,
    ResultsService,
    ResultsStore,
)

pytestmark = pytest.mark.timeout(120)

Opener = Callable[[], Awaitable[Any]]


def _stamped(delivery: Delivery, when: datetime, *, completion_too: bool = False) -> Delivery:
    """``delivery`` with its timestamps written as ``when`` (any offset, or naive)."""
    topic, env = delivery
    env = dict(env)
    env["event_timestamp"] = when.isoformat()
    if completion_too:
        data = dict(env["data"])
        data["metadata"] = {**data["metadata"], "timestamp": when.isoformat()}
        env["data"] = data
    return topic, env


IST = timezone(timedelta(hours=5, minutes=30))
PST = timezone(timedelta(hours=-8))


def history() -> list[Delivery]:
    """Three batches of two classes and a guest batch: runs (with the engine's dispatches and
    a pruned phase), a newer run, an older completion delivered late, timestamps with
    microseconds and offsets, a naive timestamp, a lost correlation id, a redelivered event
    id, a run still in progress."""
    first = outcome("a", "spellcheck", "ca1", when=at(5.000001), event_id="o-a1")
    h = [
        registered("a", class_id="k1", user_id="t1", when=at(0)),
        registered("b", class_id="k1", user_id="t2", when=at(0)),
        registered("g", class_id=None, user_id="t1", when=at(0)),
        dispatch("a", "spellcheck", "ca1", items=("e0", "e1", "e2"), when=at(1)),
        first,
        dispatch("a", "cj_assessment", "ca1", items=("e0", "e1", "e2"), when=at(5.5)),
        _stamped(outcome("a", "cj_assessment", "ca1", when=at(0)), (at(7.5)).astimezone(IST)),
        _stamped(completion("a", "ra1", "ca1", successful=3), at(8.25).astimezone(PST), completion_too=True),
        skipped("a", "spellcheck", "ca2", when=at(8.5)),
        dispatch("a", "nlp", "ca2", items=("e0", "e1", "e2"), when=at(8.5)),
        outcome("a", "nlp", "ca2", when=at(9)),
        completion("a", "ra2", "ca2", pipeline="nlp", when=at(12), successful=1, failed=2),
        # the run ra1 delivered again under a new event id, older: superseded
        completion("a", "ra1", "ca1", when=at(8.25), successful=3),
        first,  # the same event id again
        dispatch("b", "spellcheck", "cb1", items=("e0", "e1", "e2"), when=at(1)),
        outcome("b", "spellcheck", "cb1", when=at(3), processed=("e0",), failed=("e1", "e2")),
        _stamped(outcome("b", "cj_assessment", "cb1", when=at(0)), at(4).replace(tzinfo=None)),
        completion(
            "b", "rb1", "cb1", when=at(6), final_status="completed_with_failures", successful=1, failed=2
        ),
        outcome("b", "nlp", "lost-corr", when=at(20)),  # a lost correlation id, after the completion
        dispatch("g", "spellcheck", "cg1", items=("e0", "e1", "e2"), when=at(25)),
        outcome("g", "spellcheck", "cg1", when=at(30), processed=("e0", "e1", "e2")),
    ]
    return h


async def _handle_all(service: ResultsService, deliveries: list[Delivery]) -> list[str]:
    return [(await service.handle_message(*d)).result for d in deliveries]


async def _views(store: ResultsStore) -> dict[str, Any]:
    q = ResultsQueries(store)
    out: dict[str, Any] = {}
    for batch_id in ("a", "b", "g"):
        view = await q.batch_json(batch_id)
        assert view is not None, batch_id
        view.pop("updated_at")
        view.pop("version")
        out[f"batch:{batch_id}"] = view
    out["class:k1"] = await q.class_json("k1")
    for teacher in ("t1", "t2"):
        out[f"teacher:{teacher}"] = await q.teacher_json(teacher)
    return out


async def _announced(store: Any) -> list[tuple[str, str | None, str]]:
    rows = await store.claim(datetime(2100, 1, 1, tzinfo=UTC), limit=1000)
    return sorted((r.message.topic, r.message.key, r.message.event_id) for r in rows)


async def _reference() -> tuple[dict[str, Any], list[tuple[str, str | None, str]]]:
    store = InMemoryResultsStore()
    service = ResultsService(store, clock=ManualClock())
    await _handle_all(service, history())
    return await _views(store), await _announced(store)


@pytest.fixture
async def pg_opener() -> AsyncIterator[Opener]:
    from pipeline_state_sql.results_store import open_results_store

    from tests.http.serving import pg_schema, postgres_url

    url = await asyncio.to_thread(postgres_url)
    async with pg_schema(url, "ps_resz") as schema:

        async def opener() -> Any:
            return await open_results_store(url, schema=schema)

        yield opener


@pytest.fixture
def sqlite_opener(tmp_path: Path) -> Opener:
    async def opener() -> Any:
        from pipeline_state_service.results_stores import open_results_store

        opened = await open_results_store(f"sqlite+aiosqlite:///{tmp_path / 'results.db'}")
        assert opened.durable
        return opened.store

    return opener


async def _restarted_run(opener: Opener, cut: int, replay: int) -> tuple[dict[str, Any], list[Any]]:
    """Handle ``history()[:cut]``, close the store (the process stops), reopen it and handle
    ``history()[cut - replay:]`` (offsets not committed are delivered again)."""
    events = history()
    store = await opener()
    try:
        await _handle_all(ResultsService(store, clock=ManualClock()), events[:cut])
    finally:
        await store.close()
    store = await opener()
    try:
        await _handle_all(ResultsService(store, clock=ManualClock()), events[max(0, cut - replay) :])
        return await _views(store), await _announced(store)
    finally:
        await store.close()


async def test_the_history_ends_with_a_run_in_progress() -> None:
    """Held: the reference the stores are compared with holds what the history says: the
    guest batch's run in progress, the others' latest completed runs."""
    views, _ = await _reference()
    assert views["batch:g"]["status"] == "processing"
    assert [o["phase"] for o in views["batch:g"]["in_progress"]] == ["spellcheck"]
    assert (views["batch:a"]["status"], views["batch:a"]["in_progress"]) == ("completed_successfully", [])
    assert views["batch:a"]["completed_phases"] == ["spellcheck", "cj_assessment", "nlp"]
    assert (views["batch:b"]["status"], views["batch:b"]["in_progress"]) == ("completed_with_failures", [])


@pytest.mark.parametrize(("cut", "replay"), [(5, 3), (9, 4), (13, 13), (18, 6)])
async def test_restart_mid_stream_on_sqlite_agrees_with_memory(
    sqlite_opener: Opener, cut: int, replay: int
) -> None:
    """Held: SQLite, restarted mid-stream with redelivery, gives the in-memory read model."""
    expected_views, expected_announced = await _reference()
    views, announced = await _restarted_run(sqlite_opener, cut, replay)
    assert views == expected_views
    assert announced == expected_announced


@pytest.mark.postgres
@pytest.mark.parametrize(("cut", "replay"), [(6, 6), (12, 5), (17, 9)])
async def test_restart_mid_stream_on_postgres_agrees_with_memory(
    pg_opener: Opener, cut: int, replay: int
) -> None:
    """Held: PostgreSQL, restarted mid-stream with redelivery, gives the in-memory read model."""
    expected_views, expected_announced = await _reference()
    views, announced = await _restarted_run(pg_opener, cut, replay)
    assert views == expected_views
    assert announced == expected_announced
