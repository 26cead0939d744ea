"""The results routes: a pipeline run by the real engine reaches the results read model
through :class:`~pipeline_state.profiles.huleedu.results.ResultsService`, and ``/v1/results/...`` serves it.

The results service consumes what the engine publishes on the topics it consumes
(registrations, phase commands, pruned-phase notices and completions, through the runtime's
bus) and the same phase-outcome envelopes the engine is handed. The routes are
queried through the app in process, on the in-memory results store and on the SQLite one.
"""

from __future__ import annotations

import asyncio
import uuid
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from pipeline_state_http import HttpSettings, create_app
from pipeline_state_http.results_schemas import (
    BatchResultsView,
    ClassResultsView,
    TeacherResultsView,
)
from pipeline_state_sql.results_store import SqlResultsStore, open_results_store
from schemathesis.checks import not_a_server_error

from pipeline_state import InMemoryRuntime
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.results import (
    InMemoryResultsStore,
    ResultsQueries,
    ResultsStore,
)
from tests.results_platform import ResultsPlatform

from .conftest import API_TOKEN, BASE, TOKENS, authed_client, bearer

TEACHER = "teacher-7"
CLASS = "class-7"


class Platform(ResultsPlatform):
    """The engine and a results consumer beside it, writing into ``results``."""

    def __init__(self, results: ResultsStore) -> None:
        super().__init__(results, owner=TEACHER)

    async def complete_run(self, batch_id: str, *, essays: int = 4) -> None:
        """Register a class batch and run ``cj_assessment`` on it to completion (one essay
        fails in ``cj_assessment``)."""
        ids = await self.ready_batch(batch_id, essays, class_id=CLASS)
        corr = await self.start(batch_id, "cj_assessment")
        self.rt.clock.advance(3)
        await self.outcome(batch_id, "spellcheck", corr, processed=ids)
        self.rt.clock.advance(5)
        out = await self.outcome(batch_id, "cj_assessment", corr, processed=ids[:-1], failed=ids[-1:])
        assert Topic.PIPELINE_COMPLETED.value in [m["topic"] for m in out]


async def _client(platform: Platform, settings: HttpSettings | None = None) -> httpx.AsyncClient:
    app = create_app(platform.rt.service, settings=settings or HttpSettings(**TOKENS), results=platform.store)
    if settings is None:
        return authed_client(app)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE)


@pytest.fixture
async def memory_platform() -> Platform:
    platform = Platform(InMemoryResultsStore())
    await platform.complete_run("b1")
    await platform.complete_run("b2", essays=2)
    return platform


