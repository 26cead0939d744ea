"""Correlation ids and deadlines over the real broker (issue 11, point 5), in a ``serve``
process on a SQLite file:

* an outcome whose correlation id belongs to no run of the batch (a worker that lost it) is
  applied to the active run, flagged ``correlation_mismatch``, and the run completes;
* an outcome carrying an earlier run's correlation id is ignored (``stale_run``): the run
  stays active until its proper outcome arrives, then completes once;
* a run whose worker never answers has its command re-sent (same event id), then fails at
  its deadline (``timeout``) and completes; the next request for the batch is accepted
  (in-process, with the shipped profile's deadlines shortened through its options).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
from kafka_harness import ServeProcess, fast_settings, running_runner, wait_until
from pipeline_state_kafka import ProducerLike
from pipeline_state_kafka.testing import Collected, Collector, LocalBroker, send_envelopes
from pipeline_state_service import ServiceRunner
from proof_harness import (
    PHASE_OF_TOPIC,
    WATCHED_TOPICS,
    Workers,
    assert_nothing_dead_lettered,
    short_deadlines,
    wait_completed,
)

from pipeline_state import BatchStatus
from pipeline_state.ports import RunStatus
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from tests.optional import require

pytestmark = pytest.mark.kafka


@attrs.define
class Rig:
    serve: ServeProcess
    out: Collector
    workers: Workers
    store_url: str


@asynccontextmanager
async def rig(
    broker: LocalBroker,
    prefix: str,
    producer: ProducerLike,
    tmp: Path,
    workers: Workers,
) -> AsyncIterator[Rig]:
    """A ``serve`` process on a SQLite file, an output collector and the workers; the
    process is stopped with SIGTERM at the end (and killed if anything failed)."""
    store_url = f"sqlite+aiosqlite:///{tmp / 'state.db'}"
    serve = ServeProcess(broker.bootstrap, store_url, prefix, log_file=tmp / "serve.log")
    try:
        serve.start()
        await serve.wait_ready(within=90)
        async with Collector(broker.bootstrap, WATCHED_TOPICS, topic_prefix=prefix) as out, workers:
            yield Rig(serve, out, workers, store_url)
            assert_nothing_dead_lettered(out)
        assert serve.signal(signal.SIGTERM, within=60) == 0, serve.tail()
    finally:
        serve.close()


async def _ready_batch(producer: ProducerLike, prefix: str, env: HuleEduEnvelopes, batch_id: str) -> None:
    await send_envelopes(
        producer,
        [env.register(batch_id, items=2), env.provisioned(batch_id, env.item_ids(batch_id, 2))],
        topic_prefix=prefix,
    )


def _completions(out: Collector, batch_id: str) -> list[Collected]:
    """Distinct completions of ``batch_id`` (by event id), in arrival order."""
    return [r for r in out.unique(Topic.PIPELINE_COMPLETED) if r.data.get("batch_id") == batch_id]


async def _open_store(store_url: str) -> Any:
    """A second store on the service's SQLite file (a reader beside the running service)."""
    from pipeline_state_sql import open_store

    return await open_store(store_url, upgrade=False)


