"""Operator commands against a store that a real ``pipeline-state serve`` process also uses:
a migrated store on SQLite or PostgreSQL (own schema) (:class:`Db`, the ``db`` fixture in
``conftest.py``), ``serve`` over the test broker (:func:`serving`), the CLI as a separate
process (:func:`cli`) and the store opened in this process (:func:`store_of`)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
from kafka_harness import ServeProcess
from pipeline_state_kafka import ProducerLike
from pipeline_state_kafka.dlq import DeadLetterWriter, ParkedFact
from pipeline_state_kafka.testing import Collector, LocalBroker, send_envelopes

from pipeline_state.errors import StoreUnavailableError
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from tests.cli_kit import Ran
from tests.optional import require

PG_DEFAULT = "postgresql+asyncpg://root@127.0.0.1:5432/test"
COMPLETED = Topic.PIPELINE_COMPLETED.value
OUTCOME = Topic.PHASE_OUTCOME.value


@attrs.frozen
class Db:
    url: str
    schema: str | None = None

    @property
    def args(self) -> list[str]:
        return ["--store", self.url] + (["--schema", self.schema] if self.schema else [])


def in_thread(work: Any) -> Any:
    """Run the coroutine ``work`` to its end in a loop of its own (from a sync fixture)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, work).result(timeout=60)


async def _pg_execute(url: str, sql: str) -> None:
    import asyncpg
    from sqlalchemy.engine import make_url

    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _migrate(db: Db) -> None:
    from pipeline_state_sql import create_engine, create_or_upgrade

    engine = create_engine(db.url, schema=db.schema)
    try:
        await create_or_upgrade(engine)
    finally:
        await engine.dispose()