@pytest.fixture
async def http(memory_platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    async with await _client(memory_platform) as client:
        yield client


async def test_batch_results_route_serves_the_read_model(
    memory_platform: Platform, http: httpx.AsyncClient
) -> None:
    answer = await http.get("/v1/results/batches/b1")
    assert answer.status_code == 200
    body = answer.json()
    assert body == await ResultsQueries(memory_platform.store).batch_json("b1")
    assert (body["status"], body["user_id"], body["class_id"]) == (
        "completed_with_failures",
        TEACHER,
        CLASS,
    )
    assert (body["essays_succeeded"], body["essays_failed"]) == (3, 1)
    assert body["completed_phases"] == ["spellcheck", "cj_assessment"]
    assert body["phases"]["cj_assessment"] == {
        "status": "completed_with_partial_success",
        "successful": 3,
        "failed": 1,
        "duration_seconds": 5.0,
    }
    assert body["latest_run"]["pipeline_name"] == "cj_assessment"
    assert answer.headers["X-Correlation-ID"]


async def test_class_and_teacher_routes(http: httpx.AsyncClient) -> None:
    klass = (await http.get(f"/v1/results/classes/{CLASS}")).json()
    assert (klass["batch_count"], klass["batches_by_status"]) == (2, {"completed_with_failures": 2})
    assert (klass["essays_succeeded"], klass["essays_failed"]) == (3 + 1, 1 + 1)
    assert [b["batch_id"] for b in klass["batches"]] == ["b1", "b2"]
    page = (await http.get(f"/v1/results/classes/{CLASS}", params={"limit": 1, "offset": 1})).json()
    assert [b["batch_id"] for b in page["batches"]] == ["b2"]
    assert page["batch_count"] == 2  # the summary covers the class, the page only lists

    teacher = await http.get(f"/v1/results/teachers/{TEACHER}")
    assert teacher.status_code == 200
    assert teacher.json()["batch_count"] == 2
    assert [b["latest_pipeline"] for b in teacher.json()["batches"]] == ["cj_assessment"] * 2
    nobody = await http.get("/v1/results/teachers/nobody")
    assert nobody.status_code == 200
    assert nobody.json() == {"user_id": "nobody", "batch_count": 0, "batches_by_status": {}, "batches": []}


async def test_unknown_batch_or_class_is_404_and_bad_paging_422(http: httpx.AsyncClient) -> None:
    for path in ("/v1/results/batches/nope", "/v1/results/classes/nope"):
        answer = await http.get(path)
        assert answer.status_code == 404, path
        assert answer.json()["error"] == "results_not_found"
    too_big = await http.get(f"/v1/results/classes/{CLASS}", params={"limit": 10_000})
    assert too_big.status_code == 422
    assert too_big.json()["field"] == "query.limit"


async def test_results_routes_require_the_api_token(memory_platform: Platform) -> None:
    settings = HttpSettings(api_token="secret-token")
    async with await _client(memory_platform, settings) as client:
        for path in (
            "/v1/results/batches/b1",
            f"/v1/results/classes/{CLASS}",
            f"/v1/results/teachers/{TEACHER}",
        ):
            denied = await client.get(path)
            assert denied.status_code == 401, path
            allowed = await client.get(path, headers={"Authorization": "Bearer secret-token"})
            assert allowed.status_code == 200, path


async def test_response_models_mirror_the_views_and_are_in_the_schema(
    memory_platform: Platform, http: httpx.AsyncClient
) -> None:
    """Every key of the views survives the response models (a new view field not added to
    the model would be dropped silently), and the schema names the models."""
    queries = ResultsQueries(memory_platform.store)
    for model, view in (
        (BatchResultsView, await queries.batch_json("b1")),
        (ClassResultsView, await queries.class_json(CLASS)),
        (TeacherResultsView, await queries.teacher_json(TEACHER)),
    ):
        assert view is not None
        assert model.model_validate(view).model_dump(mode="json") == view, model.__name__
    document = (await http.get("/openapi.json")).json()
    for path, model in (
        ("/v1/results/batches/{batch_id}", "BatchResultsView"),
        ("/v1/results/classes/{class_id}", "ClassResultsView"),
        ("/v1/results/teachers/{user_id}", "TeacherResultsView"),
    ):
        ref = document["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert ref["$ref"].endswith(f"/{model}"), path


async def test_results_routes_are_absent_without_a_results_store() -> None:
    app = create_app(InMemoryRuntime().service, settings=HttpSettings(**TOKENS))
    assert not [r for r in app.routes if getattr(r, "path", "").startswith("/v1/results")]


@pytest.fixture
async def sqlite_results(tmp_path: Path) -> AsyncIterator[SqlResultsStore]:
    store = await open_results_store(f"sqlite+aiosqlite:///{tmp_path / 'results.db'}")
    yield store
    await store.close()


async def test_routes_on_the_sqlite_results_store(sqlite_results: SqlResultsStore) -> None:
    platform = Platform(sqlite_results)
    await platform.complete_run("b1")
    async with await _client(platform) as client:
        batch = await client.get("/v1/results/batches/b1")
        klass = await client.get(f"/v1/results/classes/{CLASS}")
        teacher = await client.get(f"/v1/results/teachers/{TEACHER}")
    assert batch.status_code == 200
    assert batch.json()["status"] == "completed_with_failures"
    assert batch.json()["version"] >= 1
    assert klass.json()["batches_by_status"] == {"completed_with_failures": 1}
    assert [b["batch_id"] for b in teacher.json()["batches"]] == ["b1"]
    # The announcements went into the SQL outbox with the read model.
    assert await sqlite_results.pending_count() == 2


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_a_batch_known_only_from_worker_outcomes_is_404(backend: str, tmp_path: Path) -> None:
    """An outcome for a batch the engine never registered (it waits, then dead-letters), and
    one with a lost correlation id for a registered batch whose run completed: the first is
    no batch (404, in no class or teacher listing), the second changes nothing shown."""
    store: ResultsStore
    if backend == "sqlite":
        store = await open_results_store(f"sqlite+aiosqlite:///{tmp_path / 'results.db'}")
    else:
        store = InMemoryResultsStore()
    try:
        platform = Platform(store)
        await platform.complete_run("b1")
        platform.env.timestamp = platform.rt.clock.now()
        await platform.deliver(
            *platform.env.outcome("ghost", "spellcheck", str(uuid.uuid4()), processed=["x"])
        )
        platform.rt.clock.advance(5)
        platform.env.timestamp = platform.rt.clock.now()
        ids = platform.env.item_ids("b1", 4)
        await platform.deliver(*platform.env.outcome("b1", "cj_assessment", str(uuid.uuid4()), processed=ids))
        async with await _client(platform) as client:
            ghost = await client.get("/v1/results/batches/ghost")
            batch = await client.get("/v1/results/batches/b1")
            klass = await client.get(f"/v1/results/classes/{CLASS}")
        assert ghost.status_code == 404
        assert ghost.json()["error"] == "results_not_found"
        assert (batch.json()["status"], batch.json()["in_progress"]) == ("completed_with_failures", [])
        assert (klass.json()["batch_count"], klass.json()["batches_by_status"]) == (
            1,
            {"completed_with_failures": 1},
        )
    finally:
        if isinstance(store, SqlResultsStore):
            await store.close()


def _results_app() -> Any:
    platform = Platform(InMemoryResultsStore())
    asyncio.run(platform.complete_run("b1"))
    return create_app(platform.rt.service, settings=HttpSettings(**TOKENS), results=platform.store)


RESULTS_SCHEMA = schemathesis.openapi.from_asgi(
    "/openapi.json", _results_app(), headers=bearer(API_TOKEN)
).include(path_regex="^/v1/results/")


@RESULTS_SCHEMA.hook("map_path_parameters")
def _known_ids(context: Any, path_parameters: dict[str, Any] | None) -> dict[str, Any] | None:
    """Half of the generated ids are swapped for ones the read model holds."""
    if not isinstance(path_parameters, dict):
        return path_parameters
    for name, known in (("batch_id", "b1"), ("class_id", CLASS), ("user_id", TEACHER)):
        value = path_parameters.get(name)
        if isinstance(value, str) and zlib.crc32(value.encode("utf-8", "surrogatepass")) % 2 == 0:
            path_parameters[name] = known
    return path_parameters


@RESULTS_SCHEMA.parametrize()
@settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_results_routes_never_answer_5xx(case: Any) -> None:
    case.call_and_validate(headers=bearer(API_TOKEN), checks=[not_a_server_error])
