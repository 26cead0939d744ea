"""Found by an attack on the HTTP adapter's operator and write routes (cancel, retry-phase,
pipeline requests) racing the service's own processing of the same batch, with and without
an Idempotency-Key, on the in-memory store and a SQLite file. The first four tests were
defects (fixed; each failed before), the others held.

Every test builds the real app (``create_app``) over a real ``PipelineService`` and drives
it through ``httpx.AsyncClient`` over ``ASGITransport`` (``tests/http/conftest.py``'s
``authed_client``); concurrency is ``asyncio.gather``. Outgoing events are counted through
the real outbox relay into an ``InMemoryBus``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pipeline_state_http import HttpSettings, create_app

from pipeline_state import ManualClock, PipelineService
from pipeline_state.profiles.huleedu.events import Topic

from .conftest import INTERNAL_TOKEN, OPS_TOKEN, TOKENS, authed_client, bearer
from .serving import _store
from .test_http_concurrency_attacks import World as ConcurrencyWorld

pytestmark = pytest.mark.timeout(120)

NLP = {"requested_pipeline": "nlp", "user_id": "t"}
CJ = {"requested_pipeline": "cj_assessment", "user_id": "t"}  # not pruned after an nlp run


def key(value: str) -> dict[str, str]:
    return {"Idempotency-Key": value}


@pytest.fixture(params=["memory", "sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class World(ConcurrencyWorld):
    """The concurrency attacks' world, with whole runs reported and completions read."""

    async def finish(self, batch_id: str, run: dict[str, Any], essays: int = 2) -> None:
        """Report every phase of ``run`` as the workers would (ELS outcomes)."""
        items = self.env.item_ids(batch_id, essays)
        for phase in run["resolved_pipeline"]:
            await self.service.handle_message(
                *self.env.outcome(batch_id, phase, run["correlation_id"], processed=items)
            )

    async def completions(self, batch_id: str) -> list[dict[str, Any]]:
        await self.relay.drain()
        return [
            m.as_dict()
            for m in self.bus.messages()
            if m.topic == Topic.PIPELINE_COMPLETED.value and m.key == batch_id
        ]


@contextlib.asynccontextmanager
async def world(backend: str, tmp_path: Path) -> AsyncIterator[World]:
    async with _store(backend, tmp_path, None) as store:
        service = PipelineService(store, clock=ManualClock())
        app = create_app(service, settings=HttpSettings(**TOKENS))
        async with authed_client(app) as http:
            yield World(service, http)


def documented(answers: list[httpx.Response]) -> None:
    for a in answers:
        assert a.status_code < 500, (a.status_code, a.text)
        assert a.headers["content-type"].startswith("application/json"), a.text
        assert "Traceback" not in a.text, a.text
        assert "sqlalchemy" not in a.text.lower(), a.text


# ----------------------------------------------------------------- were defects (fixed)
async def test_a_refused_keyed_cancel_replayed_later_is_refused_again(backend: str, tmp_path: Path) -> None:
    """Was a defect (fixed): a keyed cancel that found no active run answered 409
    ``illegal_transition`` and recorded nothing, so its repeat (same Idempotency-Key and
    body, a plain retry) after a teacher started a new run answered 202 and cancelled that
    run. The refusal is now recorded under the key: the repeat answers the same 409."""
    async with world(backend, tmp_path) as w:
        await w.ready("b1")
        first = await w.http.post("/v1/batches/b1/cancel", json={"reason": "stuck"}, headers=key("op-1"))
        assert (first.status_code, first.json()["error"]) == (409, "illegal_transition")

        run = (await w.http.post("/v1/batches/b1/pipelines", json=NLP)).json()
        again = await w.http.post("/v1/batches/b1/cancel", json={"reason": "stuck"}, headers=key("op-1"))
        documented([first, again])

        state = await w.service.get_batch("b1")
        assert state.active_run is not None
        assert state.active_run.run_id == run["run_id"], (
            f"the replayed cancel (answer {again.status_code} {again.text}) cancelled the new run"
        )
        assert again.status_code == first.status_code
        assert await w.completions("b1") == []


