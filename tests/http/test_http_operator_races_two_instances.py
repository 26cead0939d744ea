"""Operator actions over HTTP on one service instance racing outcomes, recorded completions
and deadline sweeps from a second instance on the same database (SQLite file, PostgreSQL
schema): two ``PipelineService`` instances, two stores, two ASGI apps. Each run completes
once and every action answers truthfully (a 202 cancel means a run that ended
``cancelled``); keyed replays answer as the first. Without an active run a recorded success
is archived as a one-phase run of its own (documented on ``RecordPhaseCompletion``), so a
cancel and a recording may both apply. (Written by an attack that found no defect here.)"""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path
from typing import Any

import pytest

from pipeline_state import PipelineService
from pipeline_state.profiles.huleedu.events import Topic

from .serving import postgres_url
from .test_http_replay_races import documented, key, two_apps


@pytest.fixture(params=["sqlite", "postgres"])
def shared_db(request: pytest.FixtureRequest) -> tuple[str, str | None]:
    name = str(request.param)
    return name, (postgres_url() if name == "postgres" else None)


pytestmark = pytest.mark.timeout(60)

NLP = {"requested_pipeline": "nlp", "user_id": "t"}
ROUNDS = 8


def _pick(x: Any) -> tuple[Any, ...]:
    body = x.json()
    return (x.status_code, body.get("run_id"), body.get("error"), body.get("denial_reason"))


async def completions(w: Any, batch_id: str) -> list[dict[str, Any]]:
    return await w.messages(Topic.PIPELINE_COMPLETED, batch_id)


async def start(a: Any, b_id: str) -> dict[str, Any]:
    await a.ready(b_id)
    run = await a.http.post(f"/v1/batches/{b_id}/pipelines", json=NLP)
    assert run.status_code == 202, run.text
    body: dict[str, Any] = run.json()
    return body


async def at_nlp(a: Any, b: Any, bid: str) -> tuple[dict[str, Any], list[str]]:
    """Batch ``bid`` started on A and its spellcheck outcome handled by B: the run waits for
    nlp. The run's answer and the batch's items."""
    run = await start(a, bid)
    items = a.env.item_ids(bid, 2)
    await b.service.handle_message(*b.env.outcome(bid, "spellcheck", run["correlation_id"], processed=items))
    return run, items


async def last_try_overdue(b: Any, clock: Any) -> None:
    """B's sweeps use up the re-sends of the active phase; then its deadline passes again."""
    for _ in range(2):
        clock.advance(10 * 24 * 3600)
        await b.service.expire_overdue()
    clock.advance(10 * 24 * 3600)


async def test_cancel_racing_final_outcome_on_other_instance(shared_db: Any, tmp_path: Path) -> None:
    """Cancel on A, last outcome on B: one completion; a 202 cancel means status cancelled,
    a refused cancel means the outcome's status."""
    async with two_apps(shared_db, tmp_path) as (a, b):
        bad: list[str] = []
        for i in range(ROUNDS):
            bid = f"c{i}"
            run, items = await at_nlp(a, b, bid)
            last = b.env.outcome(bid, "nlp", run["correlation_id"], processed=items)
            headers = key(f"k{i}") if i % 2 else {}
            cancel, _ = await asyncio.gather(
                a.http.post(f"/v1/batches/{bid}/cancel", json={"user_id": "op"}, headers=headers),
                b.service.handle_message(*last),
            )
            documented([cancel])
            done = await completions(a, bid)
            if len(done) != 1:
                bad.append(f"{bid}: {len(done)} completions")
                continue
            status = done[0]["value"]["data"]["final_status"]
            if cancel.status_code == 202 and status != "cancelled":
                bad.append(f"{bid}: cancel 202 but {status}")
            if cancel.status_code != 202 and status == "cancelled":
                bad.append(f"{bid}: cancel {cancel.status_code} but cancelled")
            if i % 2:
                again = await b.http.post(
                    f"/v1/batches/{bid}/cancel", json={"user_id": "op"}, headers=headers
                )
                documented([again])
                if (again.status_code, again.json().get("run_id")) != (
                    cancel.status_code,
                    cancel.json().get("run_id"),
                ):
                    bad.append(f"{bid}: replay {again.text} vs {cancel.text}")
        assert bad == []


