"""Found by an attack: the results routes read while runs complete (SQLite and PostgreSQL results
stores), and hostile paging parameters on them."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pipeline_state_http import HttpSettings, create_app
from pipeline_state_sql.results_store import open_results_store

from pipeline_state.profiles.huleedu.results import InMemoryResultsStore, ResultsStore

from .conftest import TOKENS, authed_client
from .serving import pg_schema, postgres_url
from .test_http_results import CLASS, TEACHER, Platform


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def results_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ResultsStore]:
    if request.param == "memory":
        yield InMemoryResultsStore()
        return
    if request.param == "sqlite":
        store = await open_results_store(f"sqlite+aiosqlite:///{tmp_path / 'results.db'}")
        try:
            yield store
        finally:
            await store.close()
        return
    url = await asyncio.to_thread(postgres_url)
    async with pg_schema(url, "ps_results") as schema:
        store = await open_results_store(url, schema=schema)
        try:
            yield store
        finally:
            await store.close()


async def test_class_view_is_one_consistent_answer_while_runs_complete(results_store: ResultsStore) -> None:
    """Was a defect on the SQL results stores (the in-memory store held): now GET
    /v1/results/classes/{id} with a page covering the whole class is one answer: its
    summary (`batch_count`, `batches_by_status`, essay totals) agrees with the batches it
    lists, even while other batches of the class are registered or complete. Observed on
    SQLite and PostgreSQL: e.g. `batch_count: 1, batches_by_status {completed_with_failures: 1}`
    next to a page listing two batches (one `registered`), or a summary saying `registered`
    while the page says `processing`. Cause: ResultsQueries.class_json
    (pipeline_state/profiles/huleedu/results/queries.py:45-48) reads the summary
    (store.class_results) and the page (store.list_batches) in two separate store reads /
    transactions, so a commit between them gives a half-updated answer."""
    platform = Platform(results_store)
    app = create_app(platform.rt.service, settings=HttpSettings(**TOKENS), results=results_store)
    problems: list[str] = []
    stop = asyncio.Event()
    async with authed_client(app) as http:

        async def reader() -> None:
            while not stop.is_set():
                answer = await http.get(f"/v1/results/classes/{CLASS}", params={"limit": 100})
                if answer.status_code == 404:
                    await asyncio.sleep(0)
                    continue
                if answer.status_code != 200:
                    problems.append(answer.text)
                    continue
                view = answer.json()
                listed = view["batches"]
                by_status = dict(collections.Counter(b["status"] for b in listed))
                if view["batch_count"] != len(listed) or view["batches_by_status"] != by_status:
                    problems.append(
                        f"summary {view['batch_count']} {view['batches_by_status']} vs page {by_status}"
                    )
                if view["essays_succeeded"] != sum(b["essays_succeeded"] for b in listed) or view[
                    "essays_failed"
                ] != sum(b["essays_failed"] for b in listed):
                    problems.append("essay totals differ from the listed batches")
                await asyncio.sleep(0)

        async def writer() -> None:
            try:
                for i in range(6):
                    await platform.complete_run(f"c{i}", essays=2)
            finally:
                stop.set()

        await asyncio.wait_for(asyncio.gather(reader(), reader(), writer()), 90)
        teacher = (await http.get(f"/v1/results/teachers/{TEACHER}")).json()
        assert teacher["batch_count"] == 6
    assert problems == [], problems[:5]


async def test_hostile_paging_on_results_routes(results_store: ResultsStore) -> None:
    """Held: hostile limit/offset values on the results routes answer 200 or a 422
    naming the query field, never a 5xx; unicode and injection-looking ids answer 404/200."""
    platform = Platform(results_store)
    await platform.complete_run("b1", essays=2)
    app = create_app(platform.rt.service, settings=HttpSettings(**TOKENS), results=results_store)
    async with authed_client(app) as http:
        for query in (
            "limit=NaN",
            "limit=-1",
            "limit=0",
            "limit=1e2",
            "limit=9" * 30,
            "offset=-1",
            "offset=1000000000",
            "offset=1000000001",
            "limit=5&limit=7",
            "limit=%EF%BC%95",
            "offset=1%27%20OR%201=1",
            "limit=",
            "offset=%00",
        ):
            for path in (f"/v1/results/classes/{CLASS}", f"/v1/results/teachers/{TEACHER}"):
                answer = await http.get(f"{path}?{query}")
                assert answer.status_code in (200, 422), (path, query, answer.text)
                if answer.status_code == 422:
                    assert answer.json()["field"].startswith("query."), answer.text
        for bad in ("x' OR '1'='1", "%25", "\u202e", "\U0001f600" * 200, "a" * 200, "\\", "%", "*"):
            for route in ("batches", "classes", "teachers"):
                answer = await http.get(
                    f"/v1/results/{route}/{bad}".replace("%", "%25")
                    if bad != "%25"
                    else f"/v1/results/{route}/%2525"
                )
                assert answer.status_code in (200, 404, 422), (route, bad, answer.text)
                assert answer.headers["content-type"].startswith("application/json")
