"""The HTTP adapter: the profile's words in every answer, hostile bodies and operator actions
on batches whose lifecycle does not allow them.

Were defects (fixed): the registration answer and the status page (badge, lifecycle diagram,
Mermaid title) showed the engine's name of a batch status where the profile (the shipped
HuleEdu profile included) names it otherwise. Held: malformed, oversized-number, deeply nested
and wrongly typed bodies answer 4xx and change nothing; record/retry/cancel/request on archived,
cancelled and unprovisioned batches change nothing; NaN query numbers are 422."""

from __future__ import annotations

import re

import attrs
import httpx
import pytest
from pipeline_state_http import HttpSettings, create_app

from pipeline_state import InMemoryStore, ManualClock, PipelineService
from pipeline_state._commands import ArchiveBatch, CancelBatch, Command
from pipeline_state.profiles.huleedu.profile import huleedu_profile
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

from .conftest import TOKENS, MakeReady, authed_client

OPS = {"Authorization": "Bearer test-ops-token"}
CORR = "00000000-0000-4000-8000-00000000a001"


# -- the profile's words ----------------------------------------------------------------------


async def test_the_registration_answer_shows_the_profiles_status_name() -> None:
    """README: "The answers speak the profile's words: ... statuses under its state_names".
    Was a defect (fixed): a profile that renamed the initial status got the engine's name in
    the registration answer (first answer and its replay), while GET said the profile's."""
    profile = attrs.evolve(huleedu_profile(), state_names={"awaiting_content_validation": "received"})
    service = PipelineService(InMemoryStore(), profile=profile, clock=ManualClock())
    body = {"batch_id": "b1", "expected_essay_count": 2, "user_id": "u", "course_code": "ENG5"}
    async with authed_client(create_app(service, settings=HttpSettings(**TOKENS))) as http:
        first = await http.post("/v1/batches/register", json=body, headers={"Idempotency-Key": "k"})
        replay = await http.post("/v1/batches/register", json=body, headers={"Idempotency-Key": "k"})
        view = await http.get("/v1/batches/b1")
    assert view.json()["status"] == "received"
    assert first.status_code == replay.status_code == 202
    assert first.json()["status"] == "received", first.text
    assert replay.json()["status"] == "received", replay.text


async def test_the_status_page_and_diagram_show_the_profiles_status_name(
    service: PipelineService, http: httpx.AsyncClient
) -> None:
    """The shipped profile names ``awaiting_group_validation`` ``awaiting_student_validation``
    (contract §1, the batch view). Was a defect (fixed): the status page's badge, its diagram
    and the Mermaid title showed the engine's name, a value the contract's ``BatchStatus``
    does not have, so the page and ``GET`` disagreed."""
    env = HuleEduEnvelopes()
    await service.handle_message(*env.register("b1", items=2, group_id="class-7"))
    await service.handle_message(*env.provisioned("b1", env.item_ids("b1", 2)))
    view = (await http.get("/v1/batches/b1")).json()
    assert view["status"] == "awaiting_student_validation"

    page = await http.get("/v1/batches/b1/status")
    assert page.status_code == 200
    [badge] = re.findall(r'id="batch-status" data-status="([^"]*)">([^<]*)<', page.text)
    assert badge == ("awaiting_student_validation", "awaiting_student_validation"), badge
    assert "current state awaiting_student_validation" in page.text  # the SVG's title
    # Node keys and Mermaid ids stay the engine's names; what the page shows does not.
    shown = re.sub(r'data-name="[^"]*"', "", page.text.split('id="mermaid-source"')[0])
    assert "awaiting_group_validation" not in shown
    diagram = (await http.get("/v1/batches/b1/diagram")).text
    assert diagram.startswith("%% batch b1: awaiting_student_validation\n"), diagram[:80]
    assert '"awaiting_student_validation"' in diagram  # the state's label; its id stays the engine's
    assert "essays_ready" in diagram  # the profile's name of the trigger items_ready
    assert "items_ready" not in diagram
    assert "essays_ready" in shown
    assert "items_ready" not in shown


# -- hostile bodies: 4xx, nothing changed -----------------------------------------------------


