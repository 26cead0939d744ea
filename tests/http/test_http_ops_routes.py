"""The operational listings: waiting facts and stalled runs, behind the operations token."""

from __future__ import annotations

import httpx

from pipeline_state import ManualClock, PipelineService
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

OPS = {"Authorization": "Bearer test-ops-token"}  # the ops token of tests/http/conftest.py


async def test_waiting_facts_are_listed_and_counted(
    http: httpx.AsyncClient, service: PipelineService
) -> None:
    env = HuleEduEnvelopes()
    early = env.provisioned("b1", env.item_ids("b1", 2))
    await service.handle_message(*early)
    await service.handle_message(*env.request("b2", "nlp"))

    assert (await http.get("/v1/ops/waiting")).status_code == 401  # the API token is not enough
    answer = await http.get("/v1/ops/waiting", headers=OPS)

    assert answer.status_code == 200
    body = answer.json()
    assert body["count"] == 2
    assert [(f["batch_id"], f["waits_for"]) for f in body["facts"]] == [
        ("b1", "batch_registration"),
        ("b2", "batch_registration"),
    ]
    assert body["facts"][0]["event_id"] == early[1]["event_id"]
    only = await http.get("/v1/ops/waiting", params={"batch_id": "b2"}, headers=OPS)
    assert [f["batch_id"] for f in only.json()["facts"]] == ["b2"]


async def test_stalled_runs_are_listed_oldest_first(
    http: httpx.AsyncClient, service: PipelineService, clock: ManualClock
) -> None:
    env = HuleEduEnvelopes()
    for batch_id in ("old", "new"):
        for delivery in (
            env.register(batch_id, items=2),
            env.provisioned(batch_id, env.item_ids(batch_id, 2)),
        ):
            await service.handle_message(*delivery)
        await service.handle_message(*env.request(batch_id, "nlp"))
        clock.advance(600)

    answer = await http.get("/v1/ops/stalled-runs", params={"older_than": 300}, headers=OPS)

    assert answer.status_code == 200
    runs = answer.json()["runs"]
    assert [r["batch_id"] for r in runs] == ["old", "new"]
    assert runs[0]["pipeline"] == "nlp"
    assert runs[0]["active_phases"] == ["spellcheck", "nlp"]
    later = await http.get("/v1/ops/stalled-runs", params={"older_than": 900}, headers=OPS)
    assert [r["batch_id"] for r in later.json()["runs"]] == ["old"]