async def test_kafka_foreign_correlation_completes_and_earlier_runs_correlation_does_not(
    broker: LocalBroker, prefix: str, producer: ProducerLike, tmp_path: Path
) -> None:
    require("pipeline_state_sql")
    env = HuleEduEnvelopes()
    foreign: dict[str, str] = {}

    def correlation(command: Collected) -> str:
        # The worker of batch "fx" loses correlation ids: a fresh one on each outcome.
        if command.data.get("batch_id") == "fx":
            fresh = str(uuid.uuid4())
            foreign[str(command.event_id)] = fresh
            return fresh
        return str(command.envelope.get("correlation_id"))

    def answer(command: Collected) -> bool:
        # The second run's cj_assessment of batch "st" is answered by hand below.
        return not (command.data.get("batch_id") == "st" and command.topic == Topic.CJ_ASSESSMENT)

    workers = Workers(broker.bootstrap, prefix, producer, answer=answer, correlation=correlation)
    async with rig(broker, prefix, producer, tmp_path, workers) as r:
        # 1. A foreign correlation id (no run of the batch has it) is applied, and flagged.
        corr_fx = str(uuid.uuid4())
        await _ready_batch(producer, prefix, env, "fx")
        await send_envelopes(
            producer, [env.request("fx", "nlp", correlation_id=corr_fx)], topic_prefix=prefix
        )
        await wait_completed(r.out, ["fx"], within=60)
        (done,) = _completions(r.out, "fx")
        assert done.data["final_status"] == "completed_successfully"
        assert done.data["completed_phases"] == ["spellcheck", "nlp"]
        assert done.data["correlation_id"] == corr_fx  # the run's own, not the worker's
        assert len(foreign) == 2  # both phases were answered with a correlation id of no run
        assert corr_fx not in foreign.values()

        # 2. An earlier run's correlation id is stale: ignored, the run stays active.
        corr_1, corr_2 = str(uuid.uuid4()), str(uuid.uuid4())
        await _ready_batch(producer, prefix, env, "st")
        await send_envelopes(producer, [env.request("st", "nlp", correlation_id=corr_1)], topic_prefix=prefix)
        await wait_completed(r.out, ["st"], within=60)
        # The second run prunes spellcheck and dispatches cj_assessment, held by its worker.
        await send_envelopes(
            producer, [env.request("st", "cj_assessment", correlation_id=corr_2)], topic_prefix=prefix
        )
        await r.out.wait_for(
            lambda c: any(x.data.get("batch_id") == "st" for x in c.on(Topic.CJ_ASSESSMENT)),
            within=60,
            what="the second run's cj_assessment command",
        )
        (command,) = [x for x in r.out.unique(Topic.CJ_ASSESSMENT) if x.data.get("batch_id") == "st"]
        assert command.envelope["correlation_id"] == corr_2
        processed = [e["essay_id"] for e in command.data["essays_to_process"]]
        stale = env.outcome("st", "cj_assessment", corr_1, processed=processed)
        await send_envelopes(producer, [stale], topic_prefix=prefix)
        await r.serve.wait_handled({stale[1]["event_id"]}, within=60)
        await asyncio.sleep(1.5)
        assert len(_completions(r.out, "st")) == 1  # only the first run's
        store = await _open_store(r.store_url)
        try:
            entry = await store.inbox_entry(stale[1]["event_id"])
            assert entry is not None
            assert entry.result == "ignored:stale_run", entry
            state = await store.load("st")
            assert state is not None
            assert state.status is BatchStatus.PROCESSING_PIPELINES
            assert state.active_run is not None
            assert state.active_run.correlation_id == corr_2
            # The foreign outcomes were applied and their moves flagged.
            for event_id in [e for c, e in r.workers.answered if c.data.get("batch_id") == "fx"]:
                applied = await store.inbox_entry(event_id)
                assert applied is not None
                assert applied.result.startswith("applied"), applied
            notes = [getattr(t, "note", None) for t in await store.transitions("fx")]
            assert "correlation_mismatch" in notes, notes
        finally:
            await store.close()
        assert any("correlation_mismatch" in json.dumps(line) for line in r.serve.logs), "no warning logged"

        # The proper outcome completes the second run, once.
        r.workers.release(lambda x: x.data.get("batch_id") == "st")
        await r.out.wait_for(lambda c: len(_completions(c, "st")) == 2, within=60, what="the second run")
        await asyncio.sleep(1.0)
        first, second = _completions(r.out, "st")
        assert (first.data["correlation_id"], second.data["correlation_id"]) == (corr_1, corr_2)
        assert second.data["final_status"] == "completed_successfully"
        assert second.data["completed_phases"] == ["cj_assessment"]
        assert first.data["run_id"] != second.data["run_id"]
        assert r.out.on(Topic.PIPELINE_DENIED) == []


DEADLINE_SECONDS = 2.0
RESENDS = 2


