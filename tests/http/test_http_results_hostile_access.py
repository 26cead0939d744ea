"""The ``/v1/results`` routes against hostile ids, paging and tokens.

On the in-memory and SQLite results stores: the routes answer 401 to every token but the API
token; a control, bidi or over-long id and bad paging answer 422; a percent-encoded slash,
a lone surrogate's UTF-8 bytes, invalid UTF-8, ``..`` and a blank id answer 404; nothing
answers 5xx. (A batch, class or teacher id holding ``/``, which the wire and the results
consumer accept, cannot be read through these routes: ``%2F`` is decoded before routing,
as for the engine's own ``/v1/batches/{batch_id}`` routes.)
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from pipeline_state_http import HttpSettings, create_app
from pipeline_state_sql.results_store import open_results_store

from pipeline_state import InMemoryStore, ManualClock, PipelineService
from pipeline_state.profiles.huleedu.results import InMemoryResultsStore, ResultsService
from pipeline_state.profiles.huleedu.results.ports import ResultsStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "results"))
from results_events import at, completion, registered

pytestmark = pytest.mark.timeout(60)

API, INTERNAL, OPS = (
    "rs-api-token-0123456789abcdef",
    "rs-internal-token-0123456789",
    "rs-ops-token-0123456789abc",
)


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ResultsStore]:
    if request.param == "memory":
        yield InMemoryResultsStore()
        return
    opened = await open_results_store(f"sqlite+aiosqlite:///{tmp_path / 'h.db'}")
    try:
        yield opened
    finally:
        await opened.close()


async def test_results_routes_refuse_hostile_ids_paging_and_tokens(store: ResultsStore) -> None:
    service = ResultsService(store, clock=ManualClock())
    await service.handle_message(*registered("b1", class_id="k1", user_id="t1"))
    await service.handle_message(*completion("b1", "r1", "c1", when=at(3)))
    await service.handle_message(*registered("b/2", class_id="k/2", user_id="t/2"))
    app = create_app(
        PipelineService(InMemoryStore()),
        settings=HttpSettings(api_token=API, internal_token=INTERNAL, ops_token=OPS),
        results=store,
    )
    expected = {
        "/v1/results/batches/b1": 200,
        "/v1/results/classes/k1": 200,
        "/v1/results/teachers/t1": 200,
        "/v1/results/batches/%00": 422,
        "/v1/results/batches/" + "x" * 201: 422,
        "/v1/results/batches/%E2%80%AE": 422,
        "/v1/results/batches/b%0A1": 422,
        "/v1/results/batches/b%2F2": 404,
        "/v1/results/batches/%ED%A0%80": 404,
        "/v1/results/batches/%FF": 404,
        "/v1/results/batches/%2E%2E": 404,
        "/v1/results/batches/%20": 404,
        "/v1/results/classes/k1?limit=0": 422,
        "/v1/results/classes/k1?limit=99999999999999999999999": 422,
        "/v1/results/classes/k1?offset=-1": 422,
        "/v1/results/classes/k1?offset=1000000001": 422,
        "/v1/results/classes/k1?limit=1.5": 422,
        "/v1/results/classes/k1?limit=%00": 422,
        "/v1/results/teachers/t1?offset=1000000000&limit=1": 200,
    }
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://rs.test") as http:
        got = {
            path: (await http.get(path, headers={"Authorization": f"Bearer {API}"})).status_code
            for path in expected
        }
        assert got == expected
        for token in (INTERNAL, OPS, API + "x", API.upper(), ""):
            for path in ("/v1/results/batches/b1", "/v1/results/classes/k1", "/v1/results/teachers/t1"):
                answer = await http.get(path, headers={"Authorization": f"Bearer {token}"})
                assert answer.status_code == 401, (token, path)
        assert (await http.get("/v1/results/batches/b1")).status_code == 401
        view = (await http.get("/v1/results/batches/b1", headers={"Authorization": f"Bearer {API}"})).json()
        assert (view["status"], [r["run_id"] for r in view["runs"]]) == ("completed_successfully", ["r1"])
