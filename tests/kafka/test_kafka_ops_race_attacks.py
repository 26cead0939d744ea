"""Found by an attack: operator commands run against the store WHILE ``pipeline-state serve`` (a real
process, over the test broker) consumes outcomes for the same batches, on SQLite and on
PostgreSQL (a fresh schema).

The promise under attack: cross-process concurrency on one store keeps exactly-once, an
operator action racing a run's last outcome either applies or is answered clearly (never
half-applied or applied to something else), exit codes and JSON follow docs/reference/cli.md,
and serve's state cache never serves a state the CLI changed.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from ops_kit import Db, Ran, cli, deliver, seed_nlp_runs, serving, store_of
from pipeline_state_kafka import ProducerLike
from pipeline_state_kafka.testing import Collector, LocalBroker, send_envelopes

from pipeline_state import BatchStatus
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

pytestmark = pytest.mark.kafka


# ---------------------------------------------------------------------------------------------
# Was a defect: run cancel --run A cancelled another run B that started between its check and commit
# ---------------------------------------------------------------------------------------------


async def test_run_cancel_of_a_named_run_never_cancels_the_run_that_replaced_it(
    broker: LocalBroker,
    prefix: str,
    producer: ProducerLike,
    tmp_path: Path,
    db: Db,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``run cancel b1 --run A``: "the run to cancel ...; refused if not active"
    (docs/reference/cli.md), and docs/operations.md: "A cancel is keyed on the run it
    cancels".

    The command checks that A is the active run on a read it made first
    (adapters/pipeline_state_service/ops/actions.py ``cancel_run``: ``get_batch`` then
    ``check_active``), but the command it then runs, ``CancelRun(batch_id, ...)``
    (pipeline_state/_commands.py), does not name the run: ``decide`` cancels whatever run
    is active when the unit of work commits (pipeline_state/_decide/completion.py
    ``cancel_run``). Here serve completes A (its last outcome) and starts B (a new request)
    in that window, as it does when outcomes keep arriving while an operator acts.

    Expected: B is untouched and the command is refused (A is not active any more: exit 3
    "not the active run", or exit 1). Observed: B is cancelled, exit 0 "applied", under the
    event id keyed on A.
    """
    env = HuleEduEnvelopes()
    async with serving(broker, db, prefix, tmp_path) as serve:
        corr = await seed_nlp_runs(serve, producer, prefix, env, ["b1"])
        async with store_of(db) as store:
            state = await store.load("b1")
            assert state is not None
            assert state.active_run is not None
            run_a = state.active_run.run_id

        test_loop = asyncio.get_running_loop()
        raced: dict[str, Any] = {}

        async def race() -> None:
            # serve consumes A's last outcome, then a new request starts run B.
            corr_b = str(uuid.uuid4())
            await deliver(
                serve,
                producer,
                prefix,
                [env.outcome("b1", "nlp", corr["b1"], processed=env.item_ids("b1", 2))],
            )
            await deliver(
                serve, producer, prefix, [env.request("b1", "cj_assessment", correlation_id=corr_b)]
            )
            async with store_of(db) as store:
                now = await store.load("b1")
                assert now is not None
                assert now.active_run is not None
                raced["run_b"] = now.active_run.run_id

        from pipeline_state._service import PipelineService

        original = PipelineService.get_batch

        async def get_batch(self: PipelineService, batch_id: str, *a: Any, **kw: Any) -> Any:
            state = await original(self, batch_id, *a, **kw)
            if not raced:
                # The operator's read is done; the race happens before its commit.
                await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(race(), test_loop))
            return state

        monkeypatch.setattr(PipelineService, "get_batch", get_batch)
        from pipeline_state._cli import main

        capsys.readouterr()
        code = await asyncio.to_thread(main, ["run", "cancel", "b1", "--run", run_a, "--json", *db.args])
        out = capsys.readouterr().out
        monkeypatch.setattr(PipelineService, "get_batch", original)

        async with store_of(db) as store:
            after = await store.load("b1")
            history = await store.history("b1")
        assert after is not None
        run_b = raced["run_b"]
        assert run_b != run_a
        finals = {r.run_id: r.status.value for r in history}
        assert after.active_run is not None, f"exit {code}, {out.strip()}, runs now {finals}"
        assert after.active_run.run_id == run_b, (
            f"run B ({run_b}) was cancelled by `run cancel --run {run_a}`: exit {code}, {out.strip()}, "
            f"runs now {finals}"
        )
        assert code in (1, 3)


