"""A stop request lets the unit of work in hand finish and commits its offset (the next
instance of the group does not get the record again); the live summary renders."""

from __future__ import annotations

import asyncio

import pytest
from kafka_harness import SlowCommits, fast_settings, running, wait_until
from pipeline_state_kafka import ProducerLike
from pipeline_state_kafka.stats import ServiceStats
from pipeline_state_kafka.testing import LocalBroker, send_envelopes
from pipeline_state_service import OpenedStore, ServiceRunner, Summary

from pipeline_state import InMemoryStore
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

pytestmark = pytest.mark.kafka


async def test_kafka_stop_finishes_the_unit_of_work_and_commits_its_offset(
    broker: LocalBroker, prefix: str, producer: ProducerLike
) -> None:
    env = HuleEduEnvelopes()
    store = SlowCommits()
    opened = OpenedStore(store, store)
    settings = fast_settings(broker.bootstrap, prefix)
    runner = ServiceRunner(settings, store=opened)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    await asyncio.wait_for(runner.ready.wait(), timeout=30)
    store.delay = 0.5
    await send_envelopes(producer, [env.register("s1", items=1)], topic_prefix=prefix)
    await asyncio.wait_for(store.committing.wait(), timeout=15)
    stop.set()  # while the unit of work is in the middle of its commit
    await asyncio.wait_for(task, timeout=30)
    assert await store.load("s1") is not None
    assert runner.stats.handled == 1
    assert runner.stats.offset_commits == 1
    assert await store.pending_count() == 0  # the relay flushed before the producer closed

    store.delay = 0.0
    async with running(settings, store=opened) as second:
        await send_envelopes(producer, [env.register("s2", items=1)], topic_prefix=prefix)
        await wait_until(lambda: second.stats.handled >= 1, what="the next record")
        await asyncio.sleep(0.3)
        assert second.stats.handled == 1  # s2 only: s1 was not delivered again
        assert second.stats.duplicates == 0


async def test_kafka_live_summary_renders_the_counters(capsys: pytest.CaptureFixture[str]) -> None:
    store = InMemoryStore()
    stats = ServiceStats(consumed=42, dead_lettered=3)
    stop = asyncio.Event()
    live = asyncio.create_task(Summary(stats, store, store).run_live(stop, seconds=0.05))
    await asyncio.sleep(0.2)
    stop.set()
    await asyncio.wait_for(live, timeout=5)
    shown = capsys.readouterr().out
    for column in ("consumed", "DLQ", "outbox", "active"):
        assert column in shown
    assert "42" in shown
