"""Found by an attack: stored state across versions and by hand (migrations, codec, state
cache).

Tests whose docstring starts "Was a defect" failed before the fix that came with them; "Held"
ones are attacks the code withstood.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from pipeline_state_sql import SqlStore, alembic_config, create_engine, create_or_upgrade, open_store
from pipeline_state_sql.codec import SCHEMA_VERSION
from sqlalchemy import text

from pipeline_state import InMemoryBus, ManualClock, OutboxRelay, PipelineService
from pipeline_state.errors import CorruptStateError
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

from .conftest import StoreMaker

C1 = "11111111-1111-4111-8111-111111111111"
C2 = "22222222-2222-4222-8222-222222222222"


async def _start_run(service: PipelineService, clock: ManualClock, batch_id: str, corr: str) -> list[str]:
    """Register, provision and request ``nlp`` on ``batch_id``: a run with spellcheck active."""
    env = HuleEduEnvelopes()
    ids = env.item_ids(batch_id, 2)
    for delivery in (
        env.register(batch_id, items=2),
        env.provisioned(batch_id, ids),
        env.request(batch_id, "nlp", correlation_id=corr),
    ):
        clock.advance(1)
        await service.handle_message(*delivery)
    return ids


async def _sql(store: SqlStore, sql: str) -> None:
    async with store.engine.begin() as conn:
        await conn.execute(text(sql))


async def _row(store: SqlStore, batch_id: str) -> tuple[int, dict[str, Any]]:
    async with store.engine.connect() as conn:
        version, state = (
            await conn.execute(
                text("SELECT version, CAST(state AS TEXT) FROM batches WHERE batch_id = :b"), {"b": batch_id}
            )
        ).one()
    return int(version), json.loads(state)


# ---------------------------------------------------------------------------------------
# was a defect: a document whose embedded version disagrees with its row's version column
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("edit", ["document_version_restored", "column_version_bumped"])
async def test_document_version_disagreeing_with_the_row_is_corrupt(
    make_store: StoreMaker, backend: str, edit: str
) -> None:
    """Was a defect: The state document carries ``version`` and the row carries a ``version``
    column; the compare-and-set uses the document's value against the column. When they
    disagree (a document put back by hand from an earlier row / a backup, or the column
    bumped by an operator with the document text left as it was: "same text, different
    version"), the store reads a state whose version is not the row's: every event of the
    batch then loses its compare-and-set ``max_attempts`` times and raises
    ConcurrencyConflictError, which the Kafka consumer classifies as transient and retries
    "for as long as it takes" (policy.py): the batch's partition is blocked for ever and the
    run never completes.

    Now: the service sees that a fresh read still shows the version its lost
    compare-and-set expected, while the row is at another: it reports the row as corrupt
    (CorruptStateError naming the batch: the state says version N, the row is at M), so the
    record is dead-lettered and the operator sees what is wrong, instead of losing the
    compare-and-set for ever."""
    store = await make_store()
    clock = ManualClock()
    service = PipelineService(store, clock=clock)
    await _start_run(service, clock, "b1", C1)
    column, document = await _row(store, "b1")
    assert document["version"] == column == 3
    if edit == "document_version_restored":
        document["version"] = column - 1
        doc = json.dumps(document).replace("'", "''")
        cast = "CAST('" + doc + "' AS jsonb)" if backend == "postgres" else "'" + doc + "'"
        await _sql(store, f"UPDATE batches SET state = {cast} WHERE batch_id = 'b1'")
    else:
        await _sql(store, "UPDATE batches SET version = version + 1 WHERE batch_id = 'b1'")
    env = HuleEduEnvelopes()
    outcome = env.outcome("b1", "spellcheck", C1, processed=env.item_ids("b1", 2))
    with pytest.raises(CorruptStateError, match=r"b1.*row is at version"):
        await service.handle_message(*outcome)


# ---------------------------------------------------------------------------------------
# was a defect: one unreadable row stops the deadline sweep of every batch after it
# ---------------------------------------------------------------------------------------


async def test_one_corrupt_row_stops_deadlines_of_every_later_batch(tmp_path: Path) -> None:
    """Was a defect: Two batches mid-run (``a1`` and ``b1``), both past their phase deadline. The
    row of ``a1`` is unreadable (here: a schema number no release wrote), which the store
    reports, as promised, with CorruptStateError. ``PipelineService.expire_overdue``
    (pipeline_state/_service.py:551-563) loads each overdue batch in a loop without
    isolating failures: the CorruptStateError of ``a1`` aborts the whole pass, so ``b1`` is
    never expired. The service's sweeper (adapters/pipeline_state_service/runner.py:395-399)
    logs and retries next period, where ``a1`` (first by batch id, query
    ``overdue_batch_ids``) aborts it again: no batch ordered after a corrupt one ever times
    out, and "no run blocks its batch for ever" breaks for all of them.

    Expected: the pass handles ``b1`` (its overdue phase re-sent / failed) and reports ``a1``
    (log/count it, skip it), going on with the other batches."""
    store = await open_store(f"sqlite+aiosqlite:///{tmp_path / 's.db'}")
    try:
        clock = ManualClock()
        service = PipelineService(store, clock=clock)
        await _start_run(service, clock, "a1", C1)
        await _start_run(service, clock, "b1", C2)
        before, _ = await _row(store, "b1")
        await _sql(store, "UPDATE batches SET state = json_set(state, '$.schema', 99) WHERE batch_id = 'a1'")
        clock.advance(2 * 3600)  # past the default one-hour deadline of both
        try:
            results = await service.expire_overdue()
        except CorruptStateError:
            results = []
        assert [r.batch_id for r in results] == ["b1"]
        after, _ = await _row(store, "b1")
        assert after > before
    finally:
        await store.close()


# ---------------------------------------------------------------------------------------
# was a defect: SQLite downgrade drops AUTOINCREMENT of outbox / transitions for good
# ---------------------------------------------------------------------------------------


def test_sqlite_downgrade_then_upgrade_keeps_autoincrement(tmp_path: Path) -> None:
    """Was a defect (minor, downgrade path): The models and revision 0001 declare ``outbox`` and
    ``transitions`` with ``sqlite_autoincrement=True`` (row ids never reused). The
    downgrades of 0005/0004 (``batch_alter_table(...).drop_column``) recreate those tables
    on SQLite by reflection, which loses ``AUTOINCREMENT`` and their ``sqlite_sequence``
    rows; upgrading again only adds columns, so the store stays without it. Without
    AUTOINCREMENT, SQLite gives a new row max(id)+1, so once ``purge_published`` has removed
    the newest rows their ids can be handed out again.

    Expected: a downgrade followed by an upgrade gives the models' schema (pass
    ``table_kwargs={"sqlite_autoincrement": True}`` to ``batch_alter_table`` in the
    downgrades), or the downgrade refuses clearly."""
    path = tmp_path / "d.db"
    url = f"sqlite+aiosqlite:///{path}"
    command.upgrade(alembic_config(url), "head")
    command.downgrade(alembic_config(url), "0003")
    command.upgrade(alembic_config(url), "head")
    with sqlite3.connect(path) as conn:
        ddl = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'").fetchall())
    assert "AUTOINCREMENT" in ddl["outbox"]
    assert "AUTOINCREMENT" in ddl["transitions"]


# ---------------------------------------------------------------------------------------
# held: a store written at revision 0001 in layout 1, mid-run, upgraded, completes once
# ---------------------------------------------------------------------------------------

_COLUMNS_0001 = {
    "outbox": [
        "id", "event_id", "topic", "key", "envelope", "created_at", "published_at", "attempts",
        "last_error", "parked", "available_at", "claimed_until", "claimed_by",
    ],
    "transitions": [
        "id", "batch_id", "entity", "name", "trigger", "source", "dest", "run_id", "event_id",
        "correlation_id", "at",
    ],
}  # fmt: skip


def _as_layout_1(document: dict[str, Any], runs: list[dict[str, Any]]) -> dict[str, Any]:
    """A layout-2 document as layout 1 (dc9d2c6) wrote it: every archived run in full under
    ``history``, no ``past``."""
    old = {k: v for k, v in document.items() if k != "past"}
    old["schema"] = 1
    old["history"] = [{k: v for k, v in run.items() if k != "schema"} for run in runs]
    return old


async def test_store_at_0001_mid_run_upgrades_and_completes_exactly_once(tmp_path: Path) -> None:
    """Held: A batch with one archived run and a second run mid-way (ai_feedback active,
    pending outbox rows, inbox rows) is copied into a database at revision 0001 with its
    document in layout 1; after ``create_or_upgrade`` the run completes exactly once, the
    redelivered old events are duplicates, and the history is intact."""
    src = await open_store(f"sqlite+aiosqlite:///{tmp_path / 'src.db'}")
    clock, bus = ManualClock(), InMemoryBus()
    env = HuleEduEnvelopes()
    try:
        service = PipelineService(src, clock=clock)
        relay = OutboxRelay(src, bus, clock)
        ids = await _start_run(service, clock, "b1", C1)
        old_outcome = env.outcome("b1", "spellcheck", C1, processed=ids)
        for delivery in (old_outcome, env.outcome("b1", "nlp", C1, processed=ids)):
            clock.advance(1)
            await service.handle_message(*delivery)
        await relay.drain()
        clock.advance(1)
        await service.handle_message(*env.request("b1", "ai_feedback", correlation_id=C2))
        # Not drained: the second run's rows are pending when the store is "upgraded".
    finally:
        await src.close()
    completions_before = [m for m in bus.messages() if m.topic == Topic.PIPELINE_COMPLETED]
    assert len(completions_before) == 1

    dst = tmp_path / "dst.db"
    engine = create_engine(f"sqlite+aiosqlite:///{dst}")
    await create_or_upgrade(engine, "0001")
    await engine.dispose()
    with sqlite3.connect(tmp_path / "src.db") as s, sqlite3.connect(dst) as d:
        for table in ("inbox", "runs", "outbox", "transitions", "batches"):
            cols = _COLUMNS_0001.get(table) or [r[1] for r in s.execute(f"PRAGMA table_info({table})")]
            names = ", ".join(f'"{c}"' for c in cols)
            rows = s.execute(f"SELECT {names} FROM {table}").fetchall()
            if table == "batches":
                runs = [json.loads(r[0]) for r in s.execute("SELECT document FROM runs ORDER BY seq")]
                at = cols.index("state")
                rows = [
                    (*r[:at], json.dumps(_as_layout_1(json.loads(r[at]), runs)), *r[at + 1 :]) for r in rows
                ]
            marks = ", ".join("?" for _ in cols)
            d.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", rows)
        d.commit()

    store = await open_store(f"sqlite+aiosqlite:///{dst}")  # upgrades
    try:
        service = PipelineService(store, clock=clock)
        relay = OutboxRelay(store, bus, clock)
        clock.advance(1)
        assert (await service.handle_message(*old_outcome)).duplicate
        await service.handle_message(*env.outcome("b1", "ai_feedback", C2, processed=ids))
        clock.advance(1)
        await service.handle_message(*env.outcome("b1", "ai_feedback", C2, processed=ids))  # fresh id
        await relay.drain()
        completions = [m for m in bus.messages() if m.topic == Topic.PIPELINE_COMPLETED]
        assert len(completions) == 2
        assert [m.value["correlation_id"] for m in completions] == [C1, C2]
        shown = await service.get_batch("b1")
        assert [r.correlation_id for r in shown.history] == [C1, C2]
        _, document = await _row(store, "b1")
        assert document["schema"] == SCHEMA_VERSION
        assert "history" not in document
        assert document["past"]["count"] == 2  # both runs: the first from the history
    finally:
        await store.close()
