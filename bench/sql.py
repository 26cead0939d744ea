"""The SQL benchmark (issue 3): ``python bench/sql.py [--quick] [--events N] [--big N]``.

Figures, each against a baseline measured in the same run:

* ``durable_sqlite`` / ``durable_postgres``: outcome events/s through
  ``PipelineService(SqlStore)``, one transaction per event (inbox check, load, ``decide``,
  compare-and-set UPDATE, inbox, transition log and outbox INSERTs, COMMIT), against the raw
  driver (aiosqlite / asyncpg) executing the same statements with the same, pre-encoded
  parameters. SQLite is measured at ``synchronous=FULL`` (the store's default: each commit
  is fsynced) and, for information, at ``NORMAL`` (WAL without an fsync per commit: not
  durable against a power cut, but it shows the CPU cost of the path). Target: >= 0.5x the
  raw driver (on the durable figures).
* ``relay_*``: rows/s the :class:`~pipeline_state._relay.OutboxRelay` moves from the SQL
  outbox to a transport that accepts everything at once, with batches of 1 and of 100
  (see ``bench/relay.py``).
* ``scale_sqlite``: service cost per event with 1,000,000 stored batches against the same
  with 1,000 (SQLite, ``synchronous=NORMAL``). The large file is built with one bulk INSERT of
  pre-encoded state documents. Target: <= 1.5x.
* ``scale_postgres``: the same on PostgreSQL (``synchronous_commit=off`` for the measured
  sessions, as NORMAL for SQLite: the commit's fsync would hide what the size of the table
  costs), built by ``COPY``. Target (issue 16, point 5): <= 1.3x.
* ``history_sqlite`` / ``history_postgres``: service cost per event on batches that archived
  200 runs against the same on batches that archived one (same settings as ``scale_*``).
  Every archived run is a copy, with its own ids, of a real finished ``nlp`` run; the state
  documents are seeded as the store writes them (the runs themselves, kept one row each in
  the ``runs`` table, are not read by an event and are not seeded).
  Target (issue 16, point 5): <= 1.2x: history must not be rewritten or re-read per event.

Each event is a spellcheck outcome for a batch running ``comprehensive``: it dispatches CJ
and NLP (two outbox rows, four transition rows). Every repetition uses fresh databases
seeded identically; service and baseline alternate which goes first. Progress goes to
stderr, the table to stdout. Nothing here is a test assertion;
``tests/sql/test_sql_bench_smoke.py`` only runs ``--quick``.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder is sys.path[0] and bench/http.py would shadow the stdlib
# ``http``: use the repository root instead, so ``bench`` is a package.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if __package__ in (None, ""):
    sys.path.insert(0, str(_HERE.parent))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import os  # noqa: E402
import sqlite3  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import dataclass, replace  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from typing import Any  # noqa: E402

import aiosqlite  # noqa: E402
import asyncpg  # type: ignore[import-untyped]  # noqa: E402
import attrs  # noqa: E402
from pipeline_state_sql import create_engine, create_or_upgrade, encode_state, open_store  # noqa: E402
from pipeline_state_sql.engine import dumps  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from bench._util import Row, Target, environment, report  # noqa: E402
from pipeline_state import InMemoryStore, ManualClock, PipelineService  # noqa: E402
from pipeline_state._deadline_index import next_deadline  # noqa: E402
from pipeline_state._lifecycle import RunStatus  # noqa: E402
from pipeline_state._model import BatchState, Past, Run  # noqa: E402
from pipeline_state.ports import Change  # noqa: E402
from pipeline_state.profiles import default_profile  # noqa: E402
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes  # noqa: E402

__all__ = [
    "FIGURES",
    "QUICK",
    "Config",
    "Database",
    "Workload",
    "fresh_database",
    "main",
    "postgres_url",
    "run",
]

FIGURES = (
    "durable_sqlite",
    "durable_sqlite_normal",
    "durable_postgres",
    "relay_sqlite_batch1",
    "relay_sqlite_batch100",
    "relay_postgres_batch1",
    "relay_postgres_batch100",
    "relay_sqlite_handoff",
    "relay_postgres_handoff",
    "scale_sqlite",
    "scale_postgres",
    "history_sqlite",
    "history_postgres",
)
Log = Callable[[str], None]

CORRELATION = "5e1f0000-0000-4000-8000-000000000001"
Delivery = tuple[str, dict[str, Any]]
ESSAYS = 3


class _RecordingStore(InMemoryStore):
    """The in-memory store, keeping every committed change (to feed the raw baselines)."""

    def __init__(self) -> None:
        super().__init__()
        self.changes: list[Change] = []

    async def commit(self, change: Change) -> None:
        await super().commit(change)
        self.changes.append(change)


async def _template() -> BatchState:
    """A batch running ``comprehensive``, its spellcheck phase dispatched (made by the engine)."""
    store = InMemoryStore()
    service = PipelineService(store, clock=ManualClock())
    env = HuleEduEnvelopes()
    essays = env.item_ids("tpl", ESSAYS)
    await service.handle_message(*env.register("tpl", items=ESSAYS))
    await service.handle_message(*env.provisioned("tpl", essays))
    await service.handle_message(*env.request("tpl", "comprehensive", correlation_id=CORRELATION))
    state = await store.load("tpl")
    assert state is not None
    assert state.active_run is not None
    return state


async def _finished_run() -> Run:
    """A real finished run: ``nlp`` (spellcheck, then NLP) driven to completion by the engine."""
    store = InMemoryStore()
    service = PipelineService(store, clock=ManualClock())
    env = HuleEduEnvelopes()
    essays = env.item_ids("old", ESSAYS)
    corr = "5e1f0000-0000-4000-8000-0000000000ff"
    await service.handle_message(*env.register("old", items=ESSAYS))
    await service.handle_message(*env.provisioned("old", essays))
    await service.handle_message(*env.request("old", "nlp", correlation_id=corr))
    for phase in ("spellcheck", "nlp"):
        await service.handle_message(*env.outcome("old", phase, corr, processed=essays))
    [run] = await store.history("old")
    assert run.status is RunStatus.COMPLETED_SUCCESSFULLY
    return run


@attrs.frozen
class Workload:
    """``count`` batches with an active run and one spellcheck outcome delivery for each."""

    states: tuple[BatchState, ...]
    deliveries: tuple[Delivery, ...]
    changes: tuple[Change, ...]

    @classmethod
    async def build(cls, count: int, prefix: str = "act", *, history: int = 0) -> Workload:
        """``count`` batches; with ``history``, each has that many archived runs."""
        template = await _template()
        if history:
            finished = await _finished_run()
            runs = tuple(
                attrs.evolve(finished, run_id=f"old-run-{n}", correlation_id=str(uuid.UUID(int=n + 1)))
                for n in range(history)
            )
            # As the engine keeps it: the acceptance times its rate limits count (none here).
            template = attrs.evolve(template, past=Past.of(runs, remember=default_profile().runs_remembered))
        states = tuple(attrs.evolve(template, batch_id=f"{prefix}{i:07d}") for i in range(count))
        env = HuleEduEnvelopes()
        essays = env.item_ids("tpl", ESSAYS)
        deliveries = tuple(
            env.outcome(s.batch_id, "spellcheck", CORRELATION, processed=essays, event_id=str(uuid.uuid4()))
            for s in states
        )
        return cls(states, deliveries, await cls._changes(states, deliveries))

    @staticmethod
    async def _changes(states: Sequence[BatchState], deliveries: Sequence[Delivery]) -> tuple[Change, ...]:
        """The changes the service commits for ``deliveries`` (run in memory)."""
        store = _RecordingStore()
        for state in states:
            await InMemoryStore.commit(store, Change(state.batch_id, None, state, state.updated_at))
        service = PipelineService(store, clock=ManualClock())
        for delivery in deliveries:
            await service.handle_message(*delivery)
        return tuple(store.changes)


# -- seeding -------------------------------------------------------------------------------


def sqlite_time(value: datetime | None) -> str | None:
    """A timestamp as the SQLite store keeps it (UTC wall time, fixed width)."""
    if value is None:
        return None
    return value.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def _batch_row(state: BatchState) -> tuple[Any, ...]:
    return (
        state.batch_id,
        state.status.value,
        state.version,
        dumps(encode_state(state)),
        next_deadline(state),
        state.created_at,
        state.updated_at,
    )


def bulk_insert_sqlite(path: Path, states: Sequence[BatchState], *, filler: int = 0) -> None:
    """Insert ``states`` and ``filler`` extra ready batches (pre-encoded) in one transaction."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("BEGIN")
        sql = (
            "INSERT INTO batches (batch_id, status, version, state, next_deadline_at, created_at, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
        )

        def rows() -> Any:
            for state in states:
                row = _batch_row(state)
                yield (*row[:4], sqlite_time(row[4]), sqlite_time(row[5]), sqlite_time(row[6]))
            if filler:
                template = attrs.evolve(
                    states[0], active_run=None, status=states[0].status.READY_FOR_PIPELINE_EXECUTION
                )
                document = dumps(encode_state(template))
                head, tail = document.split(f'"{template.batch_id}"', 1)
                stamp = sqlite_time(template.updated_at)
                for i in range(filler):
                    batch_id = f"fill{i:07d}"
                    yield (
                        batch_id,
                        template.status.value,
                        1,
                        f'{head}"{batch_id}"{tail}',
                        None,
                        stamp,
                        stamp,
                    )

        conn.executemany(sql, rows())
        conn.execute("COMMIT")
    finally:
        conn.close()


