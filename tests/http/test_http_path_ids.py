"""Found by an attack on ids in URL paths: batch ids the API accepted but could not address.

Were defects (fixed; the tests failed before): ``a/b`` registered (202) and then none of its
pages could be reached (``%2F`` is decoded before routing): a batch id with ``/`` is now
refused with 422; ``.`` and ``..`` registered and the package client's requests for them
were normalised into another batch's route (the snapshot of batch ``status``): the client
now sends them encoded.

Held: other URL-special characters (``%``, ``?``, ``#``, ``;``, spaces, ``+``, non-ASCII, a
literal ``%2F``) round-trip through the client.
"""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest
from pipeline_state_http import HttpApiError, HttpSettings, PipelineStateClient, create_app

from pipeline_state import InMemoryStore, ManualClock, PipelineService
from pipeline_state.errors import InvalidMessageError

from .conftest import BASE

pytestmark = pytest.mark.timeout(120)

API, OPS = "w2i-api", "w2i-ops"


def _app() -> tuple[PipelineService, object]:
    service = PipelineService(InMemoryStore(), clock=ManualClock())
    return service, create_app(service, settings=HttpSettings(api_token=API, ops_token=OPS))


def _registration(batch_id: str, owner: str = "t1") -> dict[str, object]:
    return {"batch_id": batch_id, "expected_essay_count": 1, "user_id": owner, "course_code": "ENG5"}


async def test_a_batch_id_with_a_slash_is_refused_at_the_door() -> None:
    """Was a defect: the registration of ``a/b`` answered 202, and since the ASGI path is
    decoded before routing (``a%2Fb`` becomes two segments) the status page, diagram and
    snapshot of ``a/b`` all answered 404 through the package client. Now a batch id with
    ``/`` is refused (422, ``InvalidMessageError`` through the client) and nothing is
    registered."""
    service, app = _app()
    async with PipelineStateClient(BASE, token=API, transport=httpx.ASGITransport(app=app)) as client:  # type: ignore[arg-type]
        with pytest.raises(InvalidMessageError, match=r"body\.batch_id"):
            await client.register(_registration("a/b"))
    assert await service.store.load("a/b") is None


async def test_dot_segment_batch_ids_reach_their_own_batch_through_the_client() -> None:
    """Was a defect, fixed.

    Expected: a batch id is either refused when it cannot be a path segment (``.`` and
    ``..`` are removed by every URL normaliser, RFC 3986 5.2.4), or the client encodes it so
    that it still names that batch (``%2E``). Before the fix: both register (202); the package
    client's ``status_page(".")`` sends ``/v1/batches/./status``, which httpx normalises to
    ``/v1/batches/status``: the answer is the JSON snapshot of the *other* batch ``status``
    (its owner included), returned to the caller as if it were the status page of ``.``
    (client.py ``_seg`` quotes with ``safe=""`` but leaves dots)."""
    _service, app = _app()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=BASE, headers={"Authorization": f"Bearer {API}"}
    ) as http:
        other = await http.post("/v1/batches/register", json=_registration("status", owner="someone-else"))
        assert other.status_code == 202
        dot = await http.post("/v1/batches/register", json=_registration("."))
        if dot.status_code == 422:
            return  # refused at the door: fine
        assert dot.status_code == 202, dot.text
    async with PipelineStateClient(BASE, token=API, transport=httpx.ASGITransport(app=app)) as client:  # type: ignore[arg-type]
        try:
            page = await client.status_page(".")
        except HttpApiError as exc:
            pytest.fail(f"the status page of registered batch '.' is unreachable: {exc.status_code} {exc}")
    assert "someone-else" not in page, f"status_page('.') returned another batch's data: {page[:200]}"
    assert page.lstrip().startswith("<!DOCTYPE html>"), page[:200]


async def test_percent_encoded_specials_in_ids_round_trip() -> None:
    """Ids with characters that mean something in a URL still name their own batch through
    the package client: the status page and snapshot are that batch's."""
    _, app = _app()
    ids = ["a%2Fb", "q?x=1", "h#frag", "semi;colon", "sp ace", "plus+sign", "ünï©ødé", "%00", "..x", "x.."]
    async with PipelineStateClient(BASE, token=API, transport=httpx.ASGITransport(app=app)) as client:  # type: ignore[arg-type]
        for batch_id in ids:
            owner = f"owner-of-{len(batch_id)}-{ord(batch_id[0])}"
            await client.register(_registration(batch_id, owner=owner))
            snap = await client.get_batch(batch_id)
            assert snap.batch_id == batch_id
            page = await client.status_page(batch_id)
            assert owner in page, batch_id


@pytest.mark.parametrize("char", ["\u2028", "\u2029", "\x85", "\x7f", "\u200e", "\u061c"])
async def test_a_path_id_follows_the_wire_id_rule(char: str) -> None:
    """Was a defect (fixed): the path rule refused C0 controls and bidi embeddings but let
    line separators, C1 controls, DEL and bidi marks through (the wire's ids refuse them):
    ``/v1/batches/a%E2%80%A8b`` reached the store. Now 422 on the path parameter."""
    _, app = _app()
    path = "/v1/batches/" + quote(f"a{char}b", safe="")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:  # type: ignore[arg-type]
        response = await client.get(path, headers={"Authorization": f"Bearer {API}"})
    assert response.status_code == 422, response.text
    assert "batch_id" in response.text
