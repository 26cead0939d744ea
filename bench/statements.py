"""Statements and round trips per unit of work on the SQL store: ``python bench/statements.py``.

For SQLite (a file, WAL) and PostgreSQL (``PIPELINE_STATE_TEST_POSTGRES``, a schema of its
own, through a counting proxy), ``--runs`` ``comprehensive`` runs are prepared (register,
provision, request), then their outcomes are delivered and counted:

* ``handle_message``: one outcome per unit of work, as ``bench/anchors.py`` sends them;
* ``handle_many``: the outcomes of one phase of all runs in one call (one ``commit_many``),
  as ``serve`` does per partition fetch.

Printed per outcome: the statements SQLAlchemy sent (by first word, ``COMMIT`` for each
transaction committed) and the round trips: on SQLite the hops to aiosqlite's worker
thread, on PostgreSQL the client's turns on the wire (``BEGIN``, prepares and ``COMMIT``
included). These are counts, not timings: they do not depend on the machine.
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
import os  # noqa: E402
import tempfile  # noqa: E402
import uuid  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Awaitable, Callable, Sequence  # noqa: E402
from typing import Any  # noqa: E402

import asyncpg  # type: ignore[import-untyped]  # noqa: E402
from pipeline_state_sql import SqlStore, open_store  # noqa: E402

from bench._roundtrips import Statements, thread_hops, wire_turns  # noqa: E402
from pipeline_state import PipelineService  # noqa: E402
from pipeline_state.testing import Envelopes  # noqa: E402

__all__ = ["count", "main"]

PHASES = ("spellcheck", "nlp", "cj_assessment", "ai_feedback")
ESSAYS = 3

Counts = dict[str, Counter[str]]
"""Per way of delivering (``handle_message``, ``handle_many``): the counts per outcome
(statements by first word, ``round trips``), scaled by 1,000 (three decimals)."""


async def _prepare(service: PipelineService, env: Envelopes, runs: int) -> list[tuple[str, str]]:
    tag = uuid.uuid4().hex[:6]
    batches = [(f"s{tag}-{i:04d}", str(uuid.uuid4())) for i in range(runs)]
    for batch_id, correlation_id in batches:
        essays = env.item_ids(batch_id, ESSAYS)
        await service.handle_message(*env.register(batch_id, items=ESSAYS))
        await service.handle_message(*env.provisioned(batch_id, essays))
        await service.handle_message(*env.request(batch_id, "comprehensive", correlation_id=correlation_id))
    return batches


async def count(store: SqlStore, turns: Callable[[], int], runs: int) -> Counts:
    """Deliver the outcomes of ``runs`` runs both ways on ``store``; the counts per outcome.
    ``turns()`` returns the round trips since it was last called."""
    service = PipelineService(store)
    env = Envelopes(source_service="statements")
    statements = Statements(store.engine)
    out: Counts = {}
    try:
        for way in ("handle_message", "handle_many"):
            batches = await _prepare(service, env, runs)
            statements.take()
            turns()
            seen: Counter[str] = Counter()
            outcomes = 0
            for phase in PHASES:
                messages = [env.outcome(b, phase, c, processed=env.item_ids(b, ESSAYS)) for b, c in batches]
                if way == "handle_message":
                    for message in messages:
                        _applied(await service.handle_message(*message), phase)
                else:
                    for result in await service.handle_many(messages):
                        _applied(result, phase)
                outcomes += len(messages)
                seen.update(statements.take())
                seen["round trips"] += turns()
            out[way] = Counter({k: round(v * 1000 / outcomes) for k, v in seen.items()})
    finally:
        statements.close()
    return out


def _applied(result: Any, phase: str) -> None:
    if isinstance(result, Exception) or result.decision is None or result.duplicate:
        raise RuntimeError(f"{phase}: the outcome was not applied ({result!r})")


async def _sqlite(runs: int) -> Counts:
    with tempfile.TemporaryDirectory() as folder:
        store = await open_store(f"sqlite+aiosqlite:///{folder}/state.db")
        try:
            with thread_hops() as hops:
                return await count(store, hops.take, runs)
        finally:
            await store.close()


async def _postgres(url: str, runs: int) -> Counts:
    schema = f"stmts_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(_plain(url))
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    try:
        async with wire_turns(url) as proxy:
            store = await open_store(proxy.url(url), schema=schema)
            try:
                return await count(store, proxy.take, runs)
            finally:
                await store.close()
    finally:
        await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await admin.close()


def _plain(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _show(name: str, counts: Counts) -> list[str]:
    lines = []
    for way, seen in counts.items():
        trips = seen.pop("round trips", 0) / 1000
        words = ", ".join(f"{k} {v / 1000:.2f}" for k, v in sorted(seen.items()))
        total = sum(v for k, v in seen.items() if k != "COMMIT") / 1000
        lines.append(f"{name:<10} {way:<15} {total:5.2f} statements ({words}); {trips:5.2f} round trips")
    return lines


async def _main(runs: int, postgres: str | None) -> list[str]:
    jobs: list[tuple[str, Awaitable[Counts]]] = [("sqlite", _sqlite(runs))]
    if postgres:
        jobs.append(("postgresql", _postgres(postgres, runs)))
    lines = ["per outcome event (statements by first word; COMMIT: transactions committed)"]
    for name, job in jobs:
        lines.extend(_show(name, await job))
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/statements.py", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="runs (x4 outcomes) per way (default 20)")
    parser.add_argument("--postgres", default=os.environ.get("PIPELINE_STATE_TEST_POSTGRES"))
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    args = parser.parse_args(argv)
    for line in asyncio.run(_main(args.runs, None if args.no_postgres else args.postgres)):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
