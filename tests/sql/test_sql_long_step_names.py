"""A custom profile (the bakery of :mod:`tests.bakery_kit`) whose catalog uses step names as
long as the catalog allows (``MAX_STEP_NAME_LENGTH``), on SQLite and PostgreSQL: every store
carries what the engine derives from them, the waiting key ``phase_dispatch:<phase>`` (and
the inbox result ``deferred:phase_dispatch:<phase>``) of an early outcome, and the pipeline
name ``manual:<phase>`` of a recorded run.

Was a defect (fixed): the catalog took step names of up to 200 characters; on PostgreSQL
the early outcome of such a phase then failed (``value too long for type character
varying(200)``: dead-lettered instead of waiting) and a recorded run's pipeline name was
cut to 200 characters in the ``runs`` table."""

from __future__ import annotations

import sqlite3
import uuid

import asyncpg
from pipeline_state_sql import SqlStore
from sqlalchemy.engine import make_url

from pipeline_state import ManualClock, PipelineService
from pipeline_state._catalog import MAX_STEP_NAME_LENGTH
from pipeline_state._commands import Command, RecordPhaseCompletion
from pipeline_state.testing import Envelopes
from tests.bakery_kit import bakery
from tests.sql.conftest import Database

LONG = "glaze-" + "x" * (MAX_STEP_NAME_LENGTH - 6)
PROFILE = bakery(
    {"pipelines": {"p": {"steps": [{"name": "proof"}, {"name": LONG, "depends_on": ["proof"]}]}}}
)
DONE = "bakery.order.done"


async def _ready(service: PipelineService, env: Envelopes, batch_id: str) -> list[str]:
    ids = env.item_ids(batch_id, 2)
    await service.handle_message(*env.register(batch_id, item_ids=ids, prompt=None))
    await service.handle_message(*env.provisioned(batch_id, ids))
    return ids


async def _early_outcome_waits(store: SqlStore) -> None:
    """An outcome of the long-named phase before its dispatch waits (its waiting key and
    inbox result fit the 200-character columns), then applies once the run gets there."""
    service, env = PipelineService(store, profile=PROFILE, clock=ManualClock()), Envelopes(profile=PROFILE)
    ids = await _ready(service, env, "o1")
    started = await service.handle_message(*env.request("o1", "p"))
    run = started.state.active_run if started.state else None
    assert run is not None
    early = await service.handle_message(*env.outcome("o1", LONG, run.correlation_id, processed=ids))
    assert early.label == f"deferred:phase_dispatch:{LONG}"
    proof = next(m for m in started.messages if env.phase_of(m.as_dict()) == "proof")
    done = await service.handle_message(*env.answer(proof.as_dict()))
    topics = [m.topic for m in done.all_messages]
    assert topics.count(DONE) == 1, topics
    state = await service.get_batch("o1")
    assert state.active_run is None
    assert [r.status.value for r in state.history] == ["completed_successfully"]
    assert await store.count_waiting() == 0


async def _pipeline_names(database: Database) -> list[str]:
    if database.schema is None:
        path = make_url(database.url).database
        assert path is not None
        with sqlite3.connect(path) as conn:
            return [row[0] for row in conn.execute("select pipeline_name from runs order by seq")]
    dsn = make_url(database.url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(f'select pipeline_name from "{database.schema}".runs order by seq')
    finally:
        await conn.close()
    return [row[0] for row in rows]


async def _recorded_run_keeps_its_name(store: SqlStore, database: Database) -> None:
    """A recorded run of the long-named phase keeps its whole pipeline name in the ``runs``
    table as in the document (PostgreSQL would cut a longer one to the column's width
    without an error)."""
    service, env = PipelineService(store, profile=PROFILE, clock=ManualClock()), Envelopes(profile=PROFILE)
    await _ready(service, env, "o2")
    for phase in ("proof", LONG):
        command = Command(RecordPhaseCompletion("o2", phase, True), str(uuid.uuid4()), str(uuid.uuid4()))
        assert (await service.handle(command, topic="operator")).label == "applied"
    history = (await service.get_batch("o2")).history
    assert [r.pipeline_name for r in history] == ["manual:proof", f"manual:{LONG}"]
    assert await _pipeline_names(database) == ["manual:proof", f"manual:{LONG}"]


async def test_sqlite_keeps_the_waiting_key_of_a_long_named_phase(sqlite_store: SqlStore) -> None:
    await _early_outcome_waits(sqlite_store)


async def test_sqlite_keeps_the_pipeline_name_of_a_recorded_long_named_phase(
    sqlite_store: SqlStore, sqlite_url: str
) -> None:
    await _recorded_run_keeps_its_name(sqlite_store, Database(sqlite_url))


async def test_postgres_keeps_the_waiting_key_of_a_long_named_phase(pg_store: SqlStore) -> None:
    await _early_outcome_waits(pg_store)


async def test_postgres_keeps_the_pipeline_name_of_a_recorded_long_named_phase(
    pg_store: SqlStore, pg: Database
) -> None:
    await _recorded_run_keeps_its_name(pg_store, pg)
