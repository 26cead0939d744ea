"""``GET /asyncapi.json`` (issue 15, point 4): the AsyncAPI document of the service's own
profile, through the real ASGI app, behind the API token like ``/openapi.json``."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from pipeline_state_http import HttpSettings, create_app, install

from pipeline_state import Catalog, InMemoryStore, PipelineService
from pipeline_state._asyncapi import asyncapi_document
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.profile import huleedu_profile

from .conftest import API_TOKEN, BASE, OPS_TOKEN, TOKENS, bearer


async def test_http_asyncapi_serves_the_document_of_the_services_profile(http: httpx.AsyncClient) -> None:
    answer = await http.get("/asyncapi.json")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == asyncapi_document(huleedu_profile())


async def test_http_asyncapi_follows_the_profile_and_the_mount_prefix() -> None:
    catalog = Catalog.from_dict({"pipelines": {"spell": {"steps": [{"name": "spellcheck"}]}}})
    profile = huleedu_profile(catalog=catalog)
    host = FastAPI()
    install(
        host,
        PipelineService(InMemoryStore(), profile=profile),
        settings=HttpSettings(**TOKENS),
        prefix="/state",
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=host), base_url=BASE) as http:
        answer = await http.get("/state/asyncapi.json", headers=bearer(API_TOKEN))
    assert answer.status_code == 200
    document = answer.json()
    assert document == asyncapi_document(profile)
    commands = {t for t, op in document["operations"].items() if op["tags"] == [{"name": "command"}]}
    assert commands == {f"send.{Topic.SPELLCHECK}", f"send.{Topic.STUDENT_MATCHING}"}


async def test_http_asyncapi_needs_the_api_token() -> None:
    app = create_app(PipelineService(InMemoryStore()), settings=HttpSettings(**TOKENS))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
        assert (await http.get("/asyncapi.json")).status_code == 401
        assert (await http.get("/asyncapi.json", headers=bearer(OPS_TOKEN))).status_code == 401
        assert (await http.get("/asyncapi.json", headers=bearer(API_TOKEN))).status_code == 200
