"""The outbox relay benchmark (issue 3): ``python bench/relay.py [--quick] [--rows N]``.

Rows/s the :class:`~pipeline_state._relay.OutboxRelay` moves from the SQL outbox (SQLite file
and, when reachable, PostgreSQL) to a transport that accepts every message at once, with
batches of 1 and of 100 rows per claim. Each pass is a claim (one UPDATE ... RETURNING,
``FOR UPDATE SKIP LOCKED`` on PostgreSQL) and a mark-published UPDATE, each in its own
transaction; rows have distinct keys, so order per key never holds a claim back. The
batch-of-100 figure is compared with the batch-of-1 figure of the same database.

Hand-off (issue 16): the same rows committed by a store attached to the relay
(``SqlStore.attach_relay``), so they are written leased to it and handed over in memory;
the relay then publishes them 100 per pass with no claim, and one ``UPDATE`` marks each
pass's rows (``relay_<db>_handoff``, compared with the batch-of-100 claim figure).
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if __package__ in (None, ""):
    sys.path.insert(0, str(_HERE.parent))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import dataclass, replace  # noqa: E402
from datetime import UTC, datetime  # noqa: E402

from pipeline_state_sql import open_store  # noqa: E402

from bench._util import Row, environment, render_table  # noqa: E402
from bench.sql import Database, fresh_database, postgres_url  # noqa: E402
from pipeline_state import ManualClock, OutboxRelay  # noqa: E402
from pipeline_state.ports import Change, OutboxMessage  # noqa: E402

__all__ = ["QUICK", "Config", "NullTransport", "main", "relay_rows_per_s", "run"]

Log = Callable[[str], None]
T0 = datetime(2025, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Config:
    rows: int = 2000
    repetitions: int = 3


QUICK = Config(rows=100, repetitions=1)


class NullTransport:
    """Accepts every message at once: what is timed is the outbox side of the relay."""

    def __init__(self) -> None:
        self.count = 0

    async def publish(self, messages: Sequence[OutboxMessage]) -> Sequence[BaseException | None]:
        self.count += len(messages)
        return [None] * len(messages)


def _message(i: int) -> OutboxMessage:
    event_id = f"00000000-0000-4000-8000-{i:012d}"
    value = {
        "event_id": event_id,
        "event_type": "huleedu.els.spellcheck.initiate.command.v1",
        "event_timestamp": T0.isoformat(),
        "source_service": "bench",
        "schema_version": 1,
        "correlation_id": event_id,
        "data": {"batch_id": f"b{i}", "essays_to_process": [{"essay_id": f"e{i}", "text_storage_id": "t"}]},
        "metadata": None,
    }
    return OutboxMessage(event_id, value["event_type"], f"b{i}", value)  # type: ignore[arg-type]


async def relay_rows_per_s(db: Database, rows: int, batch_size: int) -> float:
    """Fill the outbox with ``rows`` rows, then time the relay draining it."""
    store = await open_store(db.url, schema=db.schema, upgrade=False, synchronous="NORMAL")
    try:
        for start in range(0, rows, 500):
            chunk = tuple(_message(i) for i in range(start, min(rows, start + 500)))
            await store.commit(Change(f"fill-{start}", None, None, T0, outbox=chunk))
        transport = NullTransport()
        relay = OutboxRelay(store, transport, ManualClock(T0), batch_size=batch_size)
        started = time.perf_counter()
        report = await relay.drain(max_passes=rows + 2)
        elapsed = time.perf_counter() - started
        if report.published != rows or transport.count != rows or await store.pending_count():
            raise RuntimeError(f"the relay published {report.published} of {rows} rows")
        return rows / elapsed
    finally:
        await store.close()


async def handoff_rows_per_s(db: Database, rows: int) -> float:
    """Commit ``rows`` rows under the relay's lease (handed to it in memory), then time the
    relay publishing them, 100 rows a pass, without a claim."""
    store = await open_store(db.url, schema=db.schema, upgrade=False, synchronous="NORMAL")
    try:
        transport = NullTransport()
        relay = OutboxRelay(store, transport, ManualClock(T0), batch_size=100)
        store.attach_relay(relay.hand_off, relay.clock)
        for start in range(0, rows, 500):
            chunk = tuple(_message(i) for i in range(start, min(rows, start + 500)))
            await store.commit(Change(f"fill-{start}", None, None, T0, outbox=chunk))
        if relay.handed != rows:
            raise RuntimeError(f"{relay.handed} of {rows} rows were handed off")
        started = time.perf_counter()
        published = 0
        while relay.handed:
            published += (await relay.run_once(claim=False)).published
        elapsed = time.perf_counter() - started
        if published != rows or transport.count != rows or await store.pending_count():
            raise RuntimeError(f"the relay published {published} of {rows} rows")
        return rows / elapsed
    finally:
        await store.close()


async def _measure(
    cfg: Config, backend: str, workdir: Path, pg: str | None, log: Log
) -> dict[int, list[float]]:
    rates: dict[int, list[float]] = {1: [], 100: [], 0: []}  # 0: hand-off
    for rep in range(cfg.repetitions):
        for size in (1, 100, 0) if rep % 2 == 0 else (0, 100, 1):
            # Batch 1 moves fewer rows: each row costs two transactions.
            rows = max(20, cfg.rows // 10) if size == 1 else cfg.rows
            async with fresh_database(backend, workdir, pg) as db:
                if size:
                    rates[size].append(await relay_rows_per_s(db, rows, size))
                else:
                    rates[0].append(await handoff_rows_per_s(db, rows))
        one, hundred, handed = rates[1][-1], rates[100][-1], rates[0][-1]
        log(
            f"relay {backend} rep {rep + 1}: {one:,.0f} rows/s (1), {hundred:,.0f} rows/s (100), "
            f"{handed:,.0f} rows/s (hand-off)"
        )
    return rates


def run(cfg: Config, log: Log, *, workdir: Path, postgres: str | None) -> list[Row]:
    backends = [("sqlite", "SQLite (file, WAL, synchronous=NORMAL)")]
    if postgres is not None:
        backends.append(("postgres", "PostgreSQL (asyncpg)"))
    rows: list[Row] = []
    for backend, what in backends:
        rates = asyncio.run(_measure(cfg, backend, workdir, postgres, log))
        one, hundred = statistics.median(rates[1]), statistics.median(rates[100])
        rows.append(
            Row(
                figure=f"relay_{backend}_batch1",
                description=f"outbox rows/s published by the relay from {what}, one row per claim",
                value=one,
                unit="rows/s",
                spread=f"{', '.join(f'{r:,.0f}' for r in rates[1])}",
            )
        )
        rows.append(
            Row(
                figure=f"relay_{backend}_batch100",
                description=f"outbox rows/s published by the relay from {what}, up to 100 rows per claim",
                value=hundred,
                unit="rows/s",
                baseline=one,
                baseline_description=f"relay_{backend}_batch1",
                ratio=hundred / one,
                spread=f"{', '.join(f'{r:,.0f}' for r in rates[100])}",
            )
        )
        handed = statistics.median(rates[0])
        rows.append(
            Row(
                figure=f"relay_{backend}_handoff",
                description=f"outbox rows/s published by the relay from {what}, handed off in memory "
                "by the commits, 100 rows a pass, no claim",
                value=handed,
                unit="rows/s",
                baseline=hundred,
                baseline_description=f"relay_{backend}_batch100",
                ratio=handed / hundred,
                spread=f"{', '.join(f'{r:,.0f}' for r in rates[0])}",
            )
        )
    return rows


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/relay.py", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: shows it runs, figures meaningless")
    parser.add_argument(
        "--rows", type=int, help="rows moved per measurement with batches of 100 (default 2,000)"
    )
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else Config()
    if args.rows is not None:
        cfg = replace(cfg, rows=args.rows)
    pg, why = (None, "disabled") if args.no_postgres else postgres_url()
    if pg is None:
        _log(f"PostgreSQL figures skipped: {why}")
    env = environment()
    print(f"pipeline-state relay benchmark - Python {env['python']}, load average {env['load_average']}")
    with tempfile.TemporaryDirectory(prefix="ps-bench-relay-") as tmp:
        rows = run(cfg, _log, workdir=Path(tmp), postgres=pg)
    print("\nrelay (issue 3, benchmark)\n")
    print(render_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