async def bulk_insert_postgres(
    url: str, schema: str, states: Sequence[BatchState], *, filler: int = 0
) -> None:
    """``COPY`` ``states`` and ``filler`` extra ready batches (pre-encoded) into ``batches``."""

    def rows() -> Any:
        for state in states:
            yield _batch_row(state)
        if filler:
            template = attrs.evolve(
                states[0], active_run=None, status=states[0].status.READY_FOR_PIPELINE_EXECUTION
            )
            head, tail = dumps(encode_state(template)).split(f'"{template.batch_id}"', 1)
            status, stamp = template.status.value, template.updated_at
            for i in range(filler):
                batch_id = f"fill{i:07d}"
                yield (batch_id, status, 1, f'{head}"{batch_id}"{tail}', None, stamp, stamp)

    conn = await asyncpg.connect(pg_dsn(url), server_settings={"search_path": schema})
    try:
        await conn.copy_records_to_table(
            "batches",
            records=rows(),
            columns=[
                "batch_id",
                "status",
                "version",
                "state",
                "next_deadline_at",
                "created_at",
                "updated_at",
            ],
        )
    finally:
        await conn.close()


async def migrate(url: str, schema: str | None = None) -> None:
    engine = create_engine(url, schema=schema)
    try:
        await create_or_upgrade(engine)
    finally:
        await engine.dispose()


