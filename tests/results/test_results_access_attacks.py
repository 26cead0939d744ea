"""Reading results without the API token, through the settings that open other routes
(public status page, public metrics, insecure mode with the API token set) and through path
variants."""

from __future__ import annotations

import httpx
import pytest
from pipeline_state_http import HttpSettings, create_app
from pipeline_state_http.settings import Scope
from results_events import at, completion, registered

from pipeline_state import InMemoryStore, ManualClock, PipelineService
from pipeline_state.profiles.huleedu.results import InMemoryResultsStore, ResultsService

pytestmark = pytest.mark.timeout(60)

API, INTERNAL, OPS = "resz-api", "resz-internal", "resz-ops"

PATHS = (
    "/v1/results/batches/b1",
    "/v1/results/batches/b1/",
    "/v1/results//batches/b1",
    "/v1/results/batches/./b1",
    "/v1/results/batches/%62%31",
    "/v1/results/classes/class-a",
    "/v1/results/teachers/teacher-a",
    "/v1/results/teachers/teacher-a?limit=100&offset=0",
    "/v1/results/teachers/../teachers/teacher-a",
    "//v1/results/teachers/teacher-a",
)


async def _store() -> InMemoryResultsStore:
    store = InMemoryResultsStore()
    service = ResultsService(store, clock=ManualClock())
    await service.handle_message(*registered("b1", class_id="class-a", user_id="teacher-a"))
    await service.handle_message(*completion("b1", "r1", "c1", when=at(10)))
    return store


@pytest.mark.parametrize(
    "settings",
    [
        HttpSettings(api_token=API, internal_token=INTERNAL, ops_token=OPS, public_status_page=True),
        HttpSettings(api_token=API, internal_token=INTERNAL, ops_token=OPS, public_metrics=True),
        HttpSettings(api_token=API, insecure_no_auth=True),
        HttpSettings(internal_token=INTERNAL, ops_token=OPS),
    ],
    ids=["public-status-page", "public-metrics", "insecure-api-token-set", "no-api-token"],
)
async def test_results_need_the_api_token_whatever_else_is_open(settings: HttpSettings) -> None:
    """Held: without the API token (none, the internal or ops token, another scheme), no path
    variant of the results routes answers the batch's or the teacher's results."""
    store = await _store()
    app = create_app(PipelineService(InMemoryStore()), settings=settings, results=store)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://resz.test") as http:
        for headers in ({}, {"Authorization": f"Bearer {INTERNAL}"}, {"Authorization": f"Bearer {OPS}"},
                        {"Authorization": f"Token {API}"}, {"X-Api-Token": API}):  # fmt: skip
            for path in PATHS:
                for method in ("GET", "HEAD"):
                    answer = await http.request(method, path, headers=headers)
                    assert answer.status_code != 200 or "teacher-a" not in answer.text, (
                        headers,
                        path,
                        method,
                    )
                    assert answer.status_code in (401, 404, 405, 307, 422), (
                        headers,
                        path,
                        method,
                        answer.status_code,
                    )
                    assert "completed_successfully" not in answer.text
        if settings.token(Scope.API) is not None:  # the API token does open them: the test bites
            answer = await http.get(PATHS[0], headers={"Authorization": f"Bearer {API}"})
            assert answer.status_code == 200
            assert answer.json()["user_id"] == "teacher-a"
