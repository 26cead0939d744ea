"""The HTTP API serving a profile other than the shipped one (issue 13): the media profile of
``examples/custom_catalog.py``. Its batches are registered and driven on its own wire; the
API shows them under the profile's view keys (``Profile.view_names``), answers its dry runs,
and documents that shape in its OpenAPI schema, while the shipped profile's answer and schema
stay HuleEdu's (``user_id``, ``class_id``, ``essay_count``)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
from pipeline_state_http import HttpApiError, HttpSettings, PipelineStateClient, create_app

from pipeline_state import InMemoryStore, ManualClock, PipelineService, Profile, ViewNames
from pipeline_state.profiles import load_profile
from pipeline_state.testing import Envelopes

from .conftest import API_TOKEN, BASE, TOKENS, authed_client

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_catalog.py"
MEDIA = load_profile(f"{EXAMPLE}:MEDIA")
ENGINE_KEYS = ["batch_id", "status", "version", "active_run", "history"]


def _served(profile: Profile) -> tuple[PipelineService, httpx.AsyncClient]:
    service = PipelineService(InMemoryStore(), profile=profile, clock=ManualClock())
    return service, authed_client(create_app(service, settings=HttpSettings(**TOKENS)))


async def _ready(
    service: PipelineService, env: Envelopes, season: str, episodes: list[str], series: str | None = None
) -> None:
    await service.handle_message(*env.register(season, item_ids=episodes, group_id=series, prompt=None))
    await service.handle_message(*env.provisioned(season, episodes))


async def test_the_media_profile_batch_view_over_http_follows_its_wire() -> None:
    service, http = _served(MEDIA)
    env = Envelopes(profile=MEDIA)
    episodes = ["ep-1", "ep-2"]
    async with http:
        await _ready(service, env, "s1", episodes, series="series-1")
        answer = await http.get("/v1/batches/s1")
        assert answer.status_code == 200, answer.text
        view = answer.json()
        assert view == {
            "batch_id": "s1",
            "status": "ready_for_pipeline_execution",
            "version": 2,
            "owner": "owner-1",
            "group_id": "series-1",
            "item_count": 2,
            "active_run": None,
            "history": [],
        }
        assert view == await _snapshot(service, "s1")

        # A run requested on the media wire shows as the active run, then in the history.
        out = await service.handle_message(*env.request("s1", "preview"))
        assert out.decision is not None
        running = (await http.get("/v1/batches/s1")).json()
        assert running["status"] == "processing_pipelines"
        assert running["active_run"]["pipeline_name"] == "preview"
        ran = []
        pending = [m.as_dict() for m in await _drain(service)]
        while pending:
            message = pending.pop(0)
            phase = env.phase_of(message)
            if phase is None:
                continue
            ran.append(phase)
            await service.handle_message(*env.answer(message))
            pending += [m.as_dict() for m in await _drain(service)]
        assert ran == ["transcode", "thumbnails"]
        done = (await http.get("/v1/batches/s1")).json()
        assert done["active_run"] is None
        assert [r["final_status"] for r in done["history"]] == ["completed_successfully"]
        assert done == await _snapshot(service, "s1")


async def test_the_dry_runs_answer_for_the_media_profile() -> None:
    service, http = _served(MEDIA)
    async with http:
        await _ready(service, Envelopes(profile=MEDIA), "s1", ["ep-1"])
        preflight = await http.post("/v1/batches/s1/pipelines/release/preflight", json={})
        assert preflight.status_code == 200, preflight.text
        assert preflight.json()["resolved_pipeline"] == ["transcode", "thumbnails", "captions", "publish"]
        body = {"batch_id": "s1", "requested_pipeline": "preview", "correlation_id": str(uuid.uuid4())}
        define = await http.post("/internal/v1/pipelines/define", json=body)
        assert define.status_code == 200, define.text
        assert define.json()["final_pipeline"] == ["transcode", "thumbnails"]
        unknown = await http.post("/v1/batches/s1/pipelines/nlp/preflight", json={})
        assert unknown.status_code == 400
        assert unknown.json()["denial_reason"] == "unknown_pipeline"


async def test_view_keys_that_are_not_python_names_are_served_and_documented() -> None:
    names = ViewNames(owner="producer-id", group_id="series id", items="model_config")
    service, http = _served(attrs.evolve(MEDIA, view_names=names))
    async with http:
        await _ready(service, Envelopes(profile=MEDIA), "s1", ["ep-1", "ep-2", "ep-3"])
        view = (await http.get("/v1/batches/s1")).json()
        assert (view["producer-id"], view["series id"], view["model_config"]) == ("owner-1", None, 3)
        schema = (await http.get("/openapi.json")).json()["components"]["schemas"]["BatchSnapshot"]
    keys = ["producer-id", "series id", "model_config"]
    assert list(schema["properties"]) == [*ENGINE_KEYS[:3], *keys, *ENGINE_KEYS[3:]]


@pytest.mark.parametrize(
    ("profile", "keys"),
    [(None, ["user_id", "class_id", "essay_count"]), (MEDIA, ["owner", "group_id", "item_count"])],
    ids=["huleedu", "media"],
)
async def test_the_openapi_batch_snapshot_has_the_profile_keys(
    profile: Profile | None, keys: list[str]
) -> None:
    service = PipelineService(InMemoryStore(), profile=profile)
    async with authed_client(create_app(service, settings=HttpSettings(**TOKENS))) as http:
        document = (await http.get("/openapi.json")).json()
    schema = document["components"]["schemas"]["BatchSnapshot"]
    assert list(schema["properties"]) == [*ENGINE_KEYS[:3], *keys, *ENGINE_KEYS[3:]]
    assert schema["required"] == list(schema["properties"])
    assert schema["properties"][keys[1]]["anyOf"] == [{"type": "string"}, {"type": "null"}]
    assert schema["properties"][keys[2]]["type"] == "integer"
    answer = document["paths"]["/v1/batches/{batch_id}"]["get"]["responses"]["200"]
    assert answer["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/BatchSnapshot"}


async def _snapshot(service: PipelineService, batch_id: str) -> dict[str, Any]:
    from pipeline_state._snapshot import snapshot

    state = await service.get_batch(batch_id)
    return snapshot(state, service.profile.view_names, service.profile.state_names)


async def _drain(service: PipelineService) -> list[Any]:
    from pipeline_state import InMemoryBus, OutboxRelay

    bus = InMemoryBus()
    await OutboxRelay(service.store, bus, service.clock).drain()  # type: ignore[arg-type]
    return list(bus.messages())


async def test_the_request_bodies_serve_the_media_profile_as_engine_inputs() -> None:
    # The bodies keep the shipped profile's wording and are read as the engine's inputs:
    # a registration over HTTP opens a season the media wire then provisions and runs.
    service, http = _served(MEDIA)
    env = Envelopes(profile=MEDIA)
    body = {
        "batch_id": "s1",
        "expected_essay_count": 2,
        "essay_ids": ["ep-1", "ep-2"],
        "user_id": "producer-7",
        "course_code": "MEDIA",
        "class_id": "series-1",
    }
    async with http:
        registered = await http.post("/v1/batches/register", json=body)
        assert registered.status_code == 202, registered.text
        await service.handle_message(*env.provisioned("s1", ["ep-1", "ep-2"]))
        view = (await http.get("/v1/batches/s1")).json()
        assert (view["owner"], view["group_id"], view["item_count"]) == ("producer-7", "series-1", 2)
        assert view["status"] == "ready_for_pipeline_execution"
        accepted = await http.post(
            "/v1/batches/s1/pipelines", json={"requested_pipeline": "preview", "user_id": "producer-7"}
        )
        assert accepted.status_code == 202, accepted.text
        assert accepted.json()["resolved_pipeline"] == ["transcode", "thumbnails"]
    [command] = [m.as_dict() for m in await _drain(service) if env.phase_of(m.as_dict()) == "transcode"]
    assert [e["episode_id"] for e in command["value"]["data"]["episodes"]] == ["ep-1", "ep-2"]


async def test_the_client_reads_the_view_of_any_profile() -> None:
    service = PipelineService(InMemoryStore(), profile=MEDIA, clock=ManualClock())
    await _ready(service, Envelopes(profile=MEDIA), "s1", ["ep-1"], series="series-1")
    transport = httpx.ASGITransport(app=create_app(service, settings=HttpSettings(**TOKENS)))
    async with PipelineStateClient(BASE, token=API_TOKEN, transport=transport) as client:
        view = await client.get_batch_view("s1")
        assert view == await _snapshot(service, "s1")
        assert (view["owner"], view["group_id"], view["item_count"]) == ("owner-1", "series-1", 1)
        with pytest.raises(HttpApiError) as caught:
            await client.get_batch("s1")  # a BatchSnapshot has the shipped profile's keys
        assert caught.value.error == "unexpected_answer"