async def test_a_keyed_cancel_that_lost_to_the_last_outcome_spares_the_next_run_on_retry(
    backend: str, tmp_path: Path
) -> None:
    """Was a defect (fixed): an operator's keyed cancel races the outcome that completes the
    run. Whichever wins, a retry of that cancel (same key and body) after the teacher started
    the next run must answer as the first and not touch the next run; when the outcome won,
    the refused cancel was not recorded and its retry cancelled the next run."""
    async with world(backend, tmp_path) as w:
        cancelled_next: list[str] = []
        for i in range(4):
            b = f"b{i}"
            await w.ready(b)
            run1 = (await w.http.post(f"/v1/batches/{b}/pipelines", json=NLP)).json()
            items = w.env.item_ids(b, 2)
            await w.service.handle_message(
                *w.env.outcome(b, "spellcheck", run1["correlation_id"], processed=items)
            )
            last = w.env.outcome(b, "nlp", run1["correlation_id"], processed=items)
            if i % 2 == 0:  # outcome first in the gather, then cancel first
                _, cancel = await asyncio.gather(
                    w.service.handle_message(*last),
                    w.http.post(f"/v1/batches/{b}/cancel", json={}, headers=key(f"c-{b}")),
                )
            else:
                cancel, _ = await asyncio.gather(
                    w.http.post(f"/v1/batches/{b}/cancel", json={}, headers=key(f"c-{b}")),
                    w.service.handle_message(*last),
                )
            documented([cancel])
            assert len(await w.completions(b)) == 1  # run 1 completed exactly once
            run2 = await w.http.post(f"/v1/batches/{b}/pipelines", json=CJ)
            assert run2.status_code == 202, run2.text
            retry = await w.http.post(f"/v1/batches/{b}/cancel", json={}, headers=key(f"c-{b}"))
            documented([retry])
            state = await w.service.get_batch(b)
            if state.active_run is None or state.active_run.run_id != run2.json()["run_id"]:
                cancelled_next.append(f"{b}: first {cancel.status_code}, retry {retry.status_code}")
            elif (retry.status_code, retry.json().get("run_id")) != (
                cancel.status_code,
                cancel.json().get("run_id"),
            ):
                cancelled_next.append(f"{b}: answers differ: {cancel.text} / {retry.text}")
        assert cancelled_next == []


async def test_a_cancel_naming_its_run_is_refused_once_another_run_is_active(
    backend: str, tmp_path: Path
) -> None:
    """Was a defect (fixed): an operator sees run A stalled and sends a cancel naming it
    (``{"run_id": A}``); meanwhile A finished and the teacher started run B. The HTTP body
    dropped ``run_id`` (unknown fields are ignored) and the late cancel cancelled B. The body
    now takes ``run_id`` and the core's ``CancelRun(run_id=A)`` refuses it."""
    async with world(backend, tmp_path) as w:
        await w.ready("b1")
        run_a = (await w.http.post("/v1/batches/b1/pipelines", json=NLP)).json()
        seen = (await w.http.get("/v1/batches/b1")).json()
        assert seen["active_run"]["run_id"] == run_a["run_id"]
        await w.finish("b1", run_a)  # A completes while the operator decides
        run_b = (await w.http.post("/v1/batches/b1/pipelines", json=CJ)).json()
        assert run_b["resolved_pipeline"] == ["cj_assessment"]

        body = {"run_id": run_a["run_id"], "reason": "A stalled"}
        late = await w.http.post("/v1/batches/b1/cancel", json=body)
        documented([late])
        state = await w.service.get_batch("b1")
        assert state.active_run is not None
        assert state.active_run.run_id == run_b["run_id"], (
            f"a cancel naming run A ({late.status_code} {late.text}) cancelled run B"
        )
        assert late.status_code in (400, 409, 422)


