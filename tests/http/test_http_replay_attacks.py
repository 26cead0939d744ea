"""Found by an attack: idempotent replays (same Idempotency-Key and body) must answer what the first
request answered (adapters/pipeline_state_http/README.md, "Correlation and idempotency":
"So a replay answers the same status and body, also after the run has finished")."""

from __future__ import annotations

import httpx

from pipeline_state import ManualClock

from .conftest import MakeReady, Outcome


def key(value: str) -> dict[str, str]:
    return {"Idempotency-Key": value}


NLP = {"requested_pipeline": "nlp", "user_id": "t"}


async def test_replayed_phase_completion_on_active_run_keeps_run_id(
    http: httpx.AsyncClient, make_ready: MakeReady
) -> None:
    """Was a defect: A recorded completion (POST /internal/v1/phases/complete) applied to the active
    run's phase answers `{outcome: "applied", run_id: <active run>}`. Replaying it with the
    same Idempotency-Key and body must answer the same body; it answers `run_id: null`,
    because the replay looks the run up as `derive_id(event_id, "run")`
    (replay.run_of_event), which only names runs the request itself started."""
    await make_ready("b1")
    run = (await http.post("/v1/batches/b1/pipelines", json=NLP)).json()
    done = {"batch_id": "b1", "phase_name": "spellcheck", "success": True}
    first = await http.post("/internal/v1/phases/complete", json=done, headers=key("p"))
    assert (first.json()["outcome"], first.json()["run_id"]) == ("applied", run["run_id"])
    second = await http.post("/internal/v1/phases/complete", json=done, headers=key("p"))
    assert second.status_code == first.status_code
    assert second.json() == first.json()


async def test_replayed_old_cancel_names_its_own_run(
    http: httpx.AsyncClient, make_ready: MakeReady, clock: ManualClock
) -> None:
    """Was a defect: Cancel run 1 with key c1, start and cancel run 2 with key c2, then replay c1:
    the replay must answer run 1's id, as the first answer did. With a clock that gave both
    cancellations the same reading (the test kit's ManualClock, which the fixtures use;
    also any coarse clock) it answers run 2's id: replay.run_of_cancellation picks the
    cancelled run whose completed_at is *nearest* to the inbox entry's processed_at and breaks
    ties towards the newest run, instead of identifying the run the cancel closed."""
    await make_ready("b1")
    run1 = (await http.post("/v1/batches/b1/pipelines", json=NLP)).json()
    c1 = await http.post("/v1/batches/b1/cancel", json={}, headers=key("c1"))
    assert c1.json()["run_id"] == run1["run_id"]
    run2 = (await http.post("/v1/batches/b1/pipelines", json=NLP)).json()
    c2 = await http.post("/v1/batches/b1/cancel", json={}, headers=key("c2"))
    assert c2.json()["run_id"] == run2["run_id"]
    again = await http.post("/v1/batches/b1/cancel", json={}, headers=key("c1"))
    assert again.status_code == 202
    assert again.json() == c1.json()


async def test_replayed_pipeline_after_later_runs(
    http: httpx.AsyncClient, make_ready: MakeReady, outcome: Outcome
) -> None:
    """Held: a keyed pipeline request replayed after its run finished and another run ran
    answers the same body."""
    await make_ready("b1")
    first = (await http.post("/v1/batches/b1/pipelines", json=NLP, headers=key("k"))).json()
    await outcome("b1", "spellcheck", first["correlation_id"])
    await outcome("b1", "nlp", first["correlation_id"])
    other = (
        await http.post(
            "/v1/batches/b1/pipelines", json={"requested_pipeline": "cj_assessment", "user_id": "t"}
        )
    ).json()
    await outcome("b1", "cj_assessment", other["correlation_id"])
    again = await http.post("/v1/batches/b1/pipelines", json=NLP, headers=key("k"))
    assert (again.status_code, again.json()) == (202, first)
