"""Two results consumers racing on one SQLite or PostgreSQL results store.

An engine story (two batches of two classes: completed, cancelled and retried runs, repeats,
stale and lost correlation ids, deadlines) is recorded from the in-memory runtime; two
services, each on its own store object (its own connections) over one database, consume all
of it at once, each in its own shuffled order with redeliveries, while the inbox is purged
in between (so later repeats are not recognised by their event id). The end state is the
in-memory natural-order reference: same read models, same class views, each completed run
announced exactly once (two outbox rows).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pipeline_state_sql.results_store import SqlResultsStore, open_results_store

from pipeline_state import ManualClock
from pipeline_state.errors import ConcurrencyConflictError, StoreUnavailableError
from pipeline_state.profiles.huleedu.results import (
    InMemoryResultsStore,
    ResultsQueries,
    ResultsService,
    RetentionPolicy,
)
from tests.results.test_results_engine_orders import _story

pytestmark = pytest.mark.timeout(120)

PLAN = [
    ("start", 0, 0),
    ("ok", 0, 1),
    ("start", 1, 0),
    ("repeat", 0, 1),
    ("partial", 1, 1),
    ("cancel", 1, 0),
    ("start", 1, 2),
    ("stale", 1, 0),
    ("ok", 1, 1),
    ("lost", 1, 0),
    ("ok", 1, 1),
    ("retry", 0, 0),
    ("fail", 0, 1),
    ("start", 0, 1),
    ("expire", 0, 0),
    ("start", 1, 3),
    ("ok", 1, 1),
]


@pytest.fixture(params=["sqlite", "postgres"])
async def two_stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[list[SqlResultsStore]]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'race.db'}"
        first = await open_results_store(url)
        second = await open_results_store(url, upgrade=False)
        try:
            yield [first, second]
        finally:
            await first.close()
            await second.close()
        return
    from tests.http.serving import pg_schema, postgres_url

    url = await asyncio.to_thread(postgres_url)
    async with pg_schema(url, "ps_rsrace") as schema:
        first = await open_results_store(url, schema=schema)
        second = await open_results_store(url, schema=schema, upgrade=False)
        try:
            yield [first, second]
        finally:
            await first.close()
            await second.close()


async def _handle(service: ResultsService, topic: str, value: dict[str, Any]) -> None:
    """As the Kafka consumer does: a transient failure is tried again."""
    for _ in range(200):
        try:
            await service.handle_message(topic, value)
            return
        except (StoreUnavailableError, ConcurrencyConflictError):
            await asyncio.sleep(0.005)
    raise AssertionError("the store never took the record")


async def _views(store: Any) -> dict[str, Any]:
    q = ResultsQueries(store)
    out: dict[str, Any] = {}
    for b in ("b0", "b1"):
        view = await q.batch_json(b)
        out[b] = (
            None if view is None else {k: v for k, v in view.items() if k not in ("version", "updated_at")}
        )
    for k in ("k", "k2"):
        out[k] = await q.class_json(k)
    return out


async def test_two_consumers_racing_with_a_purge_match_the_natural_order(
    two_stores: list[SqlResultsStore],
) -> None:
    platform, _ = await _story(PLAN, archive=True)
    natural = platform.consumed
    reference_store = InMemoryResultsStore()
    reference = ResultsService(reference_store, clock=ManualClock())
    for topic, value in natural:
        await reference.handle_message(topic, value)
    expected = await _views(reference_store)
    runs = sum(len(b.completions) for b in [await reference_store.load(x) for x in ("b0", "b1")] if b)
    assert runs >= 3, "the story should complete several runs"

    clock = ManualClock()
    services = [
        ResultsService(s, clock=clock, max_attempts=50, retention=RetentionPolicy()) for s in two_stores
    ]
    rng = random.Random(7)
    orders = []
    for _ in services:
        order = natural + rng.sample(natural, k=len(natural) // 2)
        rng.shuffle(order)
        orders.append(order)

    async def consume(service: ResultsService, order: list[tuple[str, dict[str, Any]]]) -> None:
        half = len(order) // 2
        for topic, value in order[:half]:
            await _handle(service, topic, value)
        for topic, value in order[half:]:
            await _handle(service, topic, value)
            await asyncio.sleep(0)

    async def purge() -> None:
        await asyncio.sleep(0.01)
        clock.advance(10 * 24 * 3600)  # every entry is past its retention now
        for _ in range(3):
            with contextlib.suppress(StoreUnavailableError):
                await services[0].purge_inbox()
            await asyncio.sleep(0.01)

    await asyncio.gather(consume(services[0], orders[0]), consume(services[1], orders[1]), purge())
    # a last full redelivery after everything was purged
    await services[0].purge_inbox()
    for topic, value in natural:
        await _handle(services[1], topic, value)

    assert await _views(two_stores[0]) == expected
    assert await two_stores[0].pending_count() == 2 * runs