def pg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def pg_schema(url: str, schema: str, *, drop: bool = False) -> None:
    conn = await asyncpg.connect(pg_dsn(url))
    try:
        if drop:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        else:
            await conn.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await conn.close()


# -- raw-driver baselines ------------------------------------------------------------------

_UPDATE = (
    "UPDATE batches SET status = {p}, version = {p}, state = {j}, next_deadline_at = {p}, updated_at = {p} "
    "WHERE batch_id = {p} AND version = {p}"
)
_INBOX = (
    "INSERT INTO inbox (event_id, topic, batch_id, result, processed_at) VALUES ({p}, {p}, {p}, {p}, {p})"
)
_LOG = (
    "INSERT INTO transitions (batch_id, entity, name, trigger, source, dest, run_id, event_id, "
    "correlation_id, at) VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p})"
)
_OUTBOX = (
    "INSERT INTO outbox (event_id, topic, key, envelope, created_at, available_at, attempts, parked) "
    "VALUES ({p}, {p}, {p}, {j}, {p}, {p}, 0, {false})"
)
_SEEN = "SELECT event_id FROM inbox WHERE event_id = {p}"
_LOAD = "SELECT state FROM batches WHERE batch_id = {p}"


def _numbered(template: str, *, jsonb: bool) -> str:
    """Replace ``{p}`` with ``$1, $2, ...`` (asyncpg) in order; ``{j}`` is a JSONB parameter."""
    parts = template.replace("{false}", "false").split("{")
    out = [parts[0]]
    for n, part in enumerate(parts[1:], start=1):
        kind, rest = part.split("}", 1)
        out.append(f"${n}::jsonb" if kind == "j" and jsonb else f"${n}")
        out.append(rest)
    return "".join(out)


@attrs.frozen
class _Statements:
    """One event's statements' parameters, pre-encoded for a driver."""

    event_id: str
    batch_id: str
    update: tuple[Any, ...]
    inbox: tuple[Any, ...]
    log: list[tuple[Any, ...]]
    outbox: list[tuple[Any, ...]]


