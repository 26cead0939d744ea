"""Found by an attack: ``outbox republish`` and ``batch archive`` answers while ``serve`` runs,
on SQLite and PostgreSQL.

Was a defect (fixed; the test failed before): an id over 200 characters given to ``outbox
republish`` or ``batch archive`` exited 1 (refused) where the docs give 2 for a malformed id;
the store's ``RejectedDataError`` now maps to exit 2.

Held: unknown, mixed and published ids give the documented exit codes and JSON, and serve's
relay publishes a re-queued row once.
"""

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
import pytest
from kafka_harness import ServeProcess
from pipeline_state_kafka.testing import Collector, LocalBroker

from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from tests.optional import require

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

PG_DEFAULT = "postgresql+asyncpg://root@127.0.0.1:5432/test"
COMPLETED = Topic.PIPELINE_COMPLETED.value


@attrs.frozen
class Db:
    url: str
    schema: str | None = None

    @property
    def args(self) -> list[str]:
        return ["--store", self.url] + (["--schema", self.schema] if self.schema else [])


def _in_thread(work: Any) -> Any:
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


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    require("pipeline_state_sql")
    if request.param == "sqlite":
        found = Db(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
        _in_thread(_migrate(found))
        yield found
        return
    url = os.environ.get("PIPELINE_STATE_TEST_POSTGRES", PG_DEFAULT)
    schema = f"ps_attops2_{uuid.uuid4().hex[:10]}"
    _in_thread(_pg_execute(url, f'CREATE SCHEMA "{schema}"'))
    try:
        found = Db(url, schema)
        _in_thread(_migrate(found))
        yield found
    finally:
        _in_thread(_pg_execute(url, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


@contextlib.asynccontextmanager
async def store_of(db: Db) -> AsyncIterator[Any]:
    from pipeline_state_sql import open_store

    store = await open_store(db.url, schema=db.schema, upgrade=False)
    try:
        yield store
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def serving(broker: LocalBroker, db: Db, prefix: str, tmp_path: Path) -> AsyncIterator[ServeProcess]:
    env = {"PIPELINE_STATE_STORE_SCHEMA": db.schema} if db.schema else {}
    serve = ServeProcess(broker.bootstrap, db.url, prefix, env=env, log_file=tmp_path / "serve.log").start()
    try:
        await serve.wait_ready()
        yield serve
    finally:
        serve.close()


@attrs.frozen
class Ran:
    code: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        return json.loads(self.out)


async def cli(db: Db, *argv: str, actor: str = "ops2") -> Ran:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pipeline_state._cli",
        *argv,
        *db.args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PIPELINE_STATE_OPERATOR": actor},
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return Ran(proc.returncode, out.decode(), err.decode())


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


# ---------------------------------------------------------------------------------------------


async def test_unknown_mixed_and_published_ids_exit_codes_and_json(
    broker: LocalBroker, prefix: str, tmp_path: Path, db: Db
) -> None:
    """Exit codes of docs/reference/cli.md while serve runs: an unknown id is 3 (one line on
    stderr, nothing on stdout) and a mix of a parked and an unknown id does nothing at all
    (the parked row stays parked, no log row); a published row is ``not_parked`` (exit 0);
    the same id given twice is one row, applied as the operator who asked (``--json``, the
    transition log), and the relay publishes it once."""
    completions = await seed_completed_and_parked(db, ["u1"])
    cid = completions["u1"]
    async with (
        serving(broker, db, prefix, tmp_path),
        Collector(broker.bootstrap, [COMPLETED], topic_prefix=prefix) as out,
    ):
        unknown = str(uuid.uuid4())
        missing = await cli(db, "outbox", "republish", unknown, "--json")
        assert (missing.code, missing.out) == (3, ""), missing
        assert missing.err.count("\n") == 1
        assert unknown in missing.err
        mixed = await cli(db, "outbox", "republish", cid, unknown, "--json")
        assert mixed.code == 3, mixed
        row = await row_of(db, cid)
        assert row.parked
        async with store_of(db) as store:
            log = await store.transitions("u1")
        assert not [t for t in log if t.trigger == "republish_outbox"]
        await asyncio.sleep(0.5)
        assert copies(out, cid) == 0  # parked: the relay leaves it alone
        twice = await cli(db, "outbox", "republish", cid, cid, "--json", actor="alice")
        assert twice.code == 0, twice
        (outcome,) = twice.json["republished"]
        assert (outcome["batch_id"], outcome["result"], outcome["requested_by"]) == ("u1", "applied", "alice")
        assert twice.json["not_parked"] == []
        async with store_of(db) as store:
            log = await store.transitions("u1")
        assert [(t.trigger, t.requested_by) for t in log if t.trigger == "republish_outbox"] == [
            ("republish_outbox", "alice")
        ]
        await out.wait_for(lambda c: copies(c, cid) >= 1, within=20, what="the completion")
        for _ in range(100):
            if (await row_of(db, cid)).published_at is not None:
                break
            await asyncio.sleep(0.1)
        published = await cli(db, "outbox", "republish", cid, "--json")
        assert (published.code, published.json) == (0, {"republished": [], "not_parked": [cid]})
        await asyncio.sleep(1.5)
        assert copies(out, cid) == 1


async def test_an_oversized_id_exits_2(db: Db) -> None:
    """Was a defect, fixed.

    docs/reference/cli.md: exit 2 = "usage or bad input: unknown option, malformed id";
    ``--event-id`` of 300 characters is exit 2 (tests/sql/test_sql_ops_cli.py).

    Expected: ``outbox republish <301 characters>`` (and ``batch archive <301 characters>``)
    exit 2.
    Before the fix: exit 1 ("denied or refused by the engine"), "error: the store rejected the data:
    event id is 301 characters long, over 200": the store's ``RejectedDataError`` (a
    ``BadCommandError``) maps to REFUSED in adapters/pipeline_state_service/ops/exits.py
    ``exit_code_of``."""
    ran = await cli(db, "outbox", "republish", "e" * 301)
    archive = await cli(db, "batch", "archive", "b" * 301)  # the same for a batch id
    assert "Traceback" not in ran.err + archive.err
    assert (ran.code, archive.code) == (2, 2), (ran.code, ran.err, archive.code, archive.err)
