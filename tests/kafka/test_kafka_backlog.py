"""A backlog drained after an outage (issue 11, point 5): with ``serve`` stopped, 50 batches'
registration, provisioning and pipeline request wait on their three topics (key = batch id),
sent in order or shuffled across topics (each record keeping its logical timestamp
register < provisioning < request). Then ``serve`` starts: every run starts, the test plays
the worker services, and every run completes exactly once; nothing is dead-lettered and no
request is denied. Through the in-memory store (in-process), a SQLite file and PostgreSQL
(real ``serve`` processes)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from kafka_harness import ServeProcess, fast_settings, running
from pipeline_state_kafka import ProducerLike, ensure_topics, service_topics
from pipeline_state_kafka.testing import Collector, LocalBroker
from proof_harness import (
    WATCHED_TOPICS,
    Stamped,
    Workers,
    assert_all_ready,
    assert_nothing_dead_lettered,
    assert_one_command_per_phase,
    assert_one_completion_per_batch,
    postgres_schema,
    postgres_url,
    produce_stamped,
    wait_completed,
)

from pipeline_state.ports import Store
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from tests.optional import require

pytestmark = pytest.mark.kafka

BATCHES = 50
PIPELINE = "nlp"
PHASES = ("spellcheck", "nlp")
DRAIN_SECONDS = 150.0


def _seed() -> int:
    seed = int(os.environ.get("PROOF_SEED") or random.SystemRandom().randrange(1 << 30))
    print(f"backlog seed: {seed} (PROOF_SEED={seed} repeats it)")
    return seed


def backlog(env: HuleEduEnvelopes, batch_ids: list[str], *, order: str, rng: random.Random) -> list[Stamped]:
    """Each batch's register -> provisioning -> request, with record timestamps in that
    logical order (and in batch order on each topic, as each producing service emits them).

    ``in_order``: sent in logical order. ``shuffled``: the three topics' streams are merged in
    a random order (each topic's own order kept, as separate producers would). ``reversed``:
    every request first, then every provisioning, then every registration.
    ``with_outcome``: as ``shuffled``, with each batch's spellcheck outcome (the request's
    correlation id; logically last) in the backlog too, a fourth stream.
    """
    topics = 4 if order == "with_outcome" else 3
    streams: list[list[Stamped]] = [[] for _ in range(topics)]
    base = int(time.time() * 1000)
    for i, batch_id in enumerate(batch_ids):
        essays = env.item_ids(batch_id, 2)
        corr = str(uuid.uuid4())
        logical = [
            env.register(batch_id, items=2),
            env.provisioned(batch_id, essays),
            env.request(batch_id, PIPELINE, correlation_id=corr),
            env.outcome(batch_id, "spellcheck", corr, processed=essays),
        ][:topics]
        for step, (topic, envelope) in enumerate(logical):
            streams[step].append((topic, envelope, base + topics * i + step))
    if order == "in_order":
        return sorted((r for stream in streams for r in stream), key=lambda r: r[2])
    if order == "reversed":
        return [r for stream in reversed(streams) for r in stream]
    assert order in ("shuffled", "with_outcome"), order
    merged: list[Stamped] = []
    heads = [0] * topics
    while any(heads[k] < len(streams[k]) for k in range(topics)):
        k = rng.choice([k for k in range(topics) if heads[k] < len(streams[k])])
        merged.append(streams[k][heads[k]])
        heads[k] += 1
    return merged


class Service:
    """Starts and stops the service on one store: in-process (memory) or a ``serve`` process."""

    def __init__(self, kind: str, broker: LocalBroker, prefix: str, tmp: Path, schema: str | None) -> None:
        self.kind = kind
        self.broker = broker
        self.prefix = prefix
        self.tmp = tmp
        self.schema = schema
        self.store_url = {
            "memory": "memory://",
            "sqlite": f"sqlite+aiosqlite:///{tmp / 'state.db'}",
            "postgres": postgres_url() if kind == "postgres" else "",
        }[kind]

    @asynccontextmanager
    async def run(self, name: str) -> AsyncIterator[Store | None]:
        """Run until the block ends; yields the store when the service runs in-process (SQL
        stores are read after the stop, through a store of their own: :meth:`open`)."""
        if self.kind == "memory":
            async with running(fast_settings(self.broker.bootstrap, self.prefix), within=60) as runner:
                assert runner.opened is not None
                yield runner.opened.store
                assert runner.stats.dead_lettered == 0
            return
        env = {"PIPELINE_STATE_STORE_UPGRADE": "1"}
        if self.schema:
            env["PIPELINE_STATE_STORE_SCHEMA"] = self.schema
        serve = ServeProcess(
            self.broker.bootstrap, self.store_url, self.prefix, env=env, log_file=self.tmp / f"{name}.log"
        )
        try:
            serve.start()
            await serve.wait_ready(within=90)
            yield None
            assert serve.signal(signal.SIGTERM, within=60) == 0, serve.tail()
        finally:
            serve.close()

    @asynccontextmanager
    async def open(self) -> AsyncIterator[Store]:
        """A store of its own on the SQL database (after the service stopped)."""
        from pipeline_state_sql import open_store

        store = await open_store(self.store_url, schema=self.schema, upgrade=False)
        try:
            yield store
        finally:
            await store.close()


async def _check_store(store: Store, batch_ids: list[str], inbound: list[Stamped]) -> None:
    """Every batch is ready again with one archived run, and every backlog record was
    applied (none ignored, denied, expired or still waiting)."""
    assert_all_ready({b: await store.load(b) for b in batch_ids})
    results = {}
    for topic, envelope, _ in inbound:
        entry = await store.inbox_entry(envelope["event_id"])
        results[(topic, envelope["data"]["batch_id"])] = None if entry is None else entry.result
    wrong = {k: v for k, v in results.items() if v != "applied"}
    assert not wrong, f"{len(wrong)} backlog records not applied: {dict(list(wrong.items())[:10])}"


async def _drain_backlog(
    kind: str,
    *,
    order: str,
    broker: LocalBroker,
    prefix: str,
    producer: ProducerLike,
    tmp: Path,
    schema: str | None = None,
) -> None:
    rng = random.Random(_seed())
    env = HuleEduEnvelopes()
    batch_ids = [f"bl{i:03d}" for i in range(BATCHES)]
    service = Service(kind, broker, prefix, tmp, schema)

    # The service has run before (its topics and consumer group exist) and is now stopped.
    await ensure_topics(broker.bootstrap, service_topics(prefix))
    async with service.run("serve-before"):
        pass
    inbound = backlog(env, batch_ids, order=order, rng=rng)
    await produce_stamped(producer, inbound, topic_prefix=prefix)

    async with (
        Collector(broker.bootstrap, WATCHED_TOPICS, topic_prefix=prefix) as out,
        Workers(broker.bootstrap, prefix, producer) as workers,
    ):
        async with service.run("serve-drain") as store:
            await wait_completed(out, batch_ids, within=DRAIN_SECONDS)
            # A second completion (another event id) of any run would show up now.
            await asyncio.sleep(1.5)
            if store is not None:
                await _check_store(store, batch_ids, inbound)

        assert_nothing_dead_lettered(out)
        assert out.on(Topic.PIPELINE_DENIED) == []
        # Every run started and completed with its teacher notifications (one key: the
        # teacher's, so they are relayed one after another).
        await out.wait_for(
            lambda c: (
                _notified(c, "batch_processing_started") >= set(batch_ids)
                and _notified(c, "pipeline_completed") >= set(batch_ids)
            ),
            within=30,
            what="every run's notifications",
        )
        assert_one_command_per_phase(out.records, batch_ids, PHASES)
        completions = assert_one_completion_per_batch(out, batch_ids)
        assert {c.data["pipeline_name"] for c in completions.values()} == {PIPELINE}
        assert all(c.data["successful_essay_count"] == 2 for c in completions.values())
        assert len(workers.answered) >= BATCHES * len(PHASES)

    if kind != "memory":
        async with service.open() as sql_store:
            await _check_store(sql_store, batch_ids, inbound)


def _notified(out: Collector, kind: str) -> set[str]:
    """Batches with a teacher notification of ``kind``."""
    return {
        str(r.data.get("batch_id"))
        for r in out.on(Topic.TEACHER_NOTIFICATION)
        if r.data.get("notification_type") == kind
    }


ORDERS = ["in_order", "shuffled", "reversed", "with_outcome"]


@pytest.mark.parametrize("order", ORDERS)
async def test_kafka_backlog_drains_in_memory(
    broker: LocalBroker, prefix: str, producer: ProducerLike, tmp_path: Path, order: str
) -> None:
    await _drain_backlog("memory", order=order, broker=broker, prefix=prefix, producer=producer, tmp=tmp_path)


@pytest.mark.parametrize("order", ORDERS)
async def test_kafka_backlog_drains_on_sqlite(
    broker: LocalBroker, prefix: str, producer: ProducerLike, tmp_path: Path, order: str
) -> None:
    require("pipeline_state_sql")
    await _drain_backlog("sqlite", order=order, broker=broker, prefix=prefix, producer=producer, tmp=tmp_path)


@pytest.mark.postgres
@pytest.mark.parametrize("order", ORDERS)
async def test_kafka_backlog_drains_on_postgres(
    broker: LocalBroker, prefix: str, producer: ProducerLike, tmp_path: Path, order: str
) -> None:
    require("pipeline_state_sql")
    url = postgres_url()
    async with postgres_schema(url) as schema:
        await _drain_backlog(
            "postgres",
            order=order,
            broker=broker,
            prefix=prefix,
            producer=producer,
            tmp=tmp_path,
            schema=schema,
        )
