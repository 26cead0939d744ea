"""Readers and the inbox purge racing the results consumer on SQLite and PostgreSQL.

Two services consume the events of one class (redeliveries included) while a purge loop forgets
the inbox and a reader loop reads the class view. Every class view read must be one moment (its
summary agrees with its page of batches), and the end state must be the in-memory reference.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from results_events import Delivery, at, completion, dispatch, outcome, registered

from pipeline_state import ManualClock
from pipeline_state.profiles.huleedu.results import (
    InMemoryResultsStore,
    ResultsQueries,
    ResultsService,
    RetentionPolicy,
)

pytestmark = pytest.mark.timeout(180)

Opener = Callable[[], Awaitable[Any]]
BATCHES = [f"z{i}" for i in range(6)]


def events() -> list[Delivery]:
    out: list[Delivery] = []
    for n, b in enumerate(BATCHES):
        out.append(registered(b, class_id="kz", user_id="tz", when=at(0), event_id=f"reg-{b}"))
        out.append(dispatch(b, "spellcheck", f"{b}-c1", when=at(0.5 + n), event_id=f"d1-{b}"))
        out.append(outcome(b, "spellcheck", f"{b}-c1", when=at(1 + n), event_id=f"o1-{b}"))
        out.append(
            completion(
                b,
                f"{b}-r1",
                f"{b}-c1",
                when=at(10 + n),
                successful=2,
                failed=n % 2,
                final_status="completed_successfully" if n % 2 == 0 else "completed_with_failures",
                event_id=f"c1-{b}",
            )
        )
        if n % 3 == 0:  # a second run still in progress
            out.append(dispatch(b, "nlp", f"{b}-c2", when=at(29 + n), event_id=f"d2-{b}"))
            out.append(outcome(b, "nlp", f"{b}-c2", when=at(30 + n), event_id=f"o2-{b}"))
    return out


async def _class_view(store: Any) -> dict[str, Any] | None:
    return await ResultsQueries(store).class_json("kz", limit=100)


def _consistent(view: dict[str, Any]) -> None:
    batches = view["batches"]
    assert view["batch_count"] == len(batches), view
    assert dict(Counter(b["status"] for b in batches)) == view["batches_by_status"], view
    assert view["essays_succeeded"] == sum(b["essays_succeeded"] for b in batches), view
    assert view["essays_failed"] == sum(b["essays_failed"] for b in batches), view


async def _reference() -> tuple[dict[str, Any] | None, dict[str, Any]]:
    store = InMemoryResultsStore()
    service = ResultsService(store, clock=ManualClock())
    for e in events():
        await service.handle_message(*e)
    q = ResultsQueries(store)
    batches = {}
    for b in BATCHES:
        view = await q.batch_json(b)
        assert view is not None
        view.pop("updated_at")
        view.pop("version")
        batches[b] = view
    return await _class_view(store), batches


async def _race(opener: Opener) -> None:
    expected_class, expected_batches = await _reference()
    assert expected_class is not None
    _consistent(expected_class)
    assert expected_class["batches_by_status"] == {
        "completed_successfully": 2,
        "completed_with_failures": 2,
        "processing": 2,
    }
    first, second = await opener(), await opener()
    try:
        clock = ManualClock()
        retention = RetentionPolicy({t: timedelta(seconds=1) for t in ResultsService.topics})
        services = [
            ResultsService(first, clock=clock, retention=retention, max_attempts=100),
            ResultsService(second, clock=clock, retention=retention, max_attempts=100),
        ]
        stream = events()
        orders = [stream + stream, random.Random(11).sample(stream, len(stream)) + list(reversed(stream))]
        done = asyncio.Event()
        seen: list[dict[str, Any]] = []

        async def consume(service: ResultsService, order: list[Delivery]) -> None:
            for e in order:
                await service.handle_message(*e)
                clock.advance(0.5)
                await asyncio.sleep(0)

        async def purge() -> None:
            while not done.is_set():
                await services[0].purge_inbox()
                await asyncio.sleep(0.005)

        async def read() -> None:
            while not done.is_set():
                view = await _class_view(second)
                if view is not None:
                    seen.append(view)
                await asyncio.sleep(0)

        loops = [asyncio.create_task(purge()), asyncio.create_task(read())]
        try:
            await asyncio.gather(*(consume(s, o) for s, o in zip(services, orders, strict=True)))
        finally:
            done.set()
            await asyncio.gather(*loops)
        assert seen, "the reader never saw the class"
        for view in seen:
            _consistent(view)
        final = await _class_view(first)
        assert final == expected_class
        q = ResultsQueries(first)
        for b in BATCHES:
            view = await q.batch_json(b)
            assert view is not None
            view.pop("updated_at")
            view.pop("version")
            assert view == expected_batches[b], b
        assert await first.pending_count() == 2 * len(BATCHES)  # each run announced once
    finally:
        await first.close()
        await second.close()


@pytest.fixture
async def pg_opener() -> AsyncIterator[Opener]:
    from pipeline_state_sql.results_store import open_results_store

    from tests.http.serving import pg_schema, postgres_url

    url = await asyncio.to_thread(postgres_url)
    async with pg_schema(url, "ps_resr") as schema:
        opened = 0

        async def opener() -> Any:
            nonlocal opened
            opened += 1
            return await open_results_store(url, schema=schema, upgrade=opened == 1)

        yield opener


@pytest.mark.postgres
async def test_purge_and_readers_racing_two_consumers_on_postgres(pg_opener: Opener) -> None:
    """Held: on PostgreSQL every class view read during the race is one moment, the end state
    is the in-memory reference, each run is announced once."""
    await _race(pg_opener)


async def test_purge_and_readers_racing_two_consumers_on_sqlite(tmp_path: Path) -> None:
    """Held: the same on SQLite (two stores on one file)."""
    from pipeline_state_sql.results_store import open_results_store

    url = f"sqlite+aiosqlite:///{tmp_path / 'race.db'}"
    opened = 0

    async def opener() -> Any:
        nonlocal opened
        opened += 1
        return await open_results_store(url, upgrade=opened == 1)

    await _race(opener)
