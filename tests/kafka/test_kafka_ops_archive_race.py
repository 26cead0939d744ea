"""Found by an attack (every test held): ``pipeline-state batch archive`` while a real
``serve`` (test broker; SQLite and PostgreSQL) runs the same batches.

Held: an archive is refused (exit 1) while a run is active and applies once it completed,
after which serve, whose cache held the batch, denies the next request; an archive racing
new requests either archives the batch (the request denied) or is refused, leaving one run
that completes once.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from kafka_harness import ServeProcess
from ops_kit import COMPLETED, Db, Ran, cli, deliver, loaded, serving
from pipeline_state_kafka import ProducerLike
from pipeline_state_kafka.testing import Collector, LocalBroker, send_envelopes

from pipeline_state import BatchStatus
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

DENIED = Topic.PIPELINE_DENIED.value


async def ready_batches(
    serve: ServeProcess, producer: ProducerLike, prefix: str, env: HuleEduEnvelopes, batches: list[str]
) -> None:
    await deliver(serve, producer, prefix, [env.register(b, items=2) for b in batches])
    await deliver(serve, producer, prefix, [env.provisioned(b, env.item_ids(b, 2)) for b in batches])


# ---------------------------------------------------------------------------------------------


async def test_archive_refused_while_processing_then_applies_and_serve_denies_the_next_request(
    broker: LocalBroker, prefix: str, producer: ProducerLike, tmp_path: Path, db: Db
) -> None:
    """Archive while a run is active: exit 1, one line, nothing changes, the refusal is not
    recorded under the archive's key. The run's last outcome then completes it once; the
    same archive command now applies (not a duplicate of the refusal); serve, which had the
    batch in its cache as ready, denies the next request (``batch_not_ready``, a
    PipelineDeniedV1) and starts no run; a repeat of the archive is ``duplicate`` (exit 0)."""
    env = HuleEduEnvelopes()
    async with (
        serving(broker, db, prefix, tmp_path) as serve,
        Collector(broker.bootstrap, [COMPLETED, DENIED], topic_prefix=prefix) as out,
    ):
        await ready_batches(serve, producer, prefix, env, ["a1"])
        corr = str(uuid.uuid4())
        items = env.item_ids("a1", 2)
        await deliver(serve, producer, prefix, [env.request("a1", "nlp", correlation_id=corr)])
        await deliver(serve, producer, prefix, [env.outcome("a1", "spellcheck", corr, processed=items)])
        before, _ = await loaded(db, "a1")
        busy = await cli(db, "batch", "archive", "a1", "--json")
        assert busy.code == 1, busy
        assert busy.err.count("\n") == 1
        assert "Traceback" not in busy.err
        during, _ = await loaded(db, "a1")
        assert during.version == before.version
        assert during.status is BatchStatus.PROCESSING_PIPELINES

        await deliver(serve, producer, prefix, [env.outcome("a1", "nlp", corr, processed=items)])
        done, history = await loaded(db, "a1")
        assert done.status is BatchStatus.READY_FOR_PIPELINE_EXECUTION
        assert len(history) == 1
        run_id = history[0].run_id

        archived = await cli(db, "batch", "archive", "a1", "--json", actor="carol")
        assert archived.code == 0, archived
        assert (archived.json["result"], archived.json["status"], archived.json["requested_by"]) == (
            "applied",
            "archived",
            "carol",
        )
        late = env.request("a1", "cj_assessment")
        await deliver(serve, producer, prefix, [late])
        after, history = await loaded(db, "a1")
        assert after.status is BatchStatus.ARCHIVED
        assert after.active_run is None
        assert [r.run_id for r in history] == [run_id]
        await out.wait_for(
            lambda c: any(r.data.get("batch_id") == "a1" for r in c.on(DENIED)),
            within=20,
            what="the denial of the late request",
        )
        (denial,) = out.on(DENIED)
        assert denial.data["denial_reason"] == "batch_not_ready", denial.data
        again = await cli(db, "batch", "archive", "a1", "--json", actor="dave")
        assert (again.code, again.json["result"], again.json["original"]) == (0, "duplicate", "applied")
        await asyncio.sleep(1.0)
        assert [r.data["run_id"] for r in out.on(COMPLETED)] == [run_id]


BATCHES = ["r1", "r2", "r3", "r4"]


async def test_archive_racing_requests_either_archives_or_leaves_one_run_that_completes_once(
    broker: LocalBroker, prefix: str, producer: ProducerLike, tmp_path: Path, db: Db
) -> None:
    """Four ready batches; an archive process per batch starts while each batch's request is
    sent at a staggered moment around it (some archives win, some lose). Each batch ends
    either archived with no run and its request denied (``batch_not_ready``), or with one
    run and the archive refused (exit 1); each such run then completes once, and the batch
    is ready (not archived)."""
    env = HuleEduEnvelopes()
    async with (
        serving(broker, db, prefix, tmp_path) as serve,
        Collector(broker.bootstrap, [COMPLETED, DENIED], topic_prefix=prefix) as out,
    ):
        await ready_batches(serve, producer, prefix, env, BATCHES)
        corr = {b: str(uuid.uuid4()) for b in BATCHES}
        requests = [env.request(b, "nlp", correlation_id=corr[b]) for b in BATCHES]

        async def later(delay: float, delivery: tuple[str, dict[str, Any]]) -> None:
            await asyncio.sleep(delay)
            await send_envelopes(producer, [delivery], topic_prefix=prefix)

        results = await asyncio.gather(
            *(cli(db, "batch", "archive", b, "--json") for b in BATCHES),
            *(later(d, x) for d, x in zip((0.0, 5.5, 6.5, 7.5), requests, strict=True)),
        )
        answers: list[Ran] = list(results[: len(BATCHES)])
        await serve.wait_handled({d[1]["event_id"] for d in requests})
        ran: dict[str, bool] = {}
        for b, answer in zip(BATCHES, answers, strict=True):
            assert "Traceback" not in answer.err, answer
            state, history = await loaded(db, b)
            assert history == [], (b, history)
            if answer.code == 0:
                assert answer.json["result"] == "applied", (b, answer)
                assert state.status is BatchStatus.ARCHIVED, (b, state.status)
                assert state.active_run is None, (b, state.status)
                ran[b] = False
            else:
                assert answer.code == 1, (b, answer)
                assert state.status is BatchStatus.PROCESSING_PIPELINES, b
                assert state.active_run is not None, b
                ran[b] = True
        archived = {b for b, r in ran.items() if not r}
        await out.wait_for(
            lambda c: archived <= {r.data.get("batch_id") for r in c.on(DENIED)}, within=20, what="denials"
        )
        for r in out.on(DENIED):
            assert r.data["batch_id"] in archived, r.data
            assert r.data["denial_reason"] == "batch_not_ready", r.data

        running = [b for b, r in ran.items() if r]
        if running:
            await deliver(
                serve,
                producer,
                prefix,
                [env.outcome(b, "spellcheck", corr[b], processed=env.item_ids(b, 2)) for b in running]
                + [env.outcome(b, "nlp", corr[b], processed=env.item_ids(b, 2)) for b in running],
            )
        runs = {}
        for b in running:
            state, history = await loaded(db, b)
            assert state.status is BatchStatus.READY_FOR_PIPELINE_EXECUTION, (b, state.status)
            assert len(history) == 1, (b, history)
            assert history[0].status.value == "completed_successfully", (b, history)
            runs[b] = history[0].run_id
        await out.wait_for(
            lambda c: set(runs.values()) <= {r.data.get("run_id") for r in c.on(COMPLETED)},
            within=20,
            what="the completions",
        )
        await asyncio.sleep(1.0)
        got = [(r.data["batch_id"], r.data["run_id"], r.event_id) for r in out.on(COMPLETED)]
        assert sorted(got) == sorted({g for g in got}), got
        assert sorted(g[1] for g in got) == sorted(runs.values()), (got, ran)