def _params(change: Change, time: Any) -> _Statements:
    state, entry = change.state, change.inbox
    assert state is not None
    assert entry is not None
    assert change.expected_version is not None
    return _Statements(
        event_id=entry.event_id,
        batch_id=change.batch_id,
        update=(
            state.status.value,
            state.version,
            dumps(encode_state(state)),
            time(next_deadline(state)),
            time(state.updated_at),
            change.batch_id,
            change.expected_version,
        ),
        inbox=(entry.event_id, entry.topic, entry.batch_id, entry.result, time(entry.processed_at)),
        log=[
            (
                t.batch_id,
                t.entity,
                t.name,
                t.trigger,
                t.source,
                t.dest,
                t.run_id,
                t.event_id,
                t.correlation_id,
                time(t.at),
            )
            for t in change.transitions
        ],
        outbox=[
            (m.event_id, m.topic, m.key, dumps(dict(m.value)), time(change.at), time(change.at))
            for m in change.outbox
        ],
    )


class RawSqlite:
    """aiosqlite directly, with the store's pragmas, running the service's statements."""

    def __init__(self, path: Path, changes: Sequence[Change], *, synchronous: str) -> None:
        self.path = path
        self.synchronous = synchronous
        self.events = [_params(c, sqlite_time) for c in changes]
        self.sql = {
            k: v.replace("{p}", "?").replace("{j}", "?").replace("{false}", "0")
            for k, v in {
                "update": _UPDATE,
                "inbox": _INBOX,
                "log": _LOG,
                "outbox": _OUTBOX,
                "seen": _SEEN,
                "load": _LOAD,
            }.items()
        }
        self.conn: aiosqlite.Connection | None = None

    async def open(self) -> None:
        self.conn = conn = await aiosqlite.connect(self.path, isolation_level=None)
        await conn.execute("PRAGMA busy_timeout = 5000")
        await conn.execute("PRAGMA journal_mode = WAL")
        await conn.execute(f"PRAGMA synchronous = {self.synchronous}")

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()

    async def seconds(self, lo: int, hi: int) -> float:
        """Run events ``lo`` to ``hi`` (one transaction each); returns the seconds taken."""
        conn, sql = self.conn, self.sql
        assert conn is not None
        started = time.perf_counter()
        for e in self.events[lo:hi]:
            async with conn.execute(sql["seen"], (e.event_id,)) as cursor:
                assert await cursor.fetchone() is None
            async with conn.execute(sql["load"], (e.batch_id,)) as cursor:
                assert await cursor.fetchone() is not None
            await conn.execute("BEGIN IMMEDIATE")
            cursor = await conn.execute(sql["update"], e.update)
            assert cursor.rowcount == 1
            await conn.execute(sql["inbox"], e.inbox)
            await conn.executemany(sql["log"], e.log)
            await conn.executemany(sql["outbox"], e.outbox)
            await conn.execute("COMMIT")
        return time.perf_counter() - started


class RawPostgres:
    """asyncpg directly, running the service's statements (one transaction per event)."""

    def __init__(self, url: str, schema: str, changes: Sequence[Change]) -> None:
        self.url = url
        self.schema = schema
        self.events = [_params(c, lambda v: v) for c in changes]
        self.sql = {
            k: _numbered(v, jsonb=True)
            for k, v in {
                "update": _UPDATE,
                "inbox": _INBOX,
                "log": _LOG,
                "outbox": _OUTBOX,
                "seen": _SEEN,
                "load": _LOAD,
            }.items()
        }
        self.conn: asyncpg.Connection | None = None

    async def open(self) -> None:
        self.conn = await asyncpg.connect(pg_dsn(self.url), server_settings={"search_path": self.schema})

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()

    async def seconds(self, lo: int, hi: int) -> float:
        """Run events ``lo`` to ``hi`` (one transaction each); returns the seconds taken."""
        conn, sql = self.conn, self.sql
        assert conn is not None
        started = time.perf_counter()
        for e in self.events[lo:hi]:
            assert await conn.fetchval(sql["seen"], e.event_id) is None
            assert await conn.fetchval(sql["load"], e.batch_id) is not None
            async with conn.transaction():
                status = await conn.execute(sql["update"], *e.update)
                assert status == "UPDATE 1"
                await conn.execute(sql["inbox"], *e.inbox)
                await conn.executemany(sql["log"], e.log)
                await conn.executemany(sql["outbox"], e.outbox)
        return time.perf_counter() - started


