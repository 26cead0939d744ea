"""Found by an attack (every test held): ``pipeline-state dlq reinject`` of letters that no
longer fit, next to a real ``serve`` (test broker; SQLite and PostgreSQL).

Held: letters of a run the batch has moved past are ignored (exit 0) and leave the current
run alone, whose own letter applies once, logged with who asked; hostile letters
(undecodable bytes and headers, a tombstone, over the size limit, 200-deep JSON, another
topic's envelope, a 300-character batch id, a truncated copy) fail one line each, change
nothing, and the next valid letter still applies.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from ops_kit import (
    COMPLETED,
    OUTCOME,
    Db,
    cli,
    dead_letter,
    deliver,
    loaded,
    reinject_args,
    seed_nlp_runs,
    serving,
    store_of,
)
from pipeline_state_kafka import ProducerLike
from pipeline_state_kafka.testing import Collector, LocalBroker

from pipeline_state import BatchStatus
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]


# ---------------------------------------------------------------------------------------------


async def test_letters_of_a_batch_that_moved_on_are_ignored_and_the_current_one_applies_once(
    broker: LocalBroker, prefix: str, producer: ProducerLike, tmp_path: Path, db: Db
) -> None:
    env = HuleEduEnvelopes()
    async with (
        serving(broker, db, prefix, tmp_path) as serve,
        Collector(broker.bootstrap, [COMPLETED], topic_prefix=prefix) as out,
    ):
        corr_a = (await seed_nlp_runs(serve, producer, prefix, env, ["m1"]))["m1"]
        items = env.item_ids("m1", 2)
        x = env.outcome("m1", "nlp", corr_a, processed=items)  # dead-lettered; a copy completed A
        await deliver(serve, producer, prefix, [env.outcome("m1", "nlp", corr_a, processed=items)])
        _, history = await loaded(db, "m1")
        (run_a,) = [r.run_id for r in history]
        corr_b = str(uuid.uuid4())
        await deliver(serve, producer, prefix, [env.request("m1", "cj_assessment", correlation_id=corr_b)])
        state, _ = await loaded(db, "m1")
        assert state.active_run is not None
        run_b = state.active_run.run_id
        y = env.outcome("m1", "cj_assessment", corr_a, processed=items)  # names the earlier run
        z = env.outcome("m1", "cj_assessment", corr_b, processed=items)  # B's own last outcome
        await dead_letter(producer, prefix, [x, y])
        before, _ = await loaded(db, "m1")

        ignored = await cli(db, *reinject_args(broker, prefix), actor="erin")
        assert ignored.code == 0, ignored
        results = [(d["event_id"], d["result"]) for d in ignored.json["letters"]]
        assert [r[0] for r in results] == [x[1]["event_id"], y[1]["event_id"]]
        assert all(r[1].startswith("ignored") for r in results), results
        after, _ = await loaded(db, "m1")
        assert after.active_run is not None
        assert after.active_run.run_id == run_b
        assert after.active_run == before.active_run  # B untouched by A's letters

        await dead_letter(producer, prefix, [z])
        applied = await cli(db, *reinject_args(broker, prefix), actor="erin")
        assert applied.code == 0, applied
        assert [d["result"] for d in applied.json["letters"]] == ["duplicate", "duplicate", "applied"]
        state, history = await loaded(db, "m1")
        assert state.status is BatchStatus.READY_FOR_PIPELINE_EXECUTION
        assert state.active_run is None
        assert [(r.run_id, r.status.value) for r in history] == [
            (run_a, "completed_successfully"),
            (run_b, "completed_successfully"),
        ]
        async with store_of(db) as store:
            log = await store.transitions("m1")
        assert {t.requested_by for t in log if t.event_id == z[1]["event_id"]} == {"erin"}
        await out.wait_for(lambda c: {run_a, run_b} <= {r.data.get("run_id") for r in c.records}, within=20)
        # serve's cache: it admits the next request after the CLI completed B
        await deliver(serve, producer, prefix, [env.request("m1", "ai_feedback")])
        state, _ = await loaded(db, "m1")
        assert state.status is BatchStatus.PROCESSING_PIPELINES
        await asyncio.sleep(1.0)
        assert sorted(r.data["run_id"] for r in out.records) == sorted([run_a, run_b])


async def test_hostile_letters_fail_one_by_one_and_the_next_letter_still_applies(
    broker: LocalBroker, prefix: str, producer: ProducerLike, tmp_path: Path, db: Db
) -> None:
    env = HuleEduEnvelopes()
    async with (
        serving(broker, db, prefix, tmp_path) as serve,
        Collector(broker.bootstrap, [COMPLETED], topic_prefix=prefix) as out,
    ):
        corr = (await seed_nlp_runs(serve, producer, prefix, env, ["h1"]))["h1"]
        items = env.item_ids("h1", 2)
        good = env.outcome("h1", "nlp", corr, processed=items)
        long_id = env.outcome("h" * 300, "nlp", corr, processed=items)
        big = env.outcome("h1", "nlp", corr, processed=items)
        big[1]["metadata"] = {"pad": "x" * 20_000}  # over the deployment's 8 KiB limit below
        deep: Any = "x"
        for _ in range(200):
            deep = [deep]
        truncated = env.outcome("h1", "nlp", corr, processed=items)
        letters: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]] = [
            (b"k", b"\xff\xfe\x00 not json", [("dlq_reason", b"\xff\xfe\xfd"), ("\u00e9t\u00e9", b"\x80")]),
            (b"k", None, []),  # a tombstone
            (b"k", json.dumps(big[1]).encode(), []),
            (b"k", json.dumps({"event_id": str(uuid.uuid4()), "data": deep}).encode(), []),
            (b"k", json.dumps(env.register("h9", items=1)[1]).encode(), []),  # another topic's envelope
            (b"k", json.dumps(long_id[1]).encode(), []),
            (
                b"k",
                json.dumps(truncated[1]).encode(),
                [("dlq_truncated", b"1"), ("dlq_original_size", b"\xff")],
            ),
            (b"k", json.dumps(good[1]).encode(), [("dlq_truncated", b"\xff"), ("x" * 300, b"y" * 5000)]),
        ]
        dlq = f"{prefix}{OUTCOME}.DLQ"
        for key, value, headers in letters:
            await producer.send_and_wait(dlq, value, key, headers=headers)
        before, _ = await loaded(db, "h1")
        limits = {"PIPELINE_STATE_MAX_MESSAGE_BYTES": "8192"}

        ran = await cli(db, *reinject_args(broker, prefix), actor="erin", extra_env=limits)
        assert "Traceback" not in ran.err, ran.err[-3000:]
        assert ran.code == 1, (ran.code, ran.out[:2000], ran.err[:500])
        doc = ran.json
        got = [(d["result"], d["error"]) for d in doc["letters"]]
        assert len(got) == len(letters), got
        assert [g[0] for g in got] == ["failed"] * 7 + ["applied"], got
        assert doc["failed"] == 7
        for _result, error in got[:7]:
            assert error, got
            assert "\n" not in error, got
        assert "8192" in got[2][1], got[2]
        assert "truncated" in got[6][1], got[6]
        state, history = await loaded(db, "h1")
        assert state.active_run is None, (state.status, history)
        assert len(history) == 1, (state.status, history)
        assert history[0].status.value == "completed_successfully"
        async with store_of(db) as store:
            assert await store.load("h9") is None
            assert await store.load("h" * 200) is None
        assert before.version < state.version

        text = await cli(db, *reinject_args(broker, prefix)[:-1], actor="erin", extra_env=limits)
        assert "Traceback" not in text.err
        assert text.code == 1
        lines = text.out.splitlines()
        assert len(lines) == len(letters) + 1, text.out
        assert lines[-2].endswith("batch h1  duplicate")
        assert lines[-1].endswith(": 1 duplicate, 7 failed"), lines[-1]
        await out.wait_for(lambda c: len(c.records) >= 1, within=20, what="the completion")
        await asyncio.sleep(1.0)
        assert [r.data["run_id"] for r in out.records] == [history[0].run_id]