async def test_record_completion_racing_outcome_on_other_instance(shared_db: Any, tmp_path: Path) -> None:
    """Record-completion (internal) on A for the last phase, the worker's outcome on B at the
    same moment: one completion; the keyed replay of the recording answers as the first."""
    async with two_apps(shared_db, tmp_path) as (a, b):
        bad: list[str] = []
        for i in range(ROUNDS):
            bid = f"r{i}"
            run, items = await at_nlp(a, b, bid)
            body = {"batch_id": bid, "phase_name": "nlp", "success": bool(i % 2)}
            rec, _ = await asyncio.gather(
                a.http.post("/internal/v1/phases/complete", json=body, headers=key(f"pc{i}")),
                b.service.handle_message(*b.env.outcome(bid, "nlp", run["correlation_id"], processed=items)),
            )
            documented([rec])
            done = await completions(a, bid)
            if len(done) != 1:
                bad.append(f"{bid}: {len(done)} completions")
            again = await b.http.post("/internal/v1/phases/complete", json=body, headers=key(f"pc{i}"))
            documented([again])
            if again.json() != rec.json() or again.status_code != rec.status_code:
                bad.append(f"{bid}: replay {again.text} vs {rec.text}")
            if rec.status_code == 200 and rec.json().get("outcome") == "applied" and done:
                status = done[0]["value"]["data"]["final_status"]
                want = "completed_successfully" if i % 2 else "failed_critically"
                if status != want:
                    bad.append(f"{bid}: recorded applied success={i % 2} but {status}")
        assert bad == []


async def test_cancel_racing_deadline_sweep_on_other_instance(shared_db: Any, tmp_path: Path) -> None:
    """Cancel on A while B's sweep fails the overdue last phase: one completion, answer truthful."""
    async with two_apps(shared_db, tmp_path) as (a, b):
        clock = a.service.clock
        bad: list[str] = []
        for i in range(ROUNDS):
            bid = f"d{i}"
            await at_nlp(a, b, bid)
            await last_try_overdue(b, clock)  # the next sweep fails nlp
            cancel, _ = await asyncio.gather(
                a.http.post(f"/v1/batches/{bid}/cancel", json={"user_id": "op"}),
                b.service.expire_overdue(),
            )
            documented([cancel])
            done = await completions(a, bid)
            if len(done) != 1:
                bad.append(f"{bid}: {len(done)} completions ({cancel.status_code})")
                continue
            status = done[0]["value"]["data"]["final_status"]
            if (cancel.status_code == 202) != (status == "cancelled"):
                bad.append(f"{bid}: cancel {cancel.status_code} {cancel.text} but {status}")
        assert bad == []


async def test_retry_twice_different_keys_two_instances(shared_db: Any, tmp_path: Path) -> None:
    """Two keyed retry-phase requests (different keys) on A and B: one run; each key's replay
    answers as its first."""
    async with two_apps(shared_db, tmp_path) as (a, b):
        bad: list[str] = []
        for i in range(ROUNDS):
            bid = f"t{i}"
            run = await start(a, bid)
            items = a.env.item_ids(bid, 2)
            for phase in run["resolved_pipeline"]:
                await b.service.handle_message(
                    *b.env.outcome(bid, phase, run["correlation_id"], processed=items)
                )
            body = {"phase_name": "nlp", "user_id": "op"}
            ka, kb = key(f"ra{i}"), (key(f"ra{i}") if i % 2 else key(f"rb{i}"))
            ra, rb = await asyncio.gather(
                a.http.post(f"/v1/batches/{bid}/retry-phase", json=body, headers=ka),
                b.http.post(f"/v1/batches/{bid}/retry-phase", json=body, headers=kb),
            )
            documented([ra, rb])
            codes = collections.Counter(x.status_code for x in (ra, rb))
            if i % 2:
                if ra.status_code != 202 or ra.json() != rb.json():
                    bad.append(f"{bid}: same key {ra.text} / {rb.text}")
            elif codes[202] != 1:
                bad.append(f"{bid}: {ra.status_code} {ra.text} / {rb.status_code} {rb.text}")
            state = await a.service.get_batch(bid)
            if len(state.history) != 1 or state.active_run is None:
                bad.append(f"{bid}: history {len(state.history)} active {state.active_run}")
            ra2 = await b.http.post(f"/v1/batches/{bid}/retry-phase", json=body, headers=ka)
            same = (ra2.status_code, ra2.json().get("run_id"), ra2.json().get("denial_reason"))
            if same != (ra.status_code, ra.json().get("run_id"), ra.json().get("denial_reason")):
                bad.append(f"{bid}: replay {ra2.text} vs {ra.text}")
        assert bad == []


