"""The API is store-agnostic: the same flow, idempotent replays included, on the SQLite store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from pipeline_state_http import HttpSettings, PipelineDeniedError, PipelineStateClient, create_app

from pipeline_state import ManualClock, PipelineService
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from tests.optional import require

from .conftest import API_TOKEN, BASE, INTERNAL_TOKEN, TOKENS, authed_client

require("aiosqlite")
from pipeline_state_sql import SqlStore, open_store  # noqa: E402 (after require)


@pytest.fixture
async def sql_service(tmp_path: Path) -> AsyncIterator[PipelineService]:
    store: SqlStore = await open_store(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
    try:
        yield PipelineService(store, clock=ManualClock())
    finally:
        await store.close()


async def test_the_api_on_the_sqlite_store(sql_service: PipelineService) -> None:
    app = create_app(sql_service, settings=HttpSettings(**TOKENS))
    env = HuleEduEnvelopes()
    transport = httpx.ASGITransport(app=app)
    tokens = {"token": API_TOKEN, "internal_token": INTERNAL_TOKEN}
    async with (
        PipelineStateClient(BASE, transport=transport, **tokens) as client,
        authed_client(app) as http,
    ):
        reg = {
            "batch_id": "s1",
            "expected_essay_count": 2,
            "essay_ids": ["s1-e0", "s1-e1"],
            "user_id": "t",
            "course_code": "ENG5",
            "student_prompt_ref": "p",
        }
        assert (await client.register(reg, idempotency_key="r")).status == "awaiting_content_validation"
        await sql_service.handle_message(*env.provisioned("s1", ["s1-e0", "s1-e1"]))
        first = await client.request_pipeline("s1", "nlp", user_id="t", idempotency_key="k")
        again = await client.request_pipeline("s1", "nlp", user_id="t", idempotency_key="k")
        assert again == first
        with pytest.raises(PipelineDeniedError) as busy:
            await client.request_pipeline("s1", "nlp", user_id="t")
        assert busy.value.status_code == 409
        snap = await client.get_batch("s1")
        assert snap.active_run is not None
        assert snap.active_run.run_id == first.run_id
        cancelled = await client.cancel("s1", idempotency_key="c")
        assert await client.cancel("s1", idempotency_key="c") == cancelled
        assert cancelled.run_id == first.run_id
        page = await client.history("s1")
        assert [r.final_status for r in page.items] == ["cancelled"]
        recorded = await client.record_phase_completion("s1", "spellcheck", success=True)
        define = await client.define_pipeline("s1", "nlp", correlation_id=first.correlation_id)
        assert define.final_pipeline == ["nlp"]
        assert recorded.outcome == "applied"
        preflight = await client.preflight("s1", "ai_feedback")
        assert preflight.skipped_phases == ["spellcheck"]
        page_html = await client.status_page("s1")
        assert "<svg" in page_html
        assert "cancelled" in page_html
        assert (await http.get("/healthz")).status_code == 200


@pytest.mark.postgres
def test_bad_ids_on_postgresql_are_422_not_503() -> None:
    """PostgreSQL refuses NUL in text and ids longer than its columns: such input used to
    reach it and come back as 503 "retry later" with an ERROR traceback."""
    from .serving import served

    registration = {"expected_essay_count": 1, "user_id": "t", "course_code": "ENG5"}
    with (
        served("postgres", HttpSettings(**TOKENS)) as url,
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {API_TOKEN}"}) as http,
    ):
        for path in ("/v1/batches/a%00b", "/v1/batches/" + "x" * 300, "/v1/batches/a%00b/history"):
            answer = http.get(path)
            assert answer.status_code == 422, (path, answer.text)
        for batch_id in ("a\x00b", "y" * 300):
            answer = http.post("/v1/batches/register", json={"batch_id": batch_id, **registration})
            assert answer.status_code == 422, answer.text
            assert "retry" not in answer.text
        assert http.post("/v1/batches/register", json={"batch_id": "fine", **registration}).status_code == 202
        assert http.get("/v1/batches/fine").status_code == 200
