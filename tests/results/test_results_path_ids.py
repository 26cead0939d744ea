"""Teacher and class ids in the results routes' paths.

A batch id with ``/`` is refused at the door (``tests/http/test_http_path_ids.py``): ASGI
servers decode ``%2F`` before routing, so no route could address it. The results routes key
their listings by the teacher (``user_id``) and the class (``class_id``) of a registration,
ids the wire and the HTTP registration accept with a ``/``: the results of such a teacher or
class were stored, and no request could read them (a bare 404 route miss). Was a defect
(found by an attack on the read model): those routes now take the rest of the path for the
id (``:path``; nothing is routed below them).
"""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest
from pipeline_state_http import HttpSettings, create_app
from results_events import at, completion, registered

from pipeline_state import InMemoryStore, ManualClock, PipelineService
from pipeline_state.profiles.huleedu.results import InMemoryResultsStore, ResultsQueries, ResultsService

pytestmark = pytest.mark.timeout(60)

API = "attack-results-api"


@pytest.mark.parametrize("route", ["teachers", "classes"])
async def test_a_teacher_or_class_id_with_a_slash_is_readable_or_refused(route: str) -> None:
    store = InMemoryResultsStore()
    service = ResultsService(store, clock=ManualClock())
    await service.handle_message(*registered("b1", user_id="school/t1", class_id="year7/a"))
    await service.handle_message(*completion("b1", "r1", "c1", when=at(10)))
    queries = ResultsQueries(store)
    # the read model holds them: the listings exist
    assert [b.batch_id for b in await queries.teacher_batches("school/t1")] == ["b1"]
    assert await queries.class_summary("year7/a") is not None

    app = create_app(PipelineService(InMemoryStore()), settings=HttpSettings(api_token=API), results=store)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://attack.test",
        headers={"Authorization": f"Bearer {API}"},
    ) as http:
        wanted = "school/t1" if route == "teachers" else "year7/a"
        response = await http.get(f"/v1/results/{route}/{quote(wanted, safe='')}")
    # Either the id can be addressed (200 with b1), or ids no route can hold are refused at
    # intake, as batch ids with '/' are; never stored results that no request reaches.
    assert response.status_code == 200, (response.status_code, response.text)
    assert [b["batch_id"] for b in response.json()["batches"]] == ["b1"]