async def test_a_replayed_cancel_answers_the_correlation_id_it_was_handled_with(
    backend: str, tmp_path: Path
) -> None:
    """Was a defect (fixed): a keyed cancel replayed with another X-Correlation-ID answered
    the new header's id, which no event of the cancellation carries (a replayed pipeline
    request answers the stored run's). It now answers the id the log recorded."""
    async with world(backend, tmp_path) as w:
        await w.ready("b1")
        await w.http.post("/v1/batches/b1/pipelines", json=NLP)
        c1 = "11111111-1111-4111-8111-111111111111"
        c2 = "22222222-2222-4222-8222-222222222222"
        first = await w.http.post(
            "/v1/batches/b1/cancel", json={}, headers={**key("c"), "X-Correlation-ID": c1}
        )
        again = await w.http.post(
            "/v1/batches/b1/cancel", json={}, headers={**key("c"), "X-Correlation-ID": c2}
        )
        documented([first, again])
        assert first.status_code == again.status_code == 202
        assert again.json() == first.json()


async def test_a_keyed_retry_refused_for_an_unknown_batch_is_refused_again_once_it_exists(
    backend: str, tmp_path: Path
) -> None:
    """Was a defect (fixed, same cause as the cancel's): a keyed retry-phase on a batch not
    registered yet answered 404; repeated with the same key once the batch was ready, it
    started a run. The repeat now answers the same 404 and starts nothing; a new key does."""
    async with world(backend, tmp_path) as w:
        retry = {"phase_name": "spellcheck", "user_id": "t"}
        first = await w.http.post("/v1/batches/b9/retry-phase", json=retry, headers=key("r-1"))
        assert (first.status_code, first.json()["error"]) == (404, "batch_not_found")
        await w.ready("b9")
        again = await w.http.post("/v1/batches/b9/retry-phase", json=retry, headers=key("r-1"))
        assert (again.status_code, again.json()["error"]) == (404, "batch_not_found"), again.text
        assert again.json()["context"]["refused_as"] == "BatchNotFoundError"
        assert (await w.service.get_batch("b9")).active_run is None
        fresh = await w.http.post("/v1/batches/b9/retry-phase", json=retry, headers=key("r-2"))
        assert fresh.status_code == 202, fresh.text


async def test_a_retry_naming_the_runs_it_saw_is_refused_after_another_run(
    backend: str, tmp_path: Path
) -> None:
    """The retry-phase body takes ``after_runs`` (the archived runs the caller saw), as the
    CLI sends it: once another run was archived since, the retry is refused (400) and starts
    nothing; with the count the caller now sees it applies."""
    async with world(backend, tmp_path) as w:
        await w.ready("b1")
        run = (await w.http.post("/v1/batches/b1/pipelines", json=NLP)).json()
        await w.finish("b1", run)
        retry = {"phase_name": "spellcheck", "user_id": "t", "after_runs": 0}
        late = await w.http.post("/v1/batches/b1/retry-phase", json=retry)
        assert (late.status_code, late.json()["error"]) == (400, "bad_command"), late.text
        assert (await w.service.get_batch("b1")).active_run is None
        current = await w.http.post("/v1/batches/b1/retry-phase", json={**retry, "after_runs": 1})
        assert current.status_code == 202, current.text
        bad = await w.http.post("/v1/batches/b1/retry-phase", json={**retry, "after_runs": -1})
        assert bad.status_code == 422


async def test_a_replayed_refusal_answers_the_status_of_the_error_it_recorded(
    backend: str, tmp_path: Path
) -> None:
    """A keyed cancel naming another run than the active one is refused (400
    ``bad_command``); its replay answers the same status and code, the recorded error named
    in ``context.refused_as``, and the active run is untouched."""
    async with world(backend, tmp_path) as w:
        await w.ready("b1")
        run = (await w.http.post("/v1/batches/b1/pipelines", json=NLP)).json()
        body = {"run_id": "not-this-run"}
        first = await w.http.post("/v1/batches/b1/cancel", json=body, headers=key("u-1"))
        again = await w.http.post("/v1/batches/b1/cancel", json=body, headers=key("u-1"))
        assert (first.status_code, first.json()["error"]) == (400, "bad_command"), first.text
        assert (again.status_code, again.json()["error"]) == (400, "bad_command"), again.text
        assert again.json()["context"]["refused_as"] == "BadCommandError"
        state = await w.service.get_batch("b1")
        assert state.active_run is not None
        assert state.active_run.run_id == run["run_id"]


