"""``pipeline-state serve`` as a real process on a SQLite file, killed with SIGKILL between
state commit and relay: after a restart nothing is lost, and every effect is there once
(consumers deduplicate the relay's at-least-once copies by ``event_id``). Then a SIGTERM
shuts it down cleanly with exit status 0."""

from __future__ import annotations

import signal
import uuid
from pathlib import Path
from typing import Any

import pytest
from kafka_harness import ServeProcess
from pipeline_state_kafka import ProducerLike
from pipeline_state_kafka.testing import Collector, LocalBroker, send_envelopes

from pipeline_state import InMemoryRuntime
from pipeline_state.profiles.huleedu.events import OUTBOUND_TOPICS, Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from tests.optional import require

pytestmark = pytest.mark.kafka

BATCHES = ("k1", "k2", "k3")


async def test_kafka_kill_between_commit_and_relay_loses_and_duplicates_nothing(
    broker: LocalBroker, prefix: str, producer: ProducerLike, tmp_path: Path
) -> None:
    require("pipeline_state_sql")
    store_url = f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    env = HuleEduEnvelopes()
    reference = InMemoryRuntime()
    expected: list[dict[str, Any]] = []
    corr = {b: str(uuid.uuid4()) for b in BATCHES}
    essays = {b: env.item_ids(b, 2) for b in BATCHES}

    async def deliver(serve: ServeProcess, deliveries: list[tuple[str, dict[str, Any]]]) -> None:
        for delivery in deliveries:
            expected.extend(await reference.deliver(*delivery))
        await send_envelopes(producer, deliveries, topic_prefix=prefix)
        await serve.wait_handled({d[1]["event_id"] for d in deliveries})

    def process(name: str, **env_vars: str) -> ServeProcess:
        # A killed relay's claim on outbox rows lasts the lease: keep it short here.
        env_vars.setdefault("PIPELINE_STATE_OUTBOX_LEASE_SECONDS", "2")
        return ServeProcess(
            broker.bootstrap, store_url, prefix, env=env_vars, log_file=tmp_path / f"serve-{name}.log"
        )

    # 1. The relay is off: units of work commit state and outbox rows, nothing is published.
    first = process("first", PIPELINE_STATE_RELAY="0").start()
    try:
        await first.wait_ready()
        await deliver(first, [env.register(b, items=2) for b in BATCHES])
        await deliver(first, [env.provisioned(b, essays[b]) for b in BATCHES])
        await deliver(first, [env.request(b, "nlp", correlation_id=corr[b]) for b in BATCHES])
    finally:
        first.close()  # SIGKILL with every outbox row committed and unpublished
    assert first.process is not None
    assert first.process.returncode == -signal.SIGKILL

    async with Collector(broker.bootstrap, OUTBOUND_TOPICS, topic_prefix=prefix) as out:
        assert out.records == []
        # 2. A new process publishes the committed rows; then it is killed right after the
        # last outcomes commit, whether or not their completions were relayed yet.
        second = process("second").start()
        try:
            await second.wait_ready()
            want = {m["value"]["event_id"] for m in expected}
            await out.wait_for(
                lambda c: want <= {r.event_id for r in c.records}, within=45, what="the pending rows"
            )
            assert len(out.records) == len(want)  # published exactly once
            await deliver(
                second, [env.outcome(b, "spellcheck", corr[b], processed=essays[b]) for b in BATCHES]
            )
            await deliver(second, [env.outcome(b, "nlp", corr[b], processed=essays[b]) for b in BATCHES])
        finally:
            second.close()

        # 3. Restart: whatever was committed but not relayed is published now.
        third = process("third").start()
        try:
            await third.wait_ready()
            want = {m["value"]["event_id"] for m in expected}
            await out.wait_for(
                lambda c: want <= {r.event_id for r in c.records}, within=45, what="every expected message"
            )
            code = third.signal(signal.SIGTERM)
        finally:
            third.close()
        assert code == 0
        assert any(r.get("msg") == "stopped" for r in third.logs)
        assert any(line.startswith("summary consumed=") for line in third.stdout)

        unique = out.unique()
        assert sorted((r.topic, r.key, r.event_id) for r in unique) == sorted(
            (m["topic"], m["key"], m["value"]["event_id"]) for m in expected
        )
        completions = [r for r in unique if r.topic == Topic.PIPELINE_COMPLETED]
        runs = [c.data["run_id"] for c in completions]
        assert sorted(c.key or "" for c in completions) == sorted(BATCHES)
        assert len(runs) == len(set(runs)) == len(BATCHES)  # one completion per run
        assert all(c.data["final_status"] == "completed_successfully" for c in completions)
