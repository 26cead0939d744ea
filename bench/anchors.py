"""Side by side with DBOS Transact (issue 16, point 4): ``python bench/anchors.py [--quick]``.

One run, one local PostgreSQL, three measurements interleaved in ``--rounds`` rounds:

* ``floor_commits_1`` / ``floor_commits_8``: raw PostgreSQL, one single-row INSERT committed
  per round trip (asyncpg, autocommit), on 1 and on 8 connections: what the server allows.
* ``dbos_steps_seq`` / ``dbos_steps_8``: DBOS Transact workflows of 4 durable no-op steps
  (``@DBOS.step`` returning its argument), called one after another from one thread, then
  from 8 threads at once; in steps/s. DBOS checkpoints each step's output in its own
  transaction (see ``bench/README.md`` for what it writes).
* ``ps_outcomes_seq`` / ``ps_outcomes_8``: pipeline-state's SQL store on PostgreSQL: a
  ``comprehensive`` run (4 phases: spellcheck, then nlp and cj_assessment, then ai_feedback)
  receives one outcome per phase through ``PipelineService.handle_message``, one caller,
  then 8 concurrent callers (asyncio tasks, each running its runs' outcomes in order); in
  outcomes/s. Each outcome is one unit of work: inbox, state compare-and-set, transition
  log, outbox rows, one COMMIT. ``--pool-size`` sets the store's connection pool (default:
  ``2 x callers``, so each caller can have a writing connection; ``ps_outcomes_8_pool5`` is
  the same with SQLAlchemy's default pool of 5, which gives the store 2 writing lanes).

Ratios: pipeline-state / DBOS at the same concurrency (steps/s against outcomes/s: one
durable step against one durable outcome). The rows also give the CPU time of this process
per step or outcome, the CPU time of the PostgreSQL backends serving it (from ``/proc``, for
the backends of the bench's own database), and the statements and commits per step or
outcome, counted by SQLAlchemy events on every engine of the process (DBOS's and the
store's).

The bench creates its own databases (``<name>_dbos``, ``<name>_ps``; ``--database``,
default ``anchors``) on the server of ``PIPELINE_STATE_TEST_POSTGRES`` (or ``--postgres``)
and drops them at the end. DBOS comes from the ``bench`` extra (``pip install -e
'.[bench]'``); without it the DBOS rows are left out. Nothing here is a test assertion;
``tests/test_bench_anchors_smoke.py`` runs ``--quick``.
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
import concurrent.futures  # noqa: E402
import functools  # noqa: E402
import importlib.util  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Awaitable, Callable, Sequence  # noqa: E402
from dataclasses import dataclass, field, replace  # noqa: E402
from typing import Any  # noqa: E402

import asyncpg  # type: ignore[import-untyped]  # noqa: E402
from pipeline_state_sql import SqlStore, create_engine, create_or_upgrade  # noqa: E402
from sqlalchemy import event  # noqa: E402
from sqlalchemy.engine import Engine, make_url  # noqa: E402

from bench._util import Row, Target, headline_and_report  # noqa: E402
from pipeline_state import PipelineService  # noqa: E402
from pipeline_state.testing import Envelopes  # noqa: E402

__all__ = ["FIGURES", "QUICK", "Config", "main", "run"]

FIGURES = (
    "floor_commits_1",
    "floor_commits_8",
    "dbos_steps_seq",
    "dbos_steps_8",
    "ps_outcomes_seq",
    "ps_outcomes_8",
    "ps_outcomes_8_pool5",
)
STEPS = 4
"""Durable steps per DBOS workflow; phases (outcomes) per pipeline-state run."""
PHASE_ORDER = ("spellcheck", "nlp", "cj_assessment", "ai_feedback")
"""The order the outcomes of a ``comprehensive`` run arrive in (ai_feedback needs nlp)."""
ESSAYS = 3

Log = Callable[[str], None]


@dataclass(frozen=True)
class Config:
    workflows: int = 200
    """DBOS workflows per measurement (x4 steps)."""
    runs: int = 200
    """pipeline-state runs per measurement (x4 outcomes)."""
    commits: int = 1000
    """Raw commits per floor measurement."""
    callers: int = 8
    rounds: int = 3
    pool_size: int | None = None
    """The store's pool size (``None``: 2 x callers)."""
    dbos: bool = True