async def test_record_failure_racing_success_outcome_first_phase(shared_db: Any, tmp_path: Path) -> None:
    """Record-completion success=false of spellcheck on A racing B's successful outcome of it:
    the answer says which applied, and the state agrees."""
    async with two_apps(shared_db, tmp_path) as (a, b):
        bad: list[str] = []
        for i in range(ROUNDS):
            bid = f"f{i}"
            run = await start(a, bid)
            items = a.env.item_ids(bid, 2)
            body = {"batch_id": bid, "phase_name": "spellcheck", "success": False}
            rec, _ = await asyncio.gather(
                a.http.post("/internal/v1/phases/complete", json=body),
                b.service.handle_message(
                    *b.env.outcome(bid, "spellcheck", run["correlation_id"], processed=items)
                ),
            )
            documented([rec])
            done = await completions(a, bid)
            state = await a.service.get_batch(bid)
            applied = rec.status_code == 200 and rec.json().get("outcome") == "applied"
            if applied and len(done) != 1:
                bad.append(f"{bid}: recorded failure applied but {len(done)} completions, {state.status}")
            if not applied and done:
                bad.append(
                    f"{bid}: recording {rec.text} but completed {done[0]['value']['data']['final_status']}"
                )
        assert bad == []


async def test_record_completion_racing_cancel(shared_db: Any, tmp_path: Path) -> None:
    """Cancel on A and record-completion of the last phase on B: one completion, both answers
    truthful."""
    async with two_apps(shared_db, tmp_path) as (a, b):
        bad: list[str] = []
        for i in range(ROUNDS):
            bid = f"x{i}"
            run, _ = await at_nlp(a, b, bid)
            body = {"batch_id": bid, "phase_name": "nlp", "success": True}
            cancel, rec = await asyncio.gather(
                a.http.post(f"/v1/batches/{bid}/cancel", json={}),
                b.http.post("/internal/v1/phases/complete", json=body),
            )
            documented([cancel, rec])
            done = await completions(a, bid)
            if len(done) != 1:
                bad.append(f"{bid}: {len(done)} completions")
                continue
            status = done[0]["value"]["data"]["final_status"]
            # documented: without an active run a recorded success is archived as a
            # one-phase run of its own (RecordPhaseCompletion), so both may apply
            applied_here = (
                rec.json().get("outcome") == "applied" and rec.json().get("run_id") == run["run_id"]
            )
            if (cancel.status_code == 202) == applied_here:
                bad.append(f"{bid}: cancel {cancel.status_code} record {rec.text} -> {status}")
            if applied_here and status != "completed_successfully":
                bad.append(f"{bid}: record applied but {status}")
        assert bad == []