# -------------------------------------------------------------------------------- held
async def test_parallel_keyed_cancels_race_the_last_outcome(backend: str, tmp_path: Path) -> None:
    """Held: 6 copies of one keyed cancel racing the run's last outcome: the copies all
    answer the same (all 202 naming the run, or all 409), the run completes exactly once
    (one BatchPipelineCompletedV1, one history entry, one completion event id)."""
    async with world(backend, tmp_path) as w:
        for i in range(3):
            b = f"p{i}"
            await w.ready(b)
            run = (await w.http.post(f"/v1/batches/{b}/pipelines", json=NLP)).json()
            items = w.env.item_ids(b, 2)
            await w.service.handle_message(
                *w.env.outcome(b, "spellcheck", run["correlation_id"], processed=items)
            )
            cancels = [w.http.post(f"/v1/batches/{b}/cancel", json={}, headers=key("same")) for _ in range(6)]
            results = await asyncio.gather(
                *cancels[:3],
                w.service.handle_message(*w.env.outcome(b, "nlp", run["correlation_id"], processed=items)),
                *cancels[3:],
            )
            answers = [r for r in results if isinstance(r, httpx.Response)]
            documented(answers)
            assert len({(a.status_code, a.json().get("run_id")) for a in answers}) == 1, [
                a.text for a in answers
            ]
            state = await w.service.get_batch(b)
            assert state.active_run is None
            assert len(state.history) == 1
            done = await w.completions(b)
            assert len(done) == 1
            assert len({m["value"]["event_id"] for m in done}) == 1
            assert done[0]["value"]["data"]["run_id"] == run["run_id"]


async def test_retry_racing_pipeline_request_one_run_each_completes_once(
    backend: str, tmp_path: Path
) -> None:
    """Held: a keyed retry-phase and a keyed pipeline request racing on a ready batch:
    exactly one is accepted, the other is a documented 409 denial; replays of both keys
    answer the same; the accepted run completes exactly once."""
    async with world(backend, tmp_path) as w:
        await w.ready("b1")
        retry = {"phase_name": "spellcheck", "user_id": "t"}

        def both() -> list[Any]:
            return [
                w.http.post("/v1/batches/b1/retry-phase", json=retry, headers=key("r")),
                w.http.post("/v1/batches/b1/pipelines", json=NLP, headers=key("p")),
            ]

        first = await asyncio.gather(*both())
        documented(first)
        assert sorted(a.status_code for a in first) == [202, 409], [a.text for a in first]
        winner = next(a for a in first if a.status_code == 202).json()
        await w.finish("b1", winner)
        replay = await asyncio.gather(*both())
        assert [(a.status_code, a.json().get("run_id") or a.json().get("denial_reason")) for a in replay] == [
            (a.status_code, a.json().get("run_id") or a.json().get("denial_reason")) for a in first
        ]
        state = await w.service.get_batch("b1")
        assert state.active_run is None
        assert [r.run_id for r in state.history] == [winner["run_id"]]
        assert [m["value"]["data"]["run_id"] for m in await w.completions("b1")] == [winner["run_id"]]


