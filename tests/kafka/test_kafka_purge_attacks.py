"""Found by an attack (held) on ``serve``'s periodic retention purge, in process on a real
Kafka-protocol broker: a purge every 50 ms with one-second retentions while runs go through
``serve`` on SQLite (the hand-off relay and the purge touching the same tables). Every run
completes exactly once, no purge fails, and the waiting batch's command row is kept.

(The same attack found that a purge of a large in-memory inbox froze ``serve``'s event loop
for seconds; ``tests/sql/test_sql_purge_attacks.py`` shows the fix without timing it.)
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path

import pytest
from kafka_harness import fast_settings, running
from pipeline_state_kafka import ProducerLike
from pipeline_state_kafka.testing import Collector, LocalBroker, send_envelopes
from pipeline_state_sql import SqlStore
from sqlalchemy import text

from pipeline_state.profiles.huleedu.events import OUTBOUND_TOPICS, Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

pytestmark = pytest.mark.kafka

SECOND_IN_HOURS = 1 / 3600


@pytest.mark.timeout(120)
async def test_serve_purging_every_tick_on_sqlite_completes_each_run_once(
    broker: LocalBroker,
    producer: ProducerLike,
    prefix: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = fast_settings(
        broker.bootstrap,
        prefix,
        store_url=f"sqlite+aiosqlite:///{tmp_path / 'store.db'}",
        purge_seconds=0.05,
        retention_published_hours=SECOND_IN_HOURS,
        retention_inbox_hours=SECOND_IN_HOURS,
        retention_transitions_hours=SECOND_IN_HOURS,
    )
    env = HuleEduEnvelopes()
    caplog.set_level(logging.WARNING, logger="pipeline_state_kafka.retention")
    async with (
        running(settings) as runner,
        Collector(broker.bootstrap, OUTBOUND_TOPICS, topic_prefix=prefix) as out,
    ):
        assert runner.opened is not None
        store = runner.opened.store
        assert isinstance(store, SqlStore)
        # A batch whose spellcheck phase stays pending (its rows must stay).
        w_items = env.item_ids("wait", 1)
        await send_envelopes(
            producer,
            [env.register("wait", items=1), env.provisioned("wait", w_items), env.request("wait", "nlp")],
            topic_prefix=prefix,
        )
        await out.wait_for(lambda c: any(m.key == "wait" for m in c.on(Topic.SPELLCHECK)), what="wait cmd")
        batches = [f"r{n}" for n in range(12)]
        corrs = {b: str(uuid.uuid4()) for b in batches}
        items = {b: env.item_ids(b, 1) for b in batches}
        await send_envelopes(
            producer,
            [d for b in batches for d in (env.register(b, items=1), env.provisioned(b, items[b]))],
            topic_prefix=prefix,
        )
        await asyncio.sleep(1.2)  # their inbox entries and rows now expire and are purged
        await send_envelopes(
            producer, [env.request(b, "nlp", correlation_id=corrs[b]) for b in batches], topic_prefix=prefix
        )
        await out.wait_for(lambda c: len({m.key for m in c.on(Topic.SPELLCHECK)}) == 13, what="commands")
        await send_envelopes(
            producer,
            [env.outcome(b, "spellcheck", corrs[b], processed=items[b]) for b in batches],
            topic_prefix=prefix,
        )
        await out.wait_for(lambda c: len({m.key for m in c.on(Topic.NLP)}) == 12, what="nlp commands")
        await send_envelopes(
            producer,
            [env.outcome(b, "nlp", corrs[b], processed=items[b]) for b in batches],
            topic_prefix=prefix,
        )
        await out.wait_for(lambda c: len(c.on(Topic.PIPELINE_COMPLETED)) >= 12, what="completions", within=30)
        await asyncio.sleep(1.5)  # late duplicates, if any, would show now
        completions = out.on(Topic.PIPELINE_COMPLETED)
        assert sorted(m.key for m in completions) == sorted(batches)
        async with store.engine.connect() as conn:
            wait_rows = (
                await conn.execute(text("SELECT count(*) FROM outbox WHERE key = 'wait'"))
            ).scalar_one()
            inbox_rows = (await conn.execute(text("SELECT count(*) FROM inbox"))).scalar_one()
        assert wait_rows == 2  # its registration and its pending command
        assert inbox_rows < 80  # purged as it goes
    failed = [r for r in caplog.records if "retention purge failed" in r.getMessage()]
    assert failed == []