# -- databases -----------------------------------------------------------------------------


@attrs.frozen
class Database:
    """A migrated, empty database: a SQLite file or a PostgreSQL schema of its own."""

    url: str
    schema: str | None = None
    path: Path | None = None


class fresh_database:
    """An async context manager giving a new migrated database, removed afterwards."""

    def __init__(self, backend: str, workdir: Path, postgres: str | None = None) -> None:
        self.backend = backend
        self.workdir = workdir
        self.postgres = postgres
        self.db: Database | None = None

    async def __aenter__(self) -> Database:
        name = uuid.uuid4().hex[:10]
        if self.backend == "sqlite":
            path = self.workdir / f"bench-{name}.db"
            self.db = Database(f"sqlite+aiosqlite:///{path}", path=path)
        else:
            assert self.postgres is not None
            self.db = Database(self.postgres, schema=f"bench_{name}")
            await pg_schema(self.postgres, self.db.schema or "")
        await migrate(self.db.url, self.db.schema)
        return self.db

    async def __aexit__(self, *exc: object) -> None:
        db = self.db
        if db is None:
            return
        if db.path is not None:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{db.path}{suffix}").unlink(missing_ok=True)  # noqa: ASYNC240 - set-up, untimed
        elif db.schema is not None:
            await pg_schema(db.url, db.schema, drop=True)


def postgres_url() -> tuple[str | None, str]:
    """The PostgreSQL URL to measure against, or ``None`` and why not."""
    url = os.environ.get("PIPELINE_STATE_TEST_POSTGRES", "postgresql+asyncpg://root@127.0.0.1:5432/test")

    async def probe() -> str | None:
        try:
            conn = await asyncpg.connect(pg_dsn(url), timeout=3)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            return f"{type(exc).__name__}: {exc}"
        await conn.close()
        return None

    problem = asyncio.run(probe())
    return (None, f"PostgreSQL at {url} is not reachable ({problem})") if problem else (url, url)


async def seed(db: Database, states: Sequence[BatchState], *, filler: int = 0) -> None:
    if db.path is not None:
        bulk_insert_sqlite(db.path, states, filler=filler)
    else:
        assert db.schema is not None
        await bulk_insert_postgres(db.url, db.schema, states, filler=filler)
        conn = await asyncpg.connect(pg_dsn(db.url), server_settings={"search_path": db.schema})
        try:
            await conn.execute("ANALYZE batches")  # as autovacuum would after a bulk load
        finally:
            await conn.close()


# -- measurements --------------------------------------------------------------------------


async def service_seconds(
    db: Database, deliveries: Sequence[Delivery], *, warmup: int, synchronous: str = "FULL"
) -> float:
    """Seconds the service takes for ``deliveries[warmup:]`` (one transaction per event)."""
    store = await open_store(db.url, schema=db.schema, upgrade=False, synchronous=synchronous)
    try:
        service = PipelineService(store, clock=ManualClock())
        await _timed(service, deliveries[:warmup])
        return await _timed(service, deliveries[warmup:])
    finally:
        await store.close()


async def _timed(service: PipelineService, deliveries: Sequence[Delivery]) -> float:
    """Seconds ``service`` takes to handle ``deliveries``; each must dispatch two commands."""
    emitted = 0
    started = time.perf_counter()
    for delivery in deliveries:
        emitted += len((await service.handle_message(*delivery)).messages)
    elapsed = time.perf_counter() - started
    if emitted != 2 * len(deliveries):
        raise RuntimeError(f"the service emitted {emitted} messages, expected {2 * len(deliveries)}")
    return elapsed


@dataclass(frozen=True)
class Config:
    """Sizes of one benchmark run."""

    events: int = 2000
    warmup: int = 100
    repetitions: int = 3
    small: int = 1000
    big: int = 1_000_000
    scale_events: int = 300
    history: int = 200
    relay_rows: int = 2000
    postgres: bool = True


QUICK = Config(
    events=40, warmup=10, repetitions=1, small=200, big=2000, scale_events=40, history=20, relay_rows=100
)


