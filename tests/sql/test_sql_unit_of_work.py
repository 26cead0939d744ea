"""The unit of work: everything of one inbound event commits together or not at all.

A failure is injected after each statement the unit of work executes (and just before its
COMMIT) through SQLAlchemy's own event hooks on the real engine; after every failure the
database holds exactly what it held before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import attrs
import pytest
from pipeline_state_sql import METADATA, SqlStore
from sqlalchemy import Connection, event, select
from sqlalchemy import exc as sa_exc

from pipeline_state import ManualClock, PipelineService, StoreUnavailableError
from pipeline_state.errors import ConcurrencyConflictError, DuplicateEventError, StoreError
from pipeline_state.ports import Change, InboxEntry, TransitionRecord
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from pipeline_state.testing import T0, make_state, message, with_deadline
from pipeline_state.testing.contract import archived_run

CORR = "9b0c4d8e-1111-4222-8333-444455556666"


class InjectedFault(Exception):
    """The failure the tests inject between statements."""


def _dump(conn: Connection) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    for table in METADATA.sorted_tables:
        rows = conn.execute(select(table).order_by(*table.primary_key.columns)).all()
        out[table.name] = [tuple(r) for r in rows]
    return out


async def dump(store: SqlStore) -> dict[str, list[tuple[Any, ...]]]:
    async with store.engine.connect() as conn:
        return await conn.run_sync(_dump)


def _is_write(conn: Connection) -> bool:
    """Statements in a transaction (reads run outside one: SQLite autocommits a SELECT,
    PostgreSQL reads use AUTOCOMMIT connections)."""
    if conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
        return False
    driver = conn.connection.driver_connection
    return bool(getattr(driver, "in_transaction", True))


class FaultInjector:
    """Raises ``error`` after the ``fail_at``-th statement of a write transaction (or, with
    ``fail_at`` one past the last statement, right before COMMIT)."""

    def __init__(self, store: SqlStore, make_error: Callable[[], BaseException]) -> None:
        self.fail_at: int | None = None
        self.count = 0
        self.fired = False
        self.make_error = make_error
        engine = store.engine.sync_engine
        event.listen(engine, "after_cursor_execute", self._after)
        event.listen(engine, "commit", self._commit)

    def arm(self, fail_at: int) -> None:
        self.fail_at, self.count, self.fired = fail_at, 0, False

    def disarm(self) -> None:
        self.fail_at = None

    def _fire(self) -> None:
        self.fired = True
        raise self.make_error()

    def _after(self, conn: Connection, *args: Any) -> None:
        if self.fail_at is None or not _is_write(conn) or self.fired:
            return
        self.count += 1
        if self.count == self.fail_at:
            self._fire()

    def _commit(self, conn: Connection) -> None:
        if self.fail_at is not None and not self.fired and self.count + 1 == self.fail_at:
            self._fire()


async def _batch_with_run_about_to_complete(service: PipelineService, env: HuleEduEnvelopes) -> Any:
    essays = env.item_ids("b1", 2)
    for delivery in (
        env.register("b1", items=2),
        env.provisioned("b1", essays),
        env.request("b1", "nlp", correlation_id=CORR),
        env.outcome("b1", "spellcheck", CORR, processed=essays),
    ):
        await service.handle_message(*delivery)
    return env.outcome("b1", "nlp", CORR, processed=essays, event_id="7f000000-0000-4000-8000-000000000001")


@pytest.mark.postgres
async def test_a_failure_after_the_one_statement_is_a_failure_after_commit(pg_store: SqlStore) -> None:
    """On PostgreSQL the unit of work is one statement in autocommit: a failure right after it
    (the connection dropped before the answer was read, the process killed) finds the whole
    unit written, as a failure after a COMMIT does, and the event's redelivery is a duplicate
    that writes nothing more."""
    service = PipelineService(pg_store, clock=ManualClock())
    final_outcome = await _batch_with_run_about_to_complete(service, HuleEduEnvelopes())
    before = await dump(pg_store)

    def fail_after_the_write(conn: Connection, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.startswith("WITH"):
            raise InjectedFault("after the one statement")

    engine = pg_store.engine.sync_engine
    event.listen(engine, "after_cursor_execute", fail_after_the_write)
    try:
        with pytest.raises(InjectedFault):
            await service.handle_message(*final_outcome)
    finally:
        event.remove(engine, "after_cursor_execute", fail_after_the_write)
    written = await dump(pg_store)
    assert len(written["runs"]) == 1
    assert len(written["inbox"]) == len(before["inbox"]) + 1
    assert len(written["outbox"]) > len(before["outbox"])
    again = await service.handle_message(*final_outcome)
    assert again.duplicate
    assert await dump(pg_store) == written


@pytest.mark.parametrize(
    "make_error",
    [
        pytest.param(lambda: InjectedFault("injected"), id="crash"),
        pytest.param(
            lambda: sa_exc.OperationalError("COMMIT", {}, Exception("connection reset")), id="operational"
        ),
    ],
)
async def test_failure_after_any_statement_leaves_nothing_half_written(
    sql_store: SqlStore, backend: str, make_error: Callable[[], BaseException]
) -> None:
    service = PipelineService(sql_store, clock=ManualClock())
    final_outcome = await _batch_with_run_about_to_complete(service, HuleEduEnvelopes())
    before = await dump(sql_store)
    injector = FaultInjector(sql_store, make_error)
    expected = StoreUnavailableError if isinstance(make_error(), sa_exc.OperationalError) else InjectedFault
    failures = 0
    for fail_at in range(1, 20):
        injector.arm(fail_at)
        try:
            result = await service.handle_message(*final_outcome)
        except expected:
            injector.disarm()
            failures += 1
            assert await dump(sql_store) == before, f"half-written after statement {fail_at}"
            continue
        injector.disarm()
        assert not injector.fired
        break
    else:  # pragma: no cover
        pytest.fail("the unit of work never completed")
    # Both: the read's end (the COMMIT point its lane passes), then SQLite: UPDATE, the inbox,
    # log, outbox and runs INSERTs, the COMMIT point. PostgreSQL: nothing more; the one
    # statement of the unit of work is its own transaction, so no point lies inside it (a
    # failure after it is a failure after the COMMIT: the next test).
    assert failures == (6 if backend == "sqlite" else 1)
    after = await dump(sql_store)
    assert len(after["runs"]) == 1
    assert len(after["inbox"]) == len(before["inbox"]) + 1
    assert len(after["outbox"]) == len(before["outbox"]) + len(result.messages)
    assert len(after["transitions"]) > len(before["transitions"])
    topics = [m.topic for m in result.messages]
    assert Topic.PIPELINE_COMPLETED.value in topics


async def test_lost_race_raises_conflict_and_writes_nothing(make_store: Any) -> None:
    first, second = await make_store(), await make_store()
    state = make_state("b1")
    await first.commit(Change("b1", None, state, T0))
    loaded_a, loaded_b = await first.load("b1"), await second.load("b1")
    assert loaded_a == loaded_b == state
    to_cancel = attrs.evolve(state, version=2, status=state.status.CANCELLED)
    to_archive = attrs.evolve(state, version=2, status=state.status.ARCHIVED)
    results = await asyncio.gather(
        first.commit(Change("b1", 1, to_cancel, T0)),
        second.commit(Change("b1", 1, to_archive, T0)),
        return_exceptions=True,
    )
    conflicts = [r for r in results if isinstance(r, ConcurrencyConflictError)]
    assert len(conflicts) == 1
    assert results.count(None) == 1
    assert conflicts[0].batch_id == "b1"
    assert conflicts[0].actual == 2
    winner = to_cancel if results[0] is None else to_archive
    assert await first.load("b1") == winner


async def test_transitions_and_archived_runs_are_written(make_store: Any) -> None:
    store = await make_store()
    # A batch with one archived run, inserted: the run goes to the runs table.
    state = with_deadline(make_state("b1"), None)
    first = archived_run("b1")
    await store.commit(Change("b1", None, state, T0, archived=(first,)))
    # Another store archives the active run: its position comes from the state's summary.
    other = await make_store()
    assert state.active_run is not None
    finished = attrs.evolve(state.active_run, status=state.active_run.status.CANCELLED, completed_at=T0)
    v2 = attrs.evolve(state, version=2, active_run=None, past=state.past.after(finished))
    log = Change(
        "b1",
        1,
        v2,
        T0,
        archived=(finished,),
        transitions=(
            _record("b1", "run", finished.run_id, "cancel", "active", "cancelled"),
            _record(
                "b1", "batch", "b1", "finish_run", "processing_pipelines", "ready_for_pipeline_execution"
            ),
        ),
    )
    await other.commit(log)
    assert await store.history("b1") == [first, finished]
    assert await store.transitions("b1") == list(log.transitions)
    third_run = attrs.evolve(finished, run_id="manual-1")
    v3 = attrs.evolve(v2, version=3, past=v2.past.after(third_run))
    await other.commit(Change("b1", 2, v3, T0, archived=(third_run,)))
    assert [r.run_id for r in await store.history("b1")] == ["b1-run-0", finished.run_id, "manual-1"]
    assert (await store.load("b1")) == v3


def _record(batch_id: str, entity: str, name: str, trigger: str, source: str, dest: str) -> TransitionRecord:
    return TransitionRecord(batch_id, entity, name, trigger, source, dest, None, "ev-1", "corr-1", T0)


async def test_rejected_outbox_row_fails_the_whole_unit_of_work(sql_store: SqlStore) -> None:
    """A statement that fails late (an outbox event id stored before: the INSERT is sent with
    the COMMIT on SQLite) still rolls back everything written before it."""
    state = make_state("b1")
    await sql_store.commit(Change("b1", None, state, T0, outbox=(message("m1", "b1"),)))
    before = await dump(sql_store)
    again = Change(
        "b1",
        1,
        attrs.evolve(state, version=2, status=state.status.CANCELLED),
        T0,
        outbox=(message("m2", "b1"), message("m1", "b1")),
        inbox=InboxEntry("in-2", "t", "b1", "applied", T0),
        transitions=(_record("b1", "batch", "b1", "cancel", "ready", "cancelled"),),
    )
    with pytest.raises(StoreError) as info:
        await sql_store.commit(again)
    assert not isinstance(info.value, ConcurrencyConflictError | DuplicateEventError)
    assert await dump(sql_store) == before
    # The store goes on working afterwards.
    await sql_store.commit(attrs.evolve(again, outbox=(message("m2", "b1"),)))
    assert (await sql_store.load("b1")) == again.state