async def test_record_success_racing_failing_sweep(shared_db: Any, tmp_path: Path) -> None:
    """B's sweep fails the overdue nlp phase while A records its success: one completion whose
    status matches the answer."""
    async with two_apps(shared_db, tmp_path) as (a, b):
        clock = a.service.clock
        bad: list[str] = []
        for i in range(ROUNDS):
            bid = f"s{i}"
            run, _ = await at_nlp(a, b, bid)
            await last_try_overdue(b, clock)  # the next sweep fails nlp
            body = {"batch_id": bid, "phase_name": "nlp", "success": True}
            rec, _ = await asyncio.gather(
                a.http.post("/internal/v1/phases/complete", json=body, headers=key(f"s{i}")),
                b.service.expire_overdue(),
            )
            documented([rec])
            done = await completions(a, bid)
            if len(done) != 1:
                bad.append(f"{bid}: {len(done)} completions {rec.text}")
                continue
            status = done[0]["value"]["data"]["final_status"]
            applied_here = (
                rec.json().get("outcome") == "applied" and rec.json().get("run_id") == run["run_id"]
            )
            if applied_here != (status == "completed_successfully"):
                bad.append(f"{bid}: record {rec.text} but {status}")
            again = await b.http.post("/internal/v1/phases/complete", json=body, headers=key(f"s{i}"))
            if (again.status_code, again.json()) != (rec.status_code, rec.json()):
                bad.append(f"{bid}: replay {again.text} vs {rec.text}")
        assert bad == []


async def test_keyed_cancel_copies_on_both_instances_racing_last_outcome(
    shared_db: Any, tmp_path: Path
) -> None:
    """The same keyed cancel sent to A and B (3 copies each) while B handles the last outcome:
    all copies answer alike; one completion; a 202 means cancelled."""
    async with two_apps(shared_db, tmp_path) as (a, b):
        bad: list[str] = []
        for i in range(6):
            bid = f"k{i}"
            run, items = await at_nlp(a, b, bid)
            last = b.env.outcome(bid, "nlp", run["correlation_id"], processed=items)
            hs = [a.http, b.http]
            calls = [
                hs[j % 2].post(f"/v1/batches/{bid}/cancel", json={"user_id": "op"}, headers=key(f"kc{i}"))
                for j in range(6)
            ]
            calls.insert(i % 6, b.service.handle_message(*last))
            got = await asyncio.gather(*calls)
            answers = [x for x in got if hasattr(x, "status_code")]
            documented(answers)
            kinds = {(x.status_code, x.json().get("run_id"), x.json().get("error")) for x in answers}
            if len(kinds) != 1:
                bad.append(f"{bid}: {kinds}")
            done = await completions(a, bid)
            if len(done) != 1:
                bad.append(f"{bid}: {len(done)} completions")
                continue
            status = done[0]["value"]["data"]["final_status"]
            if (answers[0].status_code == 202) != (status == "cancelled"):
                bad.append(f"{bid}: {answers[0].status_code} but {status}")
        assert bad == []


async def test_retry_racing_last_outcome_on_other_instance(shared_db: Any, tmp_path: Path) -> None:
    """A keyed retry-phase on A while B completes the run: either refused (run active) or a new
    run; each run completes once; replay answers the same."""
    async with two_apps(shared_db, tmp_path) as (a, b):
        bad: list[str] = []
        for i in range(ROUNDS):
            bid = f"q{i}"
            run, items = await at_nlp(a, b, bid)
            body = {"phase_name": "spellcheck", "user_id": "op"}
            retry, _ = await asyncio.gather(
                a.http.post(f"/v1/batches/{bid}/retry-phase", json=body, headers=key(f"q{i}")),
                b.service.handle_message(*b.env.outcome(bid, "nlp", run["correlation_id"], processed=items)),
            )
            documented([retry])
            state = await b.service.get_batch(bid)
            if retry.status_code == 202:
                if state.active_run is None or state.active_run.run_id != retry.json()["run_id"]:
                    bad.append(f"{bid}: retry 202 but active {state.active_run}")
            elif state.active_run is not None:
                bad.append(f"{bid}: retry {retry.status_code} but a run is active")
            if len(await completions(a, bid)) != 1:
                bad.append(f"{bid}: completions")
            again = await b.http.post(f"/v1/batches/{bid}/retry-phase", json=body, headers=key(f"q{i}"))
            documented([again])
            if _pick(again) != _pick(retry):
                bad.append(f"{bid}: replay {again.text} vs {retry.text}")
        assert bad == []