async def _durable(
    cfg: Config, backend: str, workdir: Path, pg: str | None, synchronous: str, log: Log
) -> tuple[list[float], list[float]]:
    """Events/s of the service and of the raw driver, per repetition.

    Both run side by side on two identically seeded databases, in slices of events that
    alternate which side goes first, so a change in the machine's load hits both alike.
    """
    total = cfg.warmup + cfg.events
    slices = max(1, min(10, cfg.events))
    service_rates, raw_rates = [], []
    for rep in range(cfg.repetitions):
        work = await Workload.build(total, prefix=f"r{rep}-")
        async with (
            fresh_database(backend, workdir, pg) as mine,
            fresh_database(backend, workdir, pg) as theirs,
        ):
            await seed(mine, work.states)
            await seed(theirs, work.states)
            store = await open_store(mine.url, schema=mine.schema, upgrade=False, synchronous=synchronous)
            raw: RawSqlite | RawPostgres
            if theirs.path is not None:
                raw = RawSqlite(theirs.path, work.changes, synchronous=synchronous)
            else:
                assert theirs.schema is not None
                raw = RawPostgres(theirs.url, theirs.schema, work.changes)
            await raw.open()
            try:
                service = PipelineService(store, clock=ManualClock())
                await _timed(service, work.deliveries[: cfg.warmup])
                await raw.seconds(0, cfg.warmup)
                spent = {"service": 0.0, "raw": 0.0}
                step = cfg.events // slices
                for k in range(slices):
                    lo, hi = cfg.warmup + k * step, cfg.warmup + (k + 1) * step
                    for side in ("service", "raw") if (rep + k) % 2 == 0 else ("raw", "service"):
                        if side == "service":
                            spent[side] += await _timed(service, work.deliveries[lo:hi])
                        else:
                            spent[side] += await raw.seconds(lo, hi)
            finally:
                await raw.close()
                await store.close()
        done = step * slices
        service_rates.append(done / spent["service"])
        raw_rates.append(done / spent["raw"])
        label = f"{backend} {synchronous}" if backend == "sqlite" else backend
        log(f"{label} rep {rep + 1}: service {service_rates[-1]:,.0f} ev/s, raw {raw_rates[-1]:,.0f} ev/s")
    return service_rates, raw_rates


def _durable_row(
    figure: str, what: str, service: list[float], raw: list[float], *, targeted: bool = True
) -> Row:
    ratios = [s / r for s, r in zip(service, raw, strict=True)]
    return Row(
        figure=figure,
        description=(
            f"outcome events/s through PipelineService(SqlStore) on {what}, one transaction per "
            "event: inbox check, load, decide, UPDATE ... WHERE version = :read, inbox + "
            "transition log + outbox INSERTs, COMMIT"
        ),
        value=statistics.median(service),
        unit="ev/s",
        baseline=statistics.median(raw),
        baseline_description=(
            f"the raw driver on {what} executing the same statements with the same pre-encoded "
            "parameters, one transaction per event"
        ),
        ratio=statistics.median(ratios),
        target=Target("ratio", ">=", 0.5, ">= 0.5x") if targeted else None,
        spread=f"ratios {', '.join(f'{r:.2f}' for r in ratios)}",
        notes=()
        if targeted
        else (
            "not durable (a power cut may lose the last commits): shown for the CPU cost of the "
            "service path once no fsync hides it; the target is on durable_sqlite",
        ),
    )


_UNSYNCED = {
    "sqlite": "SQLite file, WAL, synchronous=NORMAL",
    "postgres": "PostgreSQL, synchronous_commit=off",
}


def _unsynced(db: Database) -> dict[str, Any]:
    """Store options without an fsync per commit (SQLite ``NORMAL``, PostgreSQL
    ``synchronous_commit=off``): both sides of a cost-growth figure would pay the same fsync,
    which would hide what the size of the table or of the history costs."""
    if db.path is not None:
        return {"synchronous": "NORMAL"}
    return {"connect_args": {"server_settings": {"synchronous_commit": "off"}}}