# ---------------------------------------------------------------------------------------------
# Held: the real race of run cancel against serve's last outcome; the cache
# ---------------------------------------------------------------------------------------------

BATCHES = ["r1", "r2", "r3", "r4"]


async def test_cancel_racing_the_last_outcome_completes_each_run_once_and_answers_clearly(
    broker: LocalBroker, prefix: str, producer: ProducerLike, tmp_path: Path, db: Db
) -> None:
    """Held (both backends; outcome sends staggered so some cancels win, some lose): each run
    ends once (completed or cancelled), one completion event per run, the CLI's answer
    agrees with what happened, and serve then sees the CLI's state (a new request after the
    race is admitted, not refused on a cached ``processing`` state)."""
    env = HuleEduEnvelopes()
    async with serving(broker, db, prefix, tmp_path) as serve:
        corr = await seed_nlp_runs(serve, producer, prefix, env, BATCHES)
        async with Collector(broker.bootstrap, [Topic.PIPELINE_COMPLETED.value], topic_prefix=prefix) as out:
            async with store_of(db) as store:
                runs = {}
                for b in BATCHES:
                    s = await store.load(b)
                    assert s is not None
                    assert s.active_run is not None
                    runs[b] = s.active_run.run_id

            last = [env.outcome(b, "nlp", corr[b], processed=env.item_ids(b, 2)) for b in BATCHES]
            cancels = [cli(db, "run", "cancel", b, "--json", "--reason", "race") for b in BATCHES]

            async def later(delay: float, delivery: tuple[str, dict[str, Any]]) -> None:
                await asyncio.sleep(delay)  # staggered around a CLI's start-up: some win, some lose
                await send_envelopes(producer, [delivery], topic_prefix=prefix)

            sends = [later(d, x) for d, x in zip((0.0, 3.0, 4.5, 8.0), last, strict=True)]
            results = await asyncio.gather(*cancels, *sends)
            answers: list[Ran] = list(results[: len(BATCHES)])
            await serve.wait_handled({d[1]["event_id"] for d in last})

            async with store_of(db) as store:
                for b, ran in zip(BATCHES, answers, strict=True):
                    history = await store.history(b)
                    state = await store.load(b)
                    assert state is not None
                    assert state.active_run is None
                    assert [r.run_id for r in history] == [runs[b]], (b, history)
                    final = history[0].status.value
                    assert ran.code in (0, 1), (b, ran)
                    assert ran.err.count("\n") <= 1, ran.err
                    if ran.code == 0:
                        doc = ran.json
                        assert doc["result"] == "applied", doc
                        assert doc["run_id"] == runs[b]
                        assert final == "cancelled", (b, final, doc)
                    else:
                        assert final == "completed_successfully", (b, final, ran)
                        if ran.out:
                            assert ran.json["result"].startswith("denied"), ran.out

            want = set(runs.values())
            finals = {}
            async with store_of(db) as store:
                for b in BATCHES:
                    finals[b] = [(r.run_id, r.status.value) for r in await store.history(b)]
            try:
                await out.wait_for(
                    lambda c: want <= {r.data.get("run_id") for r in c.records}, within=20, what="completions"
                )
            except TimeoutError:
                got = [(r.key, r.data.get("run_id"), r.data.get("final_status")) for r in out.records]
                codes = [(a.code, a.out[:300], a.err[:200]) for a in answers]
                raise AssertionError(f"completions missing: got {got}; runs {finals}; cli {codes}") from None

            # serve must now see the CLI's writes: a new request for every batch is admitted.
            again = {b: str(uuid.uuid4()) for b in BATCHES}
            await deliver(
                serve,
                producer,
                prefix,
                [env.request(b, "cj_assessment", correlation_id=again[b]) for b in BATCHES],
            )
            async with store_of(db) as store:
                for b in BATCHES:
                    s = await store.load(b)
                    assert s is not None, b
                    assert s.active_run is not None, b
                    assert s.active_run.run_id != runs[b]
                    assert s.status is BatchStatus.PROCESSING_PIPELINES
        await asyncio.sleep(0.5)
        unique = out.unique()
        by_run: dict[str, list[str]] = {}
        for r in out.records:
            by_run.setdefault(r.data["run_id"], []).append(r.event_id or "")
        for run_id in runs.values():
            assert len(set(by_run[run_id])) == 1, (run_id, by_run[run_id])  # one event id per run
        assert len({r.data["run_id"] for r in unique}) == len(unique)