async def test_held_hostile_bodies_are_4xx_and_change_nothing(
    http: httpx.AsyncClient, service: PipelineService, make_ready: MakeReady
) -> None:
    await make_ready("b1")
    accepted = await http.post("/v1/batches/b1/pipelines", json={"requested_pipeline": "nlp", "user_id": "u"})
    assert accepted.status_code == 202
    before = await service.store.load("b1")
    deep = b'{"a":' * 3000 + b"1" + b"}" * 3000
    json_ct = {"content-type": "application/json"}
    cases: list[tuple[str, bytes, dict[str, str]]] = [
        ("/v1/batches/b1/cancel", b'{"user_id":', json_ct),  # truncated JSON
        ("/v1/batches/b1/cancel", b"[]", json_ct),
        ("/v1/batches/b1/cancel", b'{"user_id":"x"}', {"content-type": "text/plain"}),
        ("/v1/batches/b1/cancel", b'{"user_id":' + b"9" * 5000 + b"}", json_ct),  # int over 4300 digits
        ("/v1/batches/b1/cancel", b"[" * 100_000 + b"]" * 100_000, json_ct),  # recursion
        ("/v1/batches/b1/cancel", b'{"user_id":"a\\u0000b"}', json_ct),
        ("/v1/batches/b1/cancel", b'{"reason":"\\ud800"}', json_ct),  # lone surrogate
        ("/v1/batches/b1/cancel", b'{"run_id":"' + b"r" * 201 + b'"}', json_ct),
        ("/v1/batches/b1/retry-phase", b'{"phase_name":"nlp","user_id":"u","after_runs":NaN}', json_ct),
        ("/v1/batches/b1/retry-phase", b'{"phase_name":"nlp","user_id":"u","after_runs":-1}', json_ct),
        ("/v1/batches/b1/retry-phase", b'{"phase_name":"nlp","user_id":"u","after_runs":1e400}', json_ct),
        ("/v1/batches/b1/pipelines/nlp/preflight", b'{"prompt_payload":' + deep + b"}", json_ct),
        (
            "/v1/batches/b1/pipelines",
            b'{"requested_pipeline":"nlp","user_id":"u","prompt_payload":' + deep + b"}",
            json_ct,
        ),
        (
            "/internal/v1/phases/complete",
            b'{"batch_id":"b1","phase_name":"spellcheck","success":"maybe"}',
            json_ct,
        ),
        (
            "/internal/v1/phases/complete",
            b'{"batch_id":"b1","phase_name":"../../etc","success":true}',
            json_ct,
        ),
    ]
    for path, content, headers in cases:
        answer = await http.post(path, content=content, headers=headers)
        assert 400 <= answer.status_code < 500, (path, content[:60], answer.status_code, answer.text)
        assert answer.json()["error" if "error" in answer.json() else "denial_reason"]
    after = await service.store.load("b1")
    assert after == before


async def test_held_nan_and_infinite_query_numbers_are_422(http: httpx.AsyncClient) -> None:
    for value in ("nan", "NaN", "inf", "-inf", "1e999"):
        answer = await http.get("/v1/ops/stalled-runs", params={"older_than": value}, headers=OPS)
        assert answer.status_code == 422, (value, answer.text)
        assert answer.json()["field"] == "query.older_than"


# -- lifecycle: actions on batches that do not allow them ------------------------------------


@pytest.mark.parametrize("kind", ["archived", "cancelled", "unprovisioned"])
async def test_held_operator_routes_on_a_closed_or_unready_batch_change_nothing(
    http: httpx.AsyncClient, service: PipelineService, make_ready: MakeReady, kind: str
) -> None:
    env = HuleEduEnvelopes()
    if kind == "unprovisioned":
        await service.handle_message(*env.register("b1", items=2))
    else:
        await make_ready("b1")
        payload = ArchiveBatch("b1") if kind == "archived" else CancelBatch("b1")
        command = Command(payload, "00000000-0000-4000-8000-0000000000c1", CORR, requested_by="op")
        await service.handle(command, topic=f"operator.{type(payload).__name__}")
    before = await service.store.load("b1")
    assert before is not None

    done = await http.post(
        "/internal/v1/phases/complete", json={"batch_id": "b1", "phase_name": "spellcheck", "success": True}
    )
    assert done.status_code == 200, done.text
    assert done.json()["outcome"].startswith("ignored:"), done.text
    retry = await http.post("/v1/batches/b1/retry-phase", json={"phase_name": "spellcheck", "user_id": "u"})
    assert retry.status_code == 409
    assert retry.json()["denial_reason"] == "batch_not_ready"
    cancel = await http.post("/v1/batches/b1/cancel", json={"user_id": "u"}, headers={"Idempotency-Key": "c"})
    assert cancel.status_code == 409
    assert cancel.json()["error"] == "illegal_transition"
    again = await http.post("/v1/batches/b1/cancel", json={"user_id": "u"}, headers={"Idempotency-Key": "c"})
    assert (again.status_code, again.json()["error"]) == (409, "illegal_transition")
    request = await http.post("/v1/batches/b1/pipelines", json={"requested_pipeline": "nlp", "user_id": "u"})
    assert request.status_code == 409

    after = await service.store.load("b1")
    assert after is not None
    assert (after.status, after.history, after.active_run) == (
        before.status,
        before.history,
        before.active_run,
    )


async def test_held_a_keyed_cancel_is_logged_once_with_who_asked(
    http: httpx.AsyncClient, service: PipelineService, make_ready: MakeReady
) -> None:
    await make_ready("b1")
    run_id = (
        await http.post("/v1/batches/b1/pipelines", json={"requested_pipeline": "nlp", "user_id": "u"})
    ).json()["run_id"]
    body = {"user_id": "alice", "reason": "stuck", "run_id": run_id}
    answers = [
        await http.post("/v1/batches/b1/cancel", json=body, headers={"Idempotency-Key": "t-1"})
        for _ in range(3)
    ]
    assert {(a.status_code, a.json()["run_id"]) for a in answers} == {(202, run_id)}
    rows = [t for t in service.store.transitions("b1") if t.entity == "run" and t.trigger == "cancel"]  # type: ignore[attr-defined]
    assert len(rows) == 1
    assert rows[0].requested_by == "alice"
    assert rows[0].note == "stuck"
