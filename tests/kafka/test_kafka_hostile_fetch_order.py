"""One fetch holding whole batches' lives with hostile ordering, through ``serve`` and the
real broker.

Everything is produced before ``serve`` (in-process) starts, so the records
arrive together in one or a few fetches and go through the batched unit of work: record
timestamps skewed (logically later facts stamped earlier), the same record delivered twice in
the fetch, and poison records (bad JSON, unknown phase) between good records of the same
partition. The promise: each run completes exactly once, nothing is lost, the poison goes to
``<topic>.DLQ`` and the consumer goes on; stopped (SIGTERM) mid-backlog and started again,
``serve`` keeps its waiting facts and offsets.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import attrs
import pytest
from kafka_harness import fast_settings, running
from pipeline_state_kafka import ProducerLike, ensure_topics, service_topics
from pipeline_state_kafka.testing import Collector, LocalBroker
from proof_harness import (
    WATCHED_TOPICS,
    Workers,
    assert_one_completion_per_batch,
    completions_by_batch,
)

from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

pytestmark = pytest.mark.kafka

DLQ = {f"{t}.DLQ" for t in (Topic.PHASE_OUTCOME.value, Topic.PIPELINE_REQUEST.value)}


async def _raw(producer: ProducerLike, topic: str, key: str, value: bytes, ts: int) -> Any:
    untyped: Any = producer
    return await untyped.send(topic, value, key.encode(), timestamp_ms=ts)


def _dead(out: Collector) -> list[Any]:
    return [r for r in out.records if r.topic.endswith(".DLQ")]


async def _backlog_then_serve(
    broker: LocalBroker,
    prefix: str,
    producer: ProducerLike,
    records: list[tuple[str, str, bytes, int]],
    batch_ids: list[str],
    *,
    dead: int,
    workers: bool = False,
    within: float = 15.0,
) -> tuple[Collector, Any]:
    await ensure_topics(broker.bootstrap, service_topics(prefix))
    futures = [await _raw(producer, f"{prefix}{t}", k, v, ts) for t, k, v, ts in records]
    for f in futures:
        await f
    async with Collector(broker.bootstrap, WATCHED_TOPICS, topic_prefix=prefix) as out:
        ctx = Workers(broker.bootstrap, prefix, producer) if workers else None
        if ctx is not None:
            await ctx.start()
        try:
            async with running(fast_settings(broker.bootstrap, prefix), within=20) as runner:
                await out.wait_for(
                    lambda c: all(b in completions_by_batch(c) for b in batch_ids) and len(_dead(c)) >= dead,
                    within=within,
                    what="every completion and the dead letters",
                )
                await asyncio.sleep(1.0)  # a second completion would show up now
                stats = runner.stats
                assert runner.opened is not None
                store = runner.opened.store
                waiting = {"all": await store.count_waiting()}
        finally:
            if ctx is not None:
                await ctx.stop()
    return out, (stats, waiting)


def _skewed_life(env: HuleEduEnvelopes, batch_id: str, base: int) -> list[tuple[str, str, bytes, int]]:
    """A guest batch's whole life, produced in logical order but stamped in REVERSE order
    (producers' clocks skewed: the outcome looks oldest), the request and provisioning
    delivered twice (same record bytes, same event id), a bad-JSON record on the request
    partition and an unknown-phase outcome on the outcome partition between good records."""
    essays = env.item_ids(batch_id, 2)
    corr = str(uuid.uuid4())
    logical = [
        env.register(batch_id, items=2),
        env.provisioned(batch_id, essays),
        env.request(batch_id, "nlp", correlation_id=corr),
        env.outcome(batch_id, "spellcheck", corr, processed=essays),
    ]
    n = len(logical)
    out: list[tuple[str, str, bytes, int]] = []
    for step, (topic, envelope) in enumerate(logical):
        raw = json.dumps(envelope).encode()
        ts = base + (n - step) * 10
        if topic == Topic.PHASE_OUTCOME.value:
            bogus = json.loads(raw)
            bogus["event_id"] = str(uuid.uuid4())
            bogus["data"]["phase_name"] = "no_such_phase"
            out.append((topic, batch_id, json.dumps(bogus).encode(), ts - 1))
        if topic == Topic.PIPELINE_REQUEST.value:
            out.append((topic, batch_id, b'{"event_id": "x", not json', ts - 1))
        out.append((topic, batch_id, raw, ts))
        if topic in (Topic.CONTENT_PROVISIONED.value, Topic.PIPELINE_REQUEST.value):
            out.append((topic, batch_id, raw, ts + 1))  # the same record again, same fetch
    return out


async def test_skewed_timestamps_duplicates_and_poison_in_one_fetch(
    broker: LocalBroker, prefix: str, producer: ProducerLike
) -> None:
    env = HuleEduEnvelopes()
    batch_ids = [f"sk{i}" for i in range(4)]
    base = int(time.time() * 1000) - 60_000
    records = [r for b in batch_ids for r in _skewed_life(env, b, base)]
    out, (_stats, waiting) = await _backlog_then_serve(
        broker, prefix, producer, records, batch_ids, dead=2 * len(batch_ids), workers=True
    )
    assert_one_completion_per_batch(out, batch_ids)
    dead = _dead(out)
    assert len(dead) == 2 * len(batch_ids), [(r.topic, r.key) for r in dead]
    assert {r.topic for r in dead} <= DLQ
    # one command per phase per batch
    for b in batch_ids:
        spell = [r for r in out.on(Topic.SPELLCHECK) if r.data.get("batch_id") == b]
        assert len({r.event_id for r in spell}) == 1, b
    assert not any(waiting.values()), waiting


async def test_sigterm_mid_backlog_then_restart_keeps_waiting_facts_and_offsets(
    broker: LocalBroker, prefix: str, producer: ProducerLike, tmp_path: Any
) -> None:
    """``serve`` on SQLite is stopped with SIGTERM as soon as it handled its first record of a
    hostile backlog (skewed stamps, duplicates, poison); a second ``serve`` finishes. Every run
    completes exactly once and every poison record is dead-lettered exactly once."""
    import signal

    from kafka_harness import ServeProcess

    env = HuleEduEnvelopes()
    batch_ids = [f"tm{i}" for i in range(12)]
    base = int(time.time() * 1000) - 60_000
    records = [r for b in batch_ids for r in _skewed_life(env, b, base)]
    await ensure_topics(broker.bootstrap, service_topics(prefix))
    futures = [await _raw(producer, f"{prefix}{t}", k, v, ts) for t, k, v, ts in records]
    for f in futures:
        await f
    url = f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    envvars = {"PIPELINE_STATE_STORE_UPGRADE": "1"}
    async with (
        Collector(broker.bootstrap, WATCHED_TOPICS, topic_prefix=prefix) as out,
        Workers(broker.bootstrap, prefix, producer),
    ):
        first = ServeProcess(broker.bootstrap, url, prefix, env=envvars, log_file=tmp_path / "a.log").start()
        try:
            await first.wait_log(
                lambda r: str(r.get("msg", "")).startswith("handled"), within=20, what="a first handled"
            )
            assert first.signal(signal.SIGTERM, within=15) == 0, first.tail()
        finally:
            first.close()
        second = ServeProcess(broker.bootstrap, url, prefix, env=envvars, log_file=tmp_path / "b.log").start()
        try:
            await second.wait_ready(within=20)
            await out.wait_for(
                lambda c: (
                    all(b in completions_by_batch(c) for b in batch_ids)
                    and len(_dead(c)) >= 2 * len(batch_ids)
                ),
                within=20,
                what="completions and dead letters",
            )
            await asyncio.sleep(1.0)
            assert second.signal(signal.SIGTERM, within=15) == 0
        finally:
            second.close()
    assert_one_completion_per_batch(out, batch_ids)
    dead = _dead(out)
    positions = [
        (r.headers.get("dlq_original_partition"), r.headers.get("dlq_original_offset"), r.topic) for r in dead
    ]
    assert len(positions) == len(set(positions)) == 2 * len(batch_ids), sorted(positions)


def _twice_keyed(env: HuleEduEnvelopes, batch_ids: list[str], base: int) -> list[tuple[str, str, bytes, int]]:
    """Each batch's registration, provisioning and request, every record produced twice: under
    the batch id (the contract's key) and under another key (a producer keying otherwise)."""
    records = []
    for i, batch_id in enumerate(batch_ids):
        lives = [env.register(batch_id, items=2), env.provisioned(batch_id, env.item_ids(batch_id, 2))]
        lives.append(env.request(batch_id, "nlp", correlation_id=str(uuid.uuid4())))
        for step, (topic, envelope) in enumerate(lives):
            raw, ts = json.dumps(envelope).encode(), base + i * 10 + step
            records += [(topic, batch_id, raw, ts), (topic, f"other-{i}-{step}", raw, ts)]
    return records


async def test_records_keyed_otherwise_are_counted(
    broker: LocalBroker, prefix: str, producer: ProducerLike
) -> None:
    """The lanes of a fetch keep one key's records in order; a record whose key is not its
    batch id is counted (``miskeyed``), and the consumer warns of its topic."""
    batch_ids = ["mk0", "mk1"]
    records = _twice_keyed(HuleEduEnvelopes(), batch_ids, int(time.time() * 1000) - 60_000)
    _, (stats, waiting) = await _backlog_then_serve(
        broker, prefix, producer, records, batch_ids, dead=0, workers=True
    )
    assert stats.miskeyed >= len(batch_ids), stats.as_dict()
    assert waiting == {"all": 0}


@pytest.mark.postgres
async def test_one_lane_keeps_a_batchs_order_whatever_its_keys(
    broker: LocalBroker, prefix: str, producer: ProducerLike
) -> None:
    """Found by an attack: on PostgreSQL, with four lanes, a request produced under another key
    than its provisioning was decided first in its own lane and denied ``batch_not_ready``.
    With ``PIPELINE_STATE_KAFKA_PARTITION_CONCURRENCY=1`` (the documented remedy for producers
    that do not key by batch id) every run completes once and nothing is denied."""
    from proof_harness import postgres_schema, postgres_url

    batch_ids = [f"ol{i}" for i in range(6)]
    records = _twice_keyed(HuleEduEnvelopes(), batch_ids, int(time.time() * 1000) - 60_000)
    await ensure_topics(broker.bootstrap, service_topics(prefix))
    futures = [await _raw(producer, f"{prefix}{t}", k, v, ts) for t, k, v, ts in records]
    for f in futures:
        await f
    url = postgres_url()
    async with postgres_schema(url) as schema:
        settings = fast_settings(
            broker.bootstrap, prefix, store_url=url, store_schema=schema, store_upgrade=True
        )
        settings = attrs.evolve(settings, consumer=attrs.evolve(settings.consumer, partition_concurrency=1))
        async with (
            Collector(broker.bootstrap, WATCHED_TOPICS, topic_prefix=prefix) as out,
            Workers(broker.bootstrap, prefix, producer),
            running(settings, within=20),
        ):
            await out.wait_for(
                lambda c: all(b in completions_by_batch(c) for b in batch_ids),
                within=15,
                what="every completion",
            )
            await asyncio.sleep(1.0)
    assert_one_completion_per_batch(out, batch_ids)
    assert out.on(Topic.PIPELINE_DENIED) == []