QUICK = Config(workflows=16, runs=16, commits=80, rounds=1)


@dataclass
class Sampled:
    """One kind of measurement over the rounds: rates, and per item the CPU of this process,
    the CPU of the database backends serving it, and the statements counted."""

    rates: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    server_us: list[float] = field(default_factory=list)
    statements: Counter[str] = field(default_factory=Counter)
    items: int = 0


def _dsn(url: str, database: str | None = None) -> str:
    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


async def _admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(_dsn(url, "postgres"))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


class Counted:
    """Statements and commits of every SQLAlchemy engine of this process (DBOS's and the
    store's), counted while :attr:`on`. A statement counts by its first word. A transaction
    that ran an INSERT, UPDATE or DELETE counts as ``COMMIT(write)`` when it commits (a
    durable commit: the server flushes its WAL); one that only read as ``COMMIT(read)``
    (no flush); a writing statement on an autocommit connection is a ``COMMIT(write)`` of
    its own."""

    WRITES = ("INSERT", "UPDATE", "DELETE")

    def __init__(self) -> None:
        self.on = False
        self.only: Any = None
        """A pool: count only the statements of connections from it (``None``: all)."""
        self.seen: Counter[str] = Counter()
        event.listen(Engine, "before_cursor_execute", self._statement)
        event.listen(Engine, "commit", self._commit)
        event.listen(Engine, "rollback", self._rollback)

    def _counts(self, conn: Any) -> bool:
        return self.on and (self.only is None or conn.engine.pool is self.only)

    def _statement(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not self._counts(conn):
            return
        verb = statement.lstrip().split(None, 1)[0].upper()
        self.seen[verb] += 1
        writes = verb in self.WRITES or (verb == "WITH" and any(w in statement.upper() for w in self.WRITES))
        if writes:
            if conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
                self.seen["COMMIT(write)"] += 1
            else:
                conn.info["anchors_wrote"] = True

    def _commit(self, conn: Any) -> None:
        wrote = conn.info.pop("anchors_wrote", False)
        if self._counts(conn) and conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            self.seen["COMMIT(write)" if wrote else "COMMIT(read)"] += 1

    def _rollback(self, conn: Any) -> None:
        conn.info.pop("anchors_wrote", None)

    def take(self) -> Counter[str]:
        seen, self.seen = self.seen, Counter()
        return seen


async def _backend_pids(url: str, database: str) -> list[int]:
    conn = await asyncpg.connect(_dsn(url, "postgres"))
    try:
        rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1", database)
        return [int(r["pid"]) for r in rows]
    finally:
        await conn.close()


def _cpu_of(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (0 when it is gone or not readable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ServerCpu:
    """CPU time of the PostgreSQL backends serving ``database`` between :meth:`start` and
    :meth:`stop` (Linux, server on this machine; backends that start in between count in
    full, backends that end in between are missed: the bench keeps its connections open)."""

    def __init__(self, url: str, database: str) -> None:
        self.url, self.database = url, database
        self._before: dict[int, float] = {}

    async def start(self) -> None:
        self._before = {pid: _cpu_of(pid) for pid in await _backend_pids(self.url, self.database)}

    async def stop(self) -> float:
        pids = await _backend_pids(self.url, self.database)
        return sum(_cpu_of(pid) - self._before.get(pid, 0.0) for pid in pids)


# -- the floor -----------------------------------------------------------------------------


class Floor:
    """``connections`` asyncpg connections to ``database``, each inserting single rows, one
    commit per round trip (autocommit)."""

    def __init__(self, url: str, database: str, connections: int) -> None:
        self.dsn, self.connections = _dsn(url, database), connections
        self.conns: list[Any] = []

    async def open(self) -> None:
        self.conns = [await asyncpg.connect(self.dsn) for _ in range(self.connections)]
        await self.conns[0].execute(
            "CREATE TABLE IF NOT EXISTS floor_commits (id bigserial PRIMARY KEY, v int)"
        )

    async def run(self, commits: int) -> int:
        each = max(1, commits // self.connections)

        async def one(conn: Any) -> None:
            for i in range(each):
                await conn.execute("INSERT INTO floor_commits (v) VALUES ($1)", i)

        await asyncio.gather(*(one(c) for c in self.conns))
        return each * self.connections

    async def close(self) -> None:
        for conn in self.conns:
            await conn.close()


# -- DBOS ----------------------------------------------------------------------------------


class Dbos:
    """DBOS Transact launched on its own database, with a workflow of ``STEPS`` no-op steps."""

    def __init__(self, url: str, database: str) -> None:
        from dbos import DBOS

        self._dbos = DBOS

        @DBOS.step()
        def noop(i: int) -> int:
            return i

        @DBOS.workflow()
        def workflow(n: int) -> int:
            return sum(noop(n + i) for i in range(STEPS))

        self.workflow: Callable[[int], int] = workflow
        DBOS(
            config={
                "name": "pipeline-state-anchors",
                "system_database_url": _dsn(url, database),
                "log_level": "WARNING",
            }
        )
        DBOS.launch()

    def run(self, workflows: int, threads: int) -> int:
        """Run ``workflows`` workflows from ``threads`` threads (one: in this thread, one after
        another); the steps they made."""
        if threads == 1:
            for n in range(workflows):
                self.workflow(n)
        else:
            with concurrent.futures.ThreadPoolExecutor(threads) as pool:
                for _ in pool.map(self.workflow, range(workflows)):
                    pass
        return workflows * STEPS

    def close(self) -> None:
        self._dbos.destroy(destroy_registry=True)


# -- pipeline-state ------------------------------------------------------------------------


class Pipelines:
    """A ``PipelineService`` on a :class:`SqlStore` of its own PostgreSQL database."""

    def __init__(self, url: str, database: str, pool_size: int) -> None:
        dsn = make_url(_dsn(url, database)).set(drivername="postgresql+asyncpg")
        self.engine = create_engine(dsn, pool_size=pool_size)
        self.store = SqlStore(self.engine, owns_engine=True)
        self.service = PipelineService(self.store)
        self.env = Envelopes(source_service="anchors")

    async def open(self) -> None:
        await create_or_upgrade(self.engine)

    async def close(self) -> None:
        await self.store.close()

    async def prepare(self, count: int, callers: int) -> list[tuple[str, str]]:
        """``count`` batches registered, provisioned and running ``comprehensive`` (spellcheck
        commanded): ``(batch_id, correlation_id)`` each. Not timed."""
        tag = uuid.uuid4().hex[:8]
        batches = [(f"a{tag}-{i:05d}", str(uuid.uuid4())) for i in range(count)]

        async def one(batch_id: str, correlation_id: str) -> None:
            essays = self.env.item_ids(batch_id, ESSAYS)
            await self.service.handle_message(*self.env.register(batch_id, items=ESSAYS))
            await self.service.handle_message(*self.env.provisioned(batch_id, essays))
            result = await self.service.handle_message(
                *self.env.request(batch_id, "comprehensive", correlation_id=correlation_id)
            )
            if result.decision is None or not result.messages:
                raise RuntimeError(f"{batch_id}: the request was not accepted")

        await _in_lanes(batches, callers, one)
        return batches

    async def run_outcomes(self, batch_id: str, correlation_id: str) -> None:
        """The four outcomes of one run, in order; the last one completes it."""
        essays = self.env.item_ids(batch_id, ESSAYS)
        for phase in PHASE_ORDER:
            result = await self.service.handle_message(
                *self.env.outcome(batch_id, phase, correlation_id, processed=essays)
            )
            if result.decision is None or result.duplicate:
                raise RuntimeError(f"{batch_id} {phase}: the outcome was not applied")

    async def run(self, batches: Sequence[tuple[str, str]], callers: int) -> int:
        """Every run of ``batches`` through its four outcomes, by ``callers`` concurrent
        callers; the outcomes handled."""
        await _in_lanes(batches, callers, self.run_outcomes)
        return len(batches) * STEPS

    async def check(self, batches: Sequence[tuple[str, str]]) -> None:
        """Every run completed and was archived (after the timing)."""
        for batch_id, _ in batches:
            state = await self.store.load(batch_id)
            if state is None or state.active_run is not None or state.past.count != 1:
                raise RuntimeError(f"{batch_id}: the run did not complete")


async def _in_lanes(items: Sequence[tuple[str, str]], callers: int, work: Callable[[str, str], Any]) -> None:
    """``work(*item)`` for every item, by ``callers`` tasks taking the next item when free."""
    queue = list(reversed(items))

    async def caller() -> None:
        while queue:
            await work(*queue.pop())

    await asyncio.gather(*(caller() for _ in range(callers)))


# -- the run -------------------------------------------------------------------------------


async def _timed(
    work: Callable[[], Awaitable[int]],
    server: ServerCpu,
    counted: Counted | None,
    sample: Sampled,
    *,
    only: Any = None,
) -> float:
    """Run ``work`` (it returns the items it did) and add its figures to ``sample``; the rate.
    ``counted``: count SQLAlchemy statements meanwhile (of the pool ``only``, if given)."""
    await server.start()
    if counted is not None:
        counted.take()
        counted.on, counted.only = True, only
    wall, cpu = time.perf_counter(), time.process_time()
    items = await work()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    server_seconds = await server.stop()
    if counted is not None:
        counted.on = False
        sample.statements.update(counted.take())
    sample.rates.append(items / wall)
    sample.cpu_us.append(cpu * 1e6 / items)
    sample.server_us.append(server_seconds * 1e6 / items)
    sample.items += items
    return items / wall


async def _round(
    cfg: Config,
    url: str,
    names: dict[str, str],
    samples: dict[str, Sampled],
    dbos: Dbos | None,
    counted: Counted,
    log: Log,
) -> None:
    for label, connections in (("floor_commits_1", 1), ("floor_commits_8", cfg.callers)):
        floor = Floor(url, names["ps"], connections)
        await floor.open()
        try:
            rate = await _timed(
                functools.partial(floor.run, cfg.commits),
                ServerCpu(url, names["ps"]),
                None,  # asyncpg directly: nothing for SQLAlchemy to count
                samples[label],
            )
        finally:
            await floor.close()
        log(f"{label}: {rate:,.0f} commits/s")
    if dbos is not None:
        for label, threads in (("dbos_steps_seq", 1), ("dbos_steps_8", cfg.callers)):
            rate = await _timed(
                functools.partial(asyncio.to_thread, dbos.run, cfg.workflows, threads),
                ServerCpu(url, names["dbos"]),
                counted,
                samples[label],
            )
            log(f"{label}: {rate:,.0f} steps/s")
    pool = cfg.pool_size or 2 * cfg.callers
    for label, callers, size in (
        ("ps_outcomes_seq", 1, pool),
        ("ps_outcomes_8", cfg.callers, pool),
        ("ps_outcomes_8_pool5", cfg.callers, 5),
    ):
        pipelines = Pipelines(url, names["ps"], size)
        try:
            await pipelines.open()
            batches = await pipelines.prepare(cfg.runs, cfg.callers)
            rate = await _timed(
                functools.partial(pipelines.run, batches, callers),
                ServerCpu(url, names["ps"]),
                counted,
                samples[label],
                only=pipelines.engine.sync_engine.pool,
            )
            await pipelines.check(batches)
        finally:
            await pipelines.close()
        log(f"{label}: {rate:,.0f} outcomes/s (pool {size})")


async def run_async(cfg: Config, log: Log, url: str, database: str) -> list[Row]:
    names = {"dbos": f"{database}_dbos", "ps": f"{database}_ps"}
    for name in names.values():
        await _admin(url, f'DROP DATABASE IF EXISTS "{name}"')
        await _admin(url, f'CREATE DATABASE "{name}"')
    samples = {name: Sampled() for name in FIGURES}
    counted = Counted()
    dbos: Dbos | None = None
    try:
        if cfg.dbos:
            dbos = Dbos(url, names["dbos"])
            await asyncio.to_thread(dbos.run, cfg.callers, cfg.callers)  # warm-up: its connections
        for index in range(cfg.rounds):
            log(f"round {index + 1}/{cfg.rounds}")
            await _round(cfg, url, names, samples, dbos, counted, log)
        written = await _dbos_rows(url, names["dbos"]) if dbos is not None else {}
    finally:
        if dbos is not None:
            dbos.close()
        for name in names.values():
            await _admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return _rows(samples, cfg, written)


async def _dbos_rows(url: str, database: str) -> dict[str, int]:
    """Rows in DBOS's tables (schema ``dbos``) after every measurement."""
    conn = await asyncpg.connect(_dsn(url, database))
    try:
        tables = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'dbos' ORDER BY 1"
        )
        counts = {}
        for (table,) in tables:
            counts[table] = int(await conn.fetchval(f'SELECT count(*) FROM dbos."{table}"'))
        return {t: n for t, n in counts.items() if n}
    finally:
        await conn.close()


def _rows(samples: dict[str, Sampled], cfg: Config, written: dict[str, int]) -> list[Row]:
    rows: list[Row] = []

    def median(values: Sequence[float]) -> float | None:
        return statistics.median(values) if values else None

    def spread(sample: Sampled, unit: str) -> str:
        return f"n={len(sample.rates)} rounds: {', '.join(f'{v:,.0f}' for v in sample.rates)} {unit}"

    def per_item(sample: Sampled, what: str) -> tuple[str, ...]:
        cpu = (
            f"CPU per {what}: this process {median(sample.cpu_us) or 0:,.0f} µs, "
            f"the database backends {median(sample.server_us) or 0:,.0f} µs"
        )
        if not sample.items or not sample.statements:
            return (cpu,)
        counts = ", ".join(f"{k} {n / sample.items:.2f}" for k, n in sorted(sample.statements.items()))
        return (cpu, f"statements per {what} (SQLAlchemy events): {counts}")

    floor_1 = median(samples["floor_commits_1"].rates)
    for label, connections in (("floor_commits_1", 1), ("floor_commits_8", cfg.callers)):
        s = samples[label]
        rows.append(
            Row(
                label,
                f"raw PostgreSQL: single-row INSERTs, one commit each, on {connections} connection(s)",
                median(s.rates) or 0.0,
                "commits/s",
                baseline=floor_1 if connections > 1 else None,
                baseline_description="the same on one connection",
                ratio=(median(s.rates) or 0.0) / floor_1 if floor_1 and connections > 1 else None,
                spread=spread(s, "commits/s"),
                notes=(*per_item(s, "commit"), "asyncpg: one INSERT per round trip, in autocommit"),
            )
        )
    dbos = {
        "seq": median(samples["dbos_steps_seq"].rates),
        "8": median(samples["dbos_steps_8"].rates),
    }
    if cfg.dbos:
        workflows = written.get("workflow_status", 0)
        notes: tuple[str, ...] = (
            (
                "rows in DBOS's tables after the run: "
                + ", ".join(f"{t} {n:,}" for t, n in written.items())
                + (f" ({workflows:,} workflows, {workflows * STEPS:,} steps)" if workflows else ""),
            )
            if written
            else ()
        )
        for key, threads in (("seq", 1), ("8", cfg.callers)):
            s = samples[f"dbos_steps_{key}"]
            rows.append(
                Row(
                    f"dbos_steps_{key}",
                    f"DBOS Transact: durable no-op steps/s, workflows of {STEPS} steps "
                    f"({cfg.workflows} per round) from {threads} thread(s)",
                    dbos[key] or 0.0,
                    "steps/s",
                    baseline=floor_1,
                    baseline_description="raw commits/s on one connection",
                    ratio=(dbos[key] or 0.0) / floor_1 if floor_1 else None,
                    spread=spread(s, "steps/s"),
                    notes=per_item(s, "step") + (notes if key == "8" else ()),
                )
            )
    pool = cfg.pool_size or 2 * cfg.callers
    for label, key, callers, size in (
        ("ps_outcomes_seq", "seq", 1, pool),
        ("ps_outcomes_8", "8", cfg.callers, pool),
        ("ps_outcomes_8_pool5", "8", cfg.callers, 5),
    ):
        s = samples[label]
        value = median(s.rates) or 0.0
        base = dbos[key] if cfg.dbos else None
        target = None
        if base is not None and label != "ps_outcomes_8_pool5":
            bound = 1.5 if key == "seq" else 3.0
            target = Target("ratio", ">=", bound, f"≥ {bound:g}x DBOS")
        rows.append(
            Row(
                label,
                f"pipeline-state on PostgreSQL: outcomes/s through PipelineService.handle_message, "
                f"4-phase comprehensive runs ({cfg.runs} per round), {callers} caller(s), pool {size}",
                value,
                "outcomes/s",
                baseline=base,
                baseline_description=f"DBOS steps/s with {callers} thread(s), same rounds",
                ratio=value / base if base else None,
                target=target,
                spread=spread(s, "outcomes/s"),
                notes=per_item(s, "outcome"),
            )
        )
    return rows


def run(cfg: Config, log: Log, url: str, database: str = "anchors") -> list[Row]:
    """Measure both sides and the floor; the rows of the table."""
    return asyncio.run(run_async(cfg, log, url, database))


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/anchors.py", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round: shows it runs")
    parser.add_argument("--workflows", type=int, help="DBOS workflows per measurement (default 200)")
    parser.add_argument("--runs", type=int, help="pipeline-state runs per measurement (default 200)")
    parser.add_argument("--commits", type=int, help="raw commits per floor measurement (default 1000)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3)")
    parser.add_argument("--pool-size", type=int, help="the store's pool size (default 2 x callers)")
    parser.add_argument("--postgres", help="server URL (default: PIPELINE_STATE_TEST_POSTGRES)")
    parser.add_argument("--database", default="anchors", help="prefix of the bench's databases")
    parser.add_argument("--no-dbos", action="store_true", help="leave DBOS out")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--fail-on-miss", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else Config()
    for name in ("workflows", "runs", "commits", "rounds", "pool_size"):
        if getattr(args, name):
            cfg = replace(cfg, **{name: getattr(args, name)})
    url = args.postgres or os.environ.get("PIPELINE_STATE_TEST_POSTGRES")
    if not url:
        parser.error("set PIPELINE_STATE_TEST_POSTGRES or give --postgres")
    if args.no_dbos or importlib.util.find_spec("dbos") is None:
        why = "--no-dbos" if args.no_dbos else "dbos is not installed (pip install -e '.[bench]')"
        _log(f"{why}: the DBOS rows are left out")
        cfg = replace(cfg, dbos=False)
    return headline_and_report(
        "anchors benchmark",
        "anchors (issue 16, point 4)",
        lambda: run(cfg, _log, url, args.database),
        quick=args.quick,
        json_path=args.json,
        fail_on_miss=args.fail_on_miss,
    )


if __name__ == "__main__":
    raise SystemExit(main())