def migrated(backend: str, tmp_path: Path) -> Iterator[Db]:
    """A migrated store on ``backend`` (``sqlite`` or ``postgres``), dropped afterwards."""
    require("pipeline_state_sql")
    if backend == "sqlite":
        found = Db(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
        in_thread(_migrate(found))
        yield found
        return
    url = os.environ.get("PIPELINE_STATE_TEST_POSTGRES", PG_DEFAULT)
    schema = f"ps_ops_{uuid.uuid4().hex[:10]}"
    in_thread(_pg_execute(url, f'CREATE SCHEMA "{schema}"'))
    try:
        found = Db(url, schema)
        in_thread(_migrate(found))
        yield found
    finally:
        in_thread(_pg_execute(url, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


@contextlib.asynccontextmanager
async def serving(broker: LocalBroker, db: Db, prefix: str, tmp_path: Path) -> AsyncIterator[ServeProcess]:
    env = {"PIPELINE_STATE_STORE_SCHEMA": db.schema} if db.schema else {}
    serve = ServeProcess(broker.bootstrap, db.url, prefix, env=env, log_file=tmp_path / "serve.log").start()
    try:
        await serve.wait_ready()
        yield serve
    finally:
        serve.close()


@contextlib.asynccontextmanager
async def store_of(db: Db) -> AsyncIterator[Any]:
    from pipeline_state_sql import open_store

    store = await open_store(db.url, schema=db.schema, upgrade=False)
    try:
        yield store
    finally:
        await store.close()


async def cli(db: Db, *argv: str, actor: str = "operator-1", extra_env: dict[str, str] | None = None) -> Ran:
    """``pipeline-state ARGV --store ...`` as a separate process, as ``actor``, with
    ``extra_env`` laid over this process's environment."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pipeline_state._cli",
        *argv,
        *db.args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PIPELINE_STATE_OPERATOR": actor, **(extra_env or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return Ran(proc.returncode, out.decode(), err.decode())


async def deliver(
    serve: ServeProcess, producer: ProducerLike, prefix: str, deliveries: list[tuple[str, dict[str, Any]]]
) -> None:
    """Send ``deliveries`` and wait until ``serve`` handled each."""
    await send_envelopes(producer, deliveries, topic_prefix=prefix)
    await serve.wait_handled({d[1]["event_id"] for d in deliveries})


async def seed_nlp_runs(
    serve: ServeProcess,
    producer: ProducerLike,
    prefix: str,
    env: HuleEduEnvelopes,
    batches: list[str],
    *,
    spellcheck_done: bool = True,
) -> dict[str, str]:
    """Each batch registered, provisioned and running ``nlp`` (spellcheck already done when
    ``spellcheck_done``): the next outcome is the run's last. Returns the correlation ids."""
    corr = {b: str(uuid.uuid4()) for b in batches}
    await deliver(serve, producer, prefix, [env.register(b, items=2) for b in batches])
    await deliver(serve, producer, prefix, [env.provisioned(b, env.item_ids(b, 2)) for b in batches])
    await deliver(serve, producer, prefix, [env.request(b, "nlp", correlation_id=corr[b]) for b in batches])
    if spellcheck_done:
        await deliver(
            serve,
            producer,
            prefix,
            [env.outcome(b, "spellcheck", corr[b], processed=env.item_ids(b, 2)) for b in batches],
        )
    return corr


async def dead_letter(
    producer: ProducerLike, prefix: str, deliveries: list[tuple[str, dict[str, Any]]]
) -> None:
    """Dead-letter ``deliveries`` of the outcome topic as the consumer does (one key: one
    partition, in order)."""
    writer = DeadLetterWriter(producer, group_id=f"{prefix}group")
    for _topic, envelope in deliveries:
        record = ParkedFact(
            topic=f"{prefix}{OUTCOME}", key=b"k", value=json.dumps(envelope).encode(), partition=0, offset=3
        )
        await writer.send(record, StoreUnavailableError("the disk was full"))


async def loaded(db: Db, batch_id: str) -> Any:
    async with store_of(db) as store:
        state = await store.load(batch_id)
        history = await store.history(batch_id)
    assert state is not None
    return state, history


def reinject_args(broker: LocalBroker, prefix: str) -> list[str]:
    return [
        "dlq",
        "reinject",
        "--kafka",
        broker.bootstrap,
        "--topic",
        OUTCOME,
        "--topic-prefix",
        prefix,
        "--json",
    ]


async def seed_completed_and_parked(db: Db, batches: list[str]) -> dict[str, str]:
    """Each batch runs ``nlp`` to completion in-process; then every outbox row is parked.
    Returns the event id of each batch's (parked) ``BatchPipelineCompletedV1`` row."""
    from pipeline_state import PipelineService

    env = HuleEduEnvelopes()
    async with store_of(db) as store:
        service = PipelineService(store)
        for b in batches:
            corr = str(uuid.uuid4())
            items = env.item_ids(b, 2)
            for delivery in (
                env.register(b, items=2),
                env.provisioned(b, items),
                env.request(b, "nlp", correlation_id=corr),
                env.outcome(b, "spellcheck", corr, processed=items),
                env.outcome(b, "nlp", corr, processed=items),
            ):
                result = await service.handle_message(*delivery)
                assert result.label == "applied", (b, delivery[0], result.label)
        now = datetime.now(UTC)
        parked = []
        while rows := await store.claim(now, limit=100):
            for row in rows:
                await store.mark_failed(
                    row.id, "broker said no", now, retry_at=now + timedelta(hours=1), park=True
                )
            parked += rows
        completions = {}
        for row in parked:
            if row.message.topic.endswith(COMPLETED):
                completions[row.message.value["data"]["batch_id"]] = row.message.event_id
        assert set(completions) == set(batches)
        return completions


async def row_of(db: Db, event_id: str) -> Any:
    async with store_of(db) as store:
        (row,) = await store.outbox_rows([event_id])
        return row


def copies(out: Collector, event_id: str) -> int:
    return sum(1 for r in out.records if r.event_id == event_id)
