"""Found by an attack (held): two ``pipeline-state dlq reinject`` processes racing a real
``serve`` (test broker; SQLite and PostgreSQL) that consumes the originals of the same
letters: each letter applies once across the three, each run has one completion event id,
and serve admits new requests afterwards.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from ops_kit import (
    COMPLETED,
    Db,
    Ran,
    cli,
    dead_letter,
    deliver,
    loaded,
    reinject_args,
    seed_nlp_runs,
    serving,
)
from pipeline_state_kafka import ProducerLike
from pipeline_state_kafka.testing import Collector, LocalBroker, send_envelopes

from pipeline_state import BatchStatus
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]


# ---------------------------------------------------------------------------------------------

BATCHES = ["d1", "d2", "d3", "d4"]


async def test_two_reinjects_racing_serve_on_the_originals_complete_each_run_once(
    broker: LocalBroker, prefix: str, producer: ProducerLike, tmp_path: Path, db: Db
) -> None:
    env = HuleEduEnvelopes()
    async with (
        serving(broker, db, prefix, tmp_path) as serve,
        Collector(broker.bootstrap, [COMPLETED], topic_prefix=prefix) as out,
    ):
        corr = await seed_nlp_runs(serve, producer, prefix, env, BATCHES)
        runs = {}
        for b in BATCHES:
            state, _ = await loaded(db, b)
            assert state.active_run is not None
            runs[b] = state.active_run.run_id
        last = [env.outcome(b, "nlp", corr[b], processed=env.item_ids(b, 2)) for b in BATCHES]
        await dead_letter(producer, prefix, last)

        async def later(delay: float, delivery: tuple[str, dict[str, Any]]) -> None:
            await asyncio.sleep(delay)  # around the CLIs' start-up: some originals win, some lose
            await send_envelopes(producer, [delivery], topic_prefix=prefix)

        args = reinject_args(broker, prefix)
        results = await asyncio.gather(
            cli(db, *args, actor="erin"),
            cli(db, *args, actor="frank"),
            *(later(d, x) for d, x in zip((0.0, 4.0, 5.5, 9.0), last, strict=True)),
        )
        answers: list[Ran] = list(results[:2])
        await serve.wait_handled({d[1]["event_id"] for d in last})
        summary = [(a.code, a.out[:1500], a.err[:300]) for a in answers]
        by_event: dict[str, list[str]] = {}
        for a in answers:
            assert a.code == 0, summary
            assert "Traceback" not in a.err
            doc = a.json
            assert doc["failed"] == 0, summary
            assert len(doc["letters"]) == len(BATCHES), summary
            for letter in doc["letters"]:
                assert letter["result"] in ("applied", "duplicate"), summary
                by_event.setdefault(letter["event_id"], []).append(letter["result"])
        served = {
            r["event_id"]: r.get("result")
            for r in serve.find(
                lambda r: str(r.get("msg", "")).startswith("handled") and r.get("batch_id") in BATCHES
            )
            if r.get("event_id") in {d[1]["event_id"] for d in last}
        }
        for _topic, envelope in last:
            eid = envelope["event_id"]
            outcomes = [*by_event.get(eid, []), served.get(eid)]
            assert outcomes.count("applied") == 1, (eid, outcomes, summary)

        for b in BATCHES:
            state, history = await loaded(db, b)
            assert state.active_run is None, b
            assert state.status is BatchStatus.READY_FOR_PIPELINE_EXECUTION, b
            assert [(r.run_id, r.status.value) for r in history] == [(runs[b], "completed_successfully")], b
        await out.wait_for(
            lambda c: set(runs.values()) <= {r.data.get("run_id") for r in c.records},
            within=20,
            what="completions",
        )

        # serve must see the CLI's writes: a new request for every batch is admitted.
        again = [env.request(b, "cj_assessment") for b in BATCHES]
        await deliver(serve, producer, prefix, again)
        for b in BATCHES:
            state, _ = await loaded(db, b)
            assert state.status is BatchStatus.PROCESSING_PIPELINES, b
            assert state.active_run is not None, b
            assert state.active_run.run_id != runs[b]
        await asyncio.sleep(1.0)
        by_run: dict[str, set[str]] = {}
        for r in out.records:
            by_run.setdefault(r.data["run_id"], set()).add(r.event_id or "")
        assert set(by_run) == set(runs.values())
        assert all(len(ids) == 1 for ids in by_run.values()), by_run