async def _side_by_side(
    cfg: Config, log: Log, label: str, sides: dict[str, tuple[Database, Workload]]
) -> dict[str, list[float]]:
    """Service cost per event (us) of each side, per repetition.

    Small slices alternate which side goes first, so drift in the machine's load falls on
    both alike."""
    costs: dict[str, list[float]] = {name: [] for name in sides}
    stores = {
        name: await open_store(db.url, schema=db.schema, upgrade=False, **_unsynced(db))
        for name, (db, _) in sides.items()
    }
    try:
        services = {name: PipelineService(store, clock=ManualClock()) for name, store in stores.items()}
        for name, (_, work) in sides.items():
            await _timed(services[name], work.deliveries[: cfg.warmup])
        slices = 5
        step = cfg.scale_events // slices
        names = list(sides)
        for rep in range(cfg.repetitions):
            seconds = dict.fromkeys(names, 0.0)
            lo = cfg.warmup + rep * cfg.scale_events
            for k in range(slices):
                for name in names if (rep * slices + k) % 2 == 0 else reversed(names):
                    part = sides[name][1].deliveries[lo + k * step : lo + (k + 1) * step]
                    seconds[name] += await _timed(services[name], part)
            for name in names:
                costs[name].append(seconds[name] / (step * slices) * 1e6)
            log(
                f"{label} rep {rep + 1}: "
                + " vs ".join(f"{costs[n][-1]:,.0f} us" for n in names)
                + " per event"
            )
    finally:
        for store in stores.values():
            await store.close()
    return costs


def _active(cfg: Config) -> int:
    return cfg.scale_events * cfg.repetitions + cfg.warmup


async def _scale(cfg: Config, workdir: Path, log: Log, backend: str = "sqlite", pg: str | None = None) -> Row:
    """Service cost per event with ``big`` stored batches against ``small``."""
    active = _active(cfg)
    if active > cfg.small:
        raise ValueError(f"{active} active batches do not fit in the small store of {cfg.small}")
    work = await Workload.build(active, prefix="s-")
    async with (
        fresh_database(backend, workdir, pg) as small,
        fresh_database(backend, workdir, pg) as big,
    ):
        log(f"building the {backend} stores: {cfg.small:,} and {cfg.big:,} batches")
        started = time.perf_counter()
        await seed(small, work.states, filler=cfg.small - active)
        await seed(big, work.states, filler=cfg.big - active)
        log(f"stores built in {time.perf_counter() - started:.1f} s")
        costs = await _side_by_side(
            cfg, log, f"scale {backend}", {"small": (small, work), "big": (big, work)}
        )
    ratios = [b / s for b, s in zip(costs["big"], costs["small"], strict=True)]
    what = _UNSYNCED[backend]
    how, target = ("one bulk INSERT", 1.5) if backend == "sqlite" else ("COPY", 1.3)
    return Row(
        figure=f"scale_{backend}",
        description=(
            f"service cost per outcome event with {cfg.big:,} stored batches ({what}; built by "
            f"{how} of pre-encoded state documents)"
        ),
        value=statistics.median(costs["big"]),
        unit="us/ev",
        baseline=statistics.median(costs["small"]),
        baseline_description=f"the same events with {cfg.small:,} stored batches",
        ratio=statistics.median(ratios),
        target=Target("ratio", "<=", target, f"<= {target}x"),
        spread=f"ratios {', '.join(f'{r:.2f}' for r in ratios)}",
    )


async def _history(cfg: Config, workdir: Path, log: Log, backend: str, pg: str | None = None) -> Row:
    """Service cost per event on batches with ``cfg.history`` archived runs against one."""
    active = _active(cfg)
    short = await Workload.build(active, prefix="h1-", history=1)
    long = await Workload.build(active, prefix="hn-", history=cfg.history)
    async with (
        fresh_database(backend, workdir, pg) as one,
        fresh_database(backend, workdir, pg) as many,
    ):
        log(f"building the {backend} stores: {active:,} batches with 1 and with {cfg.history} archived runs")
        await seed(one, short.states)
        await seed(many, long.states)
        costs = await _side_by_side(
            cfg, log, f"history {backend}", {"one": (one, short), "many": (many, long)}
        )
    ratios = [m / o for m, o in zip(costs["many"], costs["one"], strict=True)]
    what = (
        "SQLite file, WAL, synchronous=NORMAL"
        if backend == "sqlite"
        else "PostgreSQL, synchronous_commit=off"
    )
    return Row(
        figure=f"history_{backend}",
        description=(
            f"service cost per outcome event on batches whose history holds {cfg.history} "
            f"archived runs ({what})"
        ),
        value=statistics.median(costs["many"]),
        unit="us/ev",
        baseline=statistics.median(costs["one"]),
        baseline_description="the same events on batches with one archived run",
        ratio=statistics.median(ratios),
        target=Target("ratio", "<=", 1.2, "<= 1.2x"),
        spread=f"ratios {', '.join(f'{r:.2f}' for r in ratios)}",
    )