async def test_a_key_never_replays_across_batches_or_routes(backend: str, tmp_path: Path) -> None:
    """Held: key K cancelled b1's run; K on b2's cancel (no run there) is b2's own request
    (409, not b1's 202 nor b1's run id); K on b1's pipelines route is a new request
    (starts a run, b1 being ready again), and a percent-encoded path to b1 with K replays
    the b1 answer instead of acting a second time."""
    async with world(backend, tmp_path) as w:
        await w.ready("b1")
        await w.ready("b2")
        run = (await w.http.post("/v1/batches/b1/pipelines", json=NLP)).json()
        c1 = await w.http.post("/v1/batches/b1/cancel", json={}, headers=key("K"))
        assert (c1.status_code, c1.json()["run_id"]) == (202, run["run_id"])
        c2 = await w.http.post("/v1/batches/b2/cancel", json={}, headers=key("K"))
        assert c2.status_code == 409
        assert run["run_id"] not in c2.text
        p1 = await w.http.post("/v1/batches/b1/pipelines", json=NLP, headers=key("K"))
        assert p1.status_code == 202
        assert p1.json()["run_id"] != run["run_id"]
        p1_encoded = await w.http.post("/v1/batches/%621/pipelines", json=NLP, headers=key("K"))
        documented([c1, c2, p1, p1_encoded])
        assert (p1_encoded.status_code, p1_encoded.json()) == (202, p1.json())
        state = await w.service.get_batch("b1")
        assert state.active_run is not None
        assert state.active_run.run_id == p1.json()["run_id"]


async def test_wrong_tokens_racing_an_operator_never_reach_the_batch(backend: str, tmp_path: Path) -> None:
    """Held: cancels and retries sent with no token, the ops token, the internal token or a
    near-miss token, in parallel with a legitimate pipeline request, all answer 401 with
    the fixed body; the accepted run stays active and nothing completes."""
    async with world(backend, tmp_path) as w:
        await w.ready("b1")
        bad = [
            {"Authorization": ""},
            bearer(OPS_TOKEN),
            bearer(INTERNAL_TOKEN),
            bearer("test-api-toke"),
            bearer("test-api-tokeN"),
            {"Authorization": "Basic dGVzdC1hcGktdG9rZW4="},
        ]
        ok = w.http.post("/v1/batches/b1/pipelines", json=NLP)
        attacks = [
            w.http.post(path, json=body, headers={**h, **key("x")})
            for h in bad
            for path, body in (
                ("/v1/batches/b1/cancel", {}),
                ("/v1/batches/b1/retry-phase", {"phase_name": "spellcheck", "user_id": "t"}),
            )
        ]
        results = await asyncio.gather(*attacks[:6], ok, *attacks[6:])
        accepted = results[6]
        refused = results[:6] + results[7:]
        assert accepted.status_code == 202, accepted.text
        for r in refused:
            assert r.status_code == 401, (r.request.headers.get("authorization"), r.text)
            assert r.json()["error"] == "unauthorized"
            assert "b1" not in r.text
        state = await w.service.get_batch("b1")
        assert state.active_run is not None
        assert state.active_run.run_id == accepted.json()["run_id"]
        assert await w.completions("b1") == []


async def test_parallel_keyed_recorded_completions_one_effect(backend: str, tmp_path: Path) -> None:
    """Held: 6 parallel copies of one keyed out-of-band completion on a ready batch (which
    records it as a run of its own) answer one identical body and leave one archived run;
    a later copy publishes nothing more."""
    async with world(backend, tmp_path) as w:
        await w.ready("b1")
        done = {"batch_id": "b1", "phase_name": "spellcheck", "success": True}
        answers = await asyncio.gather(
            *(w.http.post("/internal/v1/phases/complete", json=done, headers=key("oob")) for _ in range(6))
        )
        documented(answers)
        assert {a.status_code for a in answers} == {200}
        assert len({a.text for a in answers}) == 1, [a.text for a in answers]
        state = await w.service.get_batch("b1")
        assert state.active_run is None
        assert len(state.history) == 1
        await w.relay.drain()
        published = len(w.bus.messages())
        again = await w.http.post("/internal/v1/phases/complete", json=done, headers=key("oob"))
        assert again.text == answers[0].text
        await w.relay.drain()
        assert len(w.bus.messages()) == published
        assert len((await w.service.get_batch("b1")).history) == 1