async def test_stale_instance_cancel_naming_finished_run(shared_db: Any, tmp_path: Path) -> None:
    """A has read run R; B finishes R and starts S. A's cancel naming R is refused, S runs on,
    and A's snapshot shows S."""
    async with two_apps(shared_db, tmp_path) as (a, b):
        bad: list[str] = []
        for i in range(4):
            bid = f"z{i}"
            run = await start(a, bid)
            seen = (await a.http.get(f"/v1/batches/{bid}")).json()
            assert seen["active_run"]["run_id"] == run["run_id"]
            items = a.env.item_ids(bid, 2)
            for phase in run["resolved_pipeline"]:
                await b.service.handle_message(
                    *b.env.outcome(bid, phase, run["correlation_id"], processed=items)
                )
            nxt = await b.http.post(
                f"/v1/batches/{bid}/pipelines", json={"requested_pipeline": "cj_assessment", "user_id": "t"}
            )
            assert nxt.status_code == 202, nxt.text
            snap = (await a.http.get(f"/v1/batches/{bid}")).json()
            if (snap.get("active_run") or {}).get("run_id") != nxt.json()["run_id"]:
                bad.append(f"{bid}: A's snapshot is stale: {snap.get('active_run')}")
            c = await a.http.post(
                f"/v1/batches/{bid}/cancel",
                json={"run_id": run["run_id"]},
                headers=key(f"z{i}") if i % 2 else {},
            )
            documented([c])
            st = await b.service.get_batch(bid)
            if c.status_code == 202 or st.active_run is None or st.active_run.run_id != nxt.json()["run_id"]:
                bad.append(f"{bid}: cancel {c.status_code} {c.text}")
            rec = await a.http.post(
                "/internal/v1/phases/complete", json={"batch_id": bid, "phase_name": "nlp", "success": False}
            )
            documented([rec])
            if rec.json().get("outcome") == "applied":
                bad.append(f"{bid}: late recorded nlp failure applied to {rec.text}")
        assert bad == []


async def test_archive_and_cancel_racing_acceptance(shared_db: Any, tmp_path: Path) -> None:
    """B archives the batch (or cancels) while A accepts a pipeline request: either the
    request is denied and nothing runs, or the run exists and archive is refused; a cancel
    202 names a run that completes once as cancelled."""
    from pipeline_state._commands import ArchiveBatch
    from pipeline_state.errors import PipelineStateError

    async def archive(svc: PipelineService, bid: str) -> Any:
        try:
            return await svc.execute(ArchiveBatch(bid))
        except PipelineStateError as exc:
            return exc

    async with two_apps(shared_db, tmp_path) as (a, b):
        bad: list[str] = []
        for i in range(ROUNDS):
            bid = f"y{i}"
            await a.ready(bid)
            req, arch, cancel = await asyncio.gather(
                a.http.post(f"/v1/batches/{bid}/pipelines", json=NLP),
                archive(b.service, bid),
                b.http.post(f"/v1/batches/{bid}/cancel", json={}),
            )
            documented([req, cancel])
            st = await a.service.get_batch(bid)
            archived = not isinstance(arch, Exception) and arch.ignored is None
            if archived and req.status_code == 202:
                bad.append(f"{bid}: archived and accepted {req.text} -> {st.status}")
            done = await completions(a, bid)
            if cancel.status_code == 202:
                if (
                    req.status_code != 202
                    or len(done) != 1
                    or done[0]["value"]["data"]["final_status"] != "cancelled"
                ):
                    bad.append(f"{bid}: cancel 202 {cancel.text} req {req.status_code} done {len(done)}")
            elif req.status_code == 202 and st.active_run is None:
                bad.append(f"{bid}: run gone without cancel: {st.status} {len(done)}")
        assert bad == []