def run(cfg: Config, log: Log, only: Sequence[str] = ()) -> list[Row]:
    """Every figure of the SQL benchmark, in :data:`FIGURES` order (PostgreSQL ones only
    when a server is reachable); with ``only``, the figures whose names start with one of
    its entries."""
    from bench import relay  # here: bench/relay.py imports this module

    def wanted(*figures: str) -> bool:
        return not only or any(f.startswith(tuple(only)) for f in figures)

    pg, why = postgres_url() if cfg.postgres else (None, "disabled by --no-postgres")
    if pg is None:
        log(f"PostgreSQL figures skipped: {why}")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="ps-bench-sql-") as tmp:
        workdir = Path(tmp)
        if wanted("durable_sqlite"):
            service, raw = asyncio.run(_durable(cfg, "sqlite", workdir, None, "FULL", log))
            rows.append(_durable_row("durable_sqlite", "SQLite (file, WAL, synchronous=FULL)", service, raw))
        if wanted("durable_sqlite_normal"):
            service, raw = asyncio.run(_durable(cfg, "sqlite", workdir, None, "NORMAL", log))
            rows.append(
                _durable_row(
                    "durable_sqlite_normal",
                    "SQLite (file, WAL, synchronous=NORMAL)",
                    service,
                    raw,
                    targeted=False,
                )
            )
        if pg is not None and wanted("durable_postgres"):
            service, raw = asyncio.run(_durable(cfg, "postgres", workdir, pg, "FULL", log))
            rows.append(_durable_row("durable_postgres", "PostgreSQL (asyncpg)", service, raw))
        if wanted("relay_"):
            rows.extend(
                relay.run(relay.Config(cfg.relay_rows, cfg.repetitions), log, workdir=workdir, postgres=pg)
            )
        if wanted("scale_sqlite"):
            rows.append(asyncio.run(_scale(cfg, workdir, log)))
        if wanted("history_sqlite"):
            rows.append(asyncio.run(_history(cfg, workdir, log, "sqlite")))
        if pg is not None and wanted("scale_postgres"):
            rows.append(asyncio.run(_scale(cfg, workdir, log, "postgres", pg)))
        if pg is not None and wanted("history_postgres"):
            rows.append(asyncio.run(_history(cfg, workdir, log, "postgres", pg)))
    order = {name: i for i, name in enumerate(FIGURES)}
    return sorted(rows, key=lambda r: order.get(r.figure, len(order)))


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/sql.py", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: shows it runs, figures meaningless")
    parser.add_argument("--events", type=int, help="timed outcome events per repetition (default 2,000)")
    parser.add_argument("--repetitions", type=int, help="repetitions of each figure (default 3)")
    parser.add_argument("--big", type=int, help="batches in the large stores (default 1,000,000)")
    parser.add_argument("--history", type=int, help="archived runs per batch for history_* (default 200)")
    parser.add_argument(
        "--only",
        metavar="PREFIXES",
        help="comma-separated figure-name prefixes to measure (e.g. scale,history); default all",
    )
    parser.add_argument("--no-postgres", action="store_true", help="SQLite figures only")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--fail-on-miss", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else Config()
    for name in ("events", "repetitions", "big", "history"):
        if getattr(args, name) is not None:
            cfg = replace(cfg, **{name: getattr(args, name)})
    if args.no_postgres:
        cfg = replace(cfg, postgres=False)
    env = environment()
    print(
        f"pipeline-state SQL benchmark - Python {env['python']}, {env['cpu_count']} cores, "
        f"load average {env['load_average']}, SQLite {sqlite3.sqlite_version}"
        + (" - QUICK MODE, figures not meaningful" if args.quick else "")
    )
    return report(
        "sql (issue 3, benchmark)",
        lambda: run(cfg, _log, only=tuple(filter(None, (args.only or "").split(",")))),
        env,
        quick=args.quick,
        json_path=args.json,
        fail_on_miss=args.fail_on_miss,
    )


if __name__ == "__main__":
    raise SystemExit(main())
