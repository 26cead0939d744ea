"""ids in URL paths that the server routes to another resource."""

from __future__ import annotations

import httpx
import pytest
from pipeline_state_http import HttpSettings, PipelineStateClient, create_app

from pipeline_state import InMemoryStore, ManualClock, PipelineService
from pipeline_state.errors import PipelineStateError
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

from .conftest import BASE

API = "ht-api"


async def _service_with(*batch_ids: str) -> PipelineService:
    """Batches registered the way most are: from the Kafka wire, whose ids may hold ``/``."""
    service = PipelineService(InMemoryStore(), clock=ManualClock())
    env = HuleEduEnvelopes()
    for batch_id in batch_ids:
        await service.handle_message(*env.register(batch_id, items=1))
    return service


async def test_client_refuses_a_slash_in_a_path_id() -> None:
    """Was a defect (fixed): A batch registered from the wire as ``a/history`` (wire ids may
    hold ``/``; only the HTTP registration refuses it) next to a batch ``a``.
    ``client.get_batch_view("a/history")`` sends ``/v1/batches/a%2Fhistory``; the server decodes
    ``%2F`` before routing and answers ``GET /v1/batches/a/history``: batch ``a``'s history
    page, which the client returns as the view of ``a/history`` (``{"batch_id": "a", ...}``).
    Expected, as for the fixed ``.``/``..`` ids (test_http_path_ids.py): that batch's own view,
    or a clear refusal, never another batch's data. Cause: client.py ``_seg`` sends ``/`` as
    ``%2F``, which no ASGI server keeps apart from ``/``; fix: refuse a path id containing ``/``
    in ``_seg`` (raise ``InvalidMessageError``), and/or have the app answer 404 when
    ``scope["raw_path"]`` holds ``%2F`` under ``/v1/batches/``."""
    service = await _service_with("a", "a/history")
    assert await service.store.load("a/history") is not None
    app = create_app(service, settings=HttpSettings(api_token=API))
    async with PipelineStateClient(BASE, token=API, transport=httpx.ASGITransport(app=app)) as client:  # type: ignore[arg-type]
        try:
            view = await client.get_batch_view("a/history")
        except PipelineStateError:
            return  # refused: fine
    assert view.get("batch_id") == "a/history", f"get_batch_view('a/history') answered {view}"


@pytest.mark.parametrize(
    "path",
    [
        "/v1/batches/a%2Fcancel/pipelines",
        "/v1/batches/a/pipelines/nlp%2F..%2F..%2Fcancel/preflight",
        "/v1/batches/a%2F..%2Fb/cancel",
        "/v1/batches/..%2Fb/cancel",
        "/v1/batches/%2e%2e/cancel",
    ],
)
async def test_encoded_slashes_and_dots_never_reach_another_write_route(path: str) -> None:
    """A write request whose path hides ``/`` or ``..`` in an id reaches no write route of
    another batch: nothing is cancelled or started anywhere. (A path that decodes to a real
    route, ``/internal%2Fv1/phases/complete``, is that route, token check included.)"""
    service = await _service_with("a", "b")
    env = HuleEduEnvelopes()
    for batch_id in ("a", "b"):
        await service.handle_message(*env.provisioned(batch_id, env.item_ids(batch_id, 1)))
    app = create_app(service, settings=HttpSettings(api_token=API, internal_token="ht-internal"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
        before = {b: (await service.store.load(b)).version for b in ("a", "b")}  # type: ignore[union-attr]
        answer = await http.post(
            path,
            json={
                "requested_pipeline": "nlp",
                "user_id": "t",
                "batch_id": "b",
                "phase_name": "spellcheck",
                "success": True,
            },
            headers={"Authorization": f"Bearer {API}"},
        )
        assert answer.status_code in (404, 405, 422), (path, answer.status_code, answer.text)
        after = {b: (await service.store.load(b)).version for b in ("a", "b")}  # type: ignore[union-attr]
    assert after == before
