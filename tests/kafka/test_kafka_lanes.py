"""How many lanes of a fetch ``serve`` handles at once, by store (issue 16, point 3).

Measured before (``bench/kafka.py``, SQLite, 1,000 runs at 200 outcomes/s, quiet machine):
with four lanes the SQLite store's one writer took the lanes' units of work one after the
other, each with its own commit and ``fsync``, and records waited behind them (the fetch
stage 28 ms, completion p50 36-50 ms, p99 76-123 ms); with one lane, a unit of work per
fetch, the fetch stage was 11 ms, p50 25-30 ms, p99 49-65 ms. ``serve`` now uses one lane
on a store whose database runs one write transaction at a time, unless told otherwise.
"""

from __future__ import annotations

import logging
from pathlib import Path

import attrs
import pytest
from kafka_harness import fast_settings, running
from pipeline_state_kafka.consumer import DEFAULT_PARTITION_CONCURRENCY, ConsumerSettings, lanes
from pipeline_state_kafka.testing import LocalBroker
from pipeline_state_service import ServeSettings
from pipeline_state_sql import open_store
from proof_harness import postgres_schema, postgres_url

pytestmark = pytest.mark.kafka


def _lanes_of(settings: ServeSettings) -> int:
    return settings.consumer_settings().lanes


async def _served_lanes(settings: ServeSettings) -> int:
    async with running(settings) as runner:
        assert runner.consumer is not None
        return runner.consumer.settings.lanes


async def test_serve_on_sqlite_handles_each_fetch_in_one_lane(
    broker: LocalBroker, prefix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = fast_settings(broker.bootstrap, prefix, store_url=f"sqlite+aiosqlite:///{tmp_path / 's.db'}")
    assert _lanes_of(settings) == DEFAULT_PARTITION_CONCURRENCY == 4  # not set: the store decides
    with caplog.at_level(logging.INFO, logger="pipeline_state_kafka.service"):
        assert await _served_lanes(settings) == 1
    ready = [r for r in caplog.records if r.getMessage() == "ready"]
    assert [getattr(r, "lanes", None) for r in ready] == [1]  # the operator sees it too


async def test_serve_keeps_several_lanes_where_writers_run_at_once(broker: LocalBroker, prefix: str) -> None:
    assert await _served_lanes(fast_settings(broker.bootstrap, prefix)) == 4  # the memory store
    url = postgres_url()
    async with postgres_schema(url) as schema:
        settings = fast_settings(
            broker.bootstrap, f"{prefix}pg.", store_url=url, store_schema=schema, store_upgrade=True
        )
        assert await _served_lanes(settings) == 4


async def test_lanes_set_by_the_deployment_win_over_the_store(
    broker: LocalBroker, prefix: str, tmp_path: Path
) -> None:
    settings = fast_settings(broker.bootstrap, prefix, store_url=f"sqlite+aiosqlite:///{tmp_path / 's.db'}")
    assert settings.consumer is not None
    settings = attrs.evolve(settings, consumer=attrs.evolve(settings.consumer, partition_concurrency=3))
    assert await _served_lanes(settings) == 3


async def test_an_extra_consumer_fits_its_lanes_to_the_store_it_writes(
    broker: LocalBroker, prefix: str, tmp_path: Path
) -> None:
    # Before: the consumers of ``--consumers`` kept four lanes whatever their store, so the
    # results consumer on SQLite queued four units of work for the one writer per fetch.
    sqlite = f"sqlite+aiosqlite:///{tmp_path / 'r.db'}"
    settings = fast_settings(broker.bootstrap, prefix, store_url=sqlite, consumers=("results",))
    async with running(settings) as runner:
        assert runner.consumer is not None
        assert runner.consumer.settings.lanes == 1
        assert [(n, c.settings.lanes) for n, c in runner.extra_consumers.items()] == [("results", 1)]
    on_memory = fast_settings(broker.bootstrap, f"{prefix}m.", consumers=("results",))
    async with running(on_memory) as runner:
        assert {n: c.settings.lanes for n, c in runner.extra_consumers.items()} == {"results": 4}


async def test_the_stores_say_how_many_writers_their_database_runs_at_once(tmp_path: Path) -> None:
    sqlite = await open_store(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
    try:
        assert sqlite.concurrent_writers == 1
    finally:
        await sqlite.close()
    url = postgres_url()
    async with postgres_schema(url) as schema:
        postgres = await open_store(url, schema=schema)
        try:
            assert postgres.concurrent_writers is None
        finally:
            await postgres.close()


def test_one_lane_keeps_the_whole_fetch_in_its_order() -> None:
    @attrs.frozen
    class Record:
        key: bytes
        offset: int

    records = [Record(f"batch-{i % 5}".encode(), i) for i in range(20)]
    assert lanes(records, ConsumerSettings("h:9092", partition_concurrency=1).lanes) == [records]
    split = lanes(records, ConsumerSettings("h:9092").lanes)
    assert 1 < len(split) <= 4
    assert sorted(r.offset for lane in split for r in lane) == list(range(20))
    with pytest.raises(ValueError, match="partition_concurrency"):
        ConsumerSettings("h:9092", partition_concurrency=0)