# ---------------------------------------------------------------------------------------------
# Was a defect: phase retry racing the run's last outcome is keyed on a stale "last finished run"
# ---------------------------------------------------------------------------------------------


async def test_phase_retry_that_raced_the_last_outcome_is_a_duplicate_when_repeated(
    broker: LocalBroker,
    prefix: str,
    producer: ProducerLike,
    tmp_path: Path,
    db: Db,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """docs/operations.md: "running it again is a duplicate in the inbox: the answer is
    `duplicate` with the first run's result, and nothing is done twice ... a retry [is
    keyed] on the phase and the last finished run before it".

    ``phase retry b1 spellcheck`` is issued while run A is still active; serve consumes A's
    last outcome between the command's read and its commit, so the retry applies (exit 0)
    and starts run R. The last finished run before R is A, but the event id was derived
    from the stale read (no finished run: "-"), adapters/pipeline_state_service/ops/actions.py
    ``retry_phase`` (``state.history[-1]`` read before ``run_command``). Running the very same
    command again then derives a new key (A) and is decided as a new retry.

    Expected: the repeat is ``duplicate`` of ``applied`` (exit 0) and nothing else happens.
    Observed: the repeat is a new command, decided and denied while R runs
    (``denied:pipeline_already_active``, exit 1; a denial is never silent:
    pipeline_state/_decide/admission.py ``deny`` emits the profile's denial events).
    """
    env = HuleEduEnvelopes()
    async with serving(broker, db, prefix, tmp_path) as serve:
        corr = await seed_nlp_runs(serve, producer, prefix, env, ["b1"])
        test_loop = asyncio.get_running_loop()
        raced: dict[str, Any] = {}

        async def race() -> None:
            raced["done"] = True
            await deliver(
                serve,
                producer,
                prefix,
                [env.outcome("b1", "nlp", corr["b1"], processed=env.item_ids("b1", 2))],
            )

        from pipeline_state._service import PipelineService

        original = PipelineService.get_batch

        async def get_batch(self: PipelineService, batch_id: str, *a: Any, **kw: Any) -> Any:
            state = await original(self, batch_id, *a, **kw)
            if not raced:
                await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(race(), test_loop))
            return state

        from pipeline_state._cli import main

        argv = ["phase", "retry", "b1", "spellcheck", "--json", "--as", "op", *db.args]
        monkeypatch.setattr(PipelineService, "get_batch", get_batch)
        capsys.readouterr()
        first_code = await asyncio.to_thread(main, argv)
        first = capsys.readouterr()
        monkeypatch.setattr(PipelineService, "get_batch", original)
        # Now: the raced retry is refused whole (a run was archived after it was asked for),
        # so nothing runs under a key that names a stale "last finished run".
        assert first_code == 1, first
        assert "look at the batch again" in first.err
        async with store_of(db) as store:
            after = await store.load("b1")
        assert after is not None
        assert after.active_run is None

        again_code = await asyncio.to_thread(main, argv)  # the operator asks again: it applies
        again = json.loads(capsys.readouterr().out)
        assert (again_code, again["result"]) == (0, "applied"), again
        repeat_code = await asyncio.to_thread(main, argv)  # and a repeat of that is a duplicate
        repeat = json.loads(capsys.readouterr().out)
        assert (repeat_code, repeat["result"], repeat.get("original")) == (0, "duplicate", "applied"), repeat