async def test_kafka_silent_worker_fails_the_run_at_its_deadline_and_the_next_request_is_accepted(
    broker: LocalBroker, prefix: str, producer: ProducerLike, tmp_path: Path
) -> None:
    require("pipeline_state_sql")
    env = HuleEduEnvelopes()
    corr_1, corr_2 = str(uuid.uuid4()), str(uuid.uuid4())
    store_url = f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    settings = attrs.evolve(fast_settings(broker.bootstrap, prefix, store_url=store_url), sweep_seconds=0.5)
    # The shipped profile with short deadlines; the service runs in-process on SQLite.
    runner = ServiceRunner(
        settings, service_factory=short_deadlines(settings, DEADLINE_SECONDS, resends=RESENDS)
    )
    # The worker is silent for the first run; it answers the second run's commands.
    workers = Workers(
        broker.bootstrap, prefix, producer, answer=lambda c: c.envelope.get("correlation_id") == corr_2
    )
    async with (
        running_runner(runner, within=60),
        Collector(broker.bootstrap, WATCHED_TOPICS, topic_prefix=prefix) as out,
        workers,
    ):
        await _ready_batch(producer, prefix, env, "dl")
        await send_envelopes(producer, [env.request("dl", "nlp", correlation_id=corr_1)], topic_prefix=prefix)
        # Dispatch, RESENDS re-sends (the same event id), then the phase fails: at worst
        # (RESENDS + 1) deadlines plus sweeps.
        await wait_completed(out, ["dl"], within=DEADLINE_SECONDS * (RESENDS + 1) + 45)
        (done,) = _completions(out, "dl")
        assert done.data["correlation_id"] == corr_1
        assert done.data["final_status"] == "failed_critically"
        assert done.data["phase_results"]["spellcheck"]["status"] == "failed"
        assert "nlp" not in done.data["completed_phases"]

        def copies_of_dl() -> list[Any]:
            return [c for c in workers.commands if c.data.get("batch_id") == "dl"]

        # The workers read with a consumer of their own: the last re-send may reach them
        # after the completion reached the collector.
        with contextlib.suppress(TimeoutError):
            await wait_until(lambda: len(copies_of_dl()) >= 1 + RESENDS, within=15, what="re-sends")
        copies = copies_of_dl()
        assert {PHASE_OF_TOPIC[c.topic] for c in copies} == {"spellcheck"}
        assert len({c.event_id for c in copies}) == 1, "a re-sent command has a new event id"
        assert len(copies) >= 1 + RESENDS, f"{len(copies)} copies, expected {1 + RESENDS}"
        assert runner.opened is not None
        store = runner.opened.store
        state = await store.load("dl")
        assert state is not None
        assert state.status is BatchStatus.READY_FOR_PIPELINE_EXECUTION
        [first] = await store.history("dl")
        spellcheck = next(p for p in first.phases if p.name == "spellcheck")
        assert spellcheck.error == "timeout", spellcheck
        assert first.status is RunStatus.FAILED_CRITICALLY

        # The batch is unblocked: the next request is accepted and runs.
        await send_envelopes(producer, [env.request("dl", "nlp", correlation_id=corr_2)], topic_prefix=prefix)
        await out.wait_for(lambda c: len(_completions(c, "dl")) == 2, within=60, what="the second run")
        assert out.on(Topic.PIPELINE_DENIED) == []
        second = _completions(out, "dl")[1]
        assert second.data["correlation_id"] == corr_2
        assert second.data["final_status"] == "completed_successfully"
        assert second.data["completed_phases"] == ["spellcheck", "nlp"]
        started = [
            n.envelope["correlation_id"]
            for n in out.unique(Topic.TEACHER_NOTIFICATION)
            if n.data.get("notification_type") == "batch_processing_started"
        ]
        assert started == [corr_1, corr_2]
        state = await store.load("dl")
        assert state is not None
        assert state.status is BatchStatus.READY_FOR_PIPELINE_EXECUTION
        assert [r.status for r in await store.history("dl")] == [
            RunStatus.FAILED_CRITICALLY,
            RunStatus.COMPLETED_SUCCESSFULLY,
        ]
        assert_nothing_dead_lettered(out)
        assert runner.stats.dead_lettered == 0
