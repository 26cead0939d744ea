"""Attacks on the ``already_handled`` rule through the HTTP routes: a keyed request replayed
after the inbox purge forgot its first delivery must get the first answer back."""

from __future__ import annotations

import httpx

from pipeline_state import ManualClock, PipelineService
from pipeline_state.ports import Retention, purge_expired
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

from .conftest import INTERNAL_TOKEN, MakeReady, Outbox, Outcome, bearer

DAY = 86_400.0


def key(value: str) -> dict[str, str]:
    return {"Idempotency-Key": value}


async def _purge(service: PipelineService, clock: ManualClock) -> None:
    clock.advance(31 * DAY)
    assert (await purge_expired(service.store, Retention(), clock.now())).inbox > 0  # type: ignore[arg-type]


async def test_a_recorded_completion_replayed_after_purge_answers_applied(
    http: httpx.AsyncClient, make_ready: MakeReady, service: PipelineService, clock: ManualClock
) -> None:
    """Was a defect (fixed):
    An out-of-band completion recorded on an idle batch (a run of its own), replayed with
    the same key and body after the inbox purge: the first answer was ``applied`` with the
    recorded run's id; the replay must answer the same (and twice). Observed: the replay
    answers ``outcome: ignored:already_handled``."""
    await make_ready("b1")
    body = {"batch_id": "b1", "phase_name": "spellcheck", "success": True}
    headers = {**key("rec-1"), **bearer(INTERNAL_TOKEN)}
    first = await http.post("/internal/v1/phases/complete", json=body, headers=headers)
    assert first.status_code == 200, first.text
    assert first.json()["outcome"] == "applied"
    assert first.json()["run_id"]
    await _purge(service, clock)
    again = await http.post("/internal/v1/phases/complete", json=body, headers=headers)
    assert again.status_code == 200, again.text
    assert len((await service.get_batch("b1")).history) == 1
    assert again.json() == first.json()
    third = await http.post("/internal/v1/phases/complete", json=body, headers=headers)
    assert third.json() == first.json()


async def test_pipeline_request_replayed_after_purge_answers_the_first_run(
    http: httpx.AsyncClient,
    make_ready: MakeReady,
    service: PipelineService,
    clock: ManualClock,
    outcome: Outcome,
    outbox: Outbox,
) -> None:
    """A keyed pipeline request replayed after purge: while its run is active, after it
    completed, and after a later run: 202 with the first answer, nothing published."""
    await make_ready("b1")
    body = {"requested_pipeline": "nlp", "user_id": "t"}
    first = await http.post("/v1/batches/b1/pipelines", json=body, headers=key("k-1"))
    assert first.status_code == 202, first.text
    await _purge(service, clock)
    sent = await outbox()
    active = await http.post("/v1/batches/b1/pipelines", json=body, headers=key("k-1"))
    assert active.status_code == 202, active.text
    assert active.json() == first.json()
    assert await outbox() == sent
    corr = first.json()["correlation_id"]
    await outcome("b1", "spellcheck", corr)
    await outcome("b1", "nlp", corr)
    second = await http.post("/v1/batches/b1/pipelines", json=body, headers=key("k-2"))
    assert second.status_code == 202, second.text
    await outcome("b1", "spellcheck", second.json()["correlation_id"])
    await outcome("b1", "nlp", second.json()["correlation_id"])
    await _purge(service, clock)
    sent = await outbox()
    for _ in range(2):
        late = await http.post("/v1/batches/b1/pipelines", json=body, headers=key("k-1"))
        assert late.status_code == 202, late.text
        assert late.json() == first.json()
    assert await outbox() == sent
    assert len((await service.get_batch("b1")).history) == 2


async def test_retry_replayed_after_purge_answers_the_first_run(
    http: httpx.AsyncClient,
    make_ready: MakeReady,
    service: PipelineService,
    clock: ManualClock,
    outcome: Outcome,
) -> None:
    """A keyed retry (after_runs=1) replayed after its own run was archived and the inbox
    purged: 202 with the first answer, not 409/400 for after_runs."""
    await make_ready("b1")
    body = {"requested_pipeline": "nlp", "user_id": "t"}
    run = (await http.post("/v1/batches/b1/pipelines", json=body, headers=key("k"))).json()
    await outcome(
        "b1",
        "spellcheck",
        run["correlation_id"],
        status="failed_critically",
        processed=[],
        failed=HuleEduEnvelopes().item_ids("b1", 3),
    )
    assert (await service.get_batch("b1")).active_run is None
    retry = {"phase_name": "spellcheck", "user_id": "ops", "retry_reason": "fixed", "after_runs": 1}
    first = await http.post("/v1/batches/b1/retry-phase", json=retry, headers=key("r-1"))
    assert first.status_code == 202, first.text
    await outcome("b1", "spellcheck", first.json()["correlation_id"])
    assert len((await service.get_batch("b1")).history) == 2
    await _purge(service, clock)
    for _ in range(2):
        again = await http.post("/v1/batches/b1/retry-phase", json=retry, headers=key("r-1"))
        assert again.status_code == 202, again.text
        assert again.json() == first.json()
    assert len((await service.get_batch("b1")).history) == 2
