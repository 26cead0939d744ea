"""A layout-4 row whose ``past.count`` disagrees with the ``runs`` table.

Layout 4 keeps only the number of archived runs in the batch document; the ``runs`` table
holds their ids, and the position (``seq``) of the next archived run is computed from the
document's count (``uow._run_rows``). A row whose count is lower than the runs the table
holds for the batch (a batches row restored from a backup older than the runs table's,
a hand edit, a bug) therefore makes every later archive of a run collide with ``pk_runs``.

Was a defect (fixed): the collision came out as a generic ``StoreError`` ("the database
rejected an operation"), which a consumer retries as a store fault and which stopped the
deadline sweep at that batch for every other batch. It is now the batch's
``CorruptStateError`` (``SqlStore._miscounted``), which the sweeps skip per batch.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable

import pytest
from pipeline_state_sql import SqlStore
from sqlalchemy import text

from pipeline_state import PipelineService
from pipeline_state.errors import CorruptStateError, StoreError
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from tests.core.test_core_request_redelivered_after_purge import first_run

StoreMaker = Callable[[], Awaitable[SqlStore]]


async def _rewrite(store: SqlStore, backend: str, batch_id: str, change: Callable[[dict], None]) -> dict:
    async with store.engine.begin() as conn:
        (raw,) = (
            await conn.execute(text("SELECT state FROM batches WHERE batch_id = :b"), {"b": batch_id})
        ).one()
        document = json.loads(raw) if isinstance(raw, str) else dict(raw)
        change(document)
        cast = "CAST(:d AS jsonb)" if backend == "postgres" else ":d"
        await conn.execute(
            text(f"UPDATE batches SET state = {cast} WHERE batch_id = :b"),
            {"d": json.dumps(document), "b": batch_id},
        )
    return document


def _count_zero(document: dict) -> None:
    document["past"]["count"] = 0
    document["past"]["accepted"] = []


async def test_a_count_lower_than_the_runs_table_is_corrupt_state_and_writes_nothing(
    make_store: StoreMaker, backend: str
) -> None:
    """Was a defect (fixed): a batch whose document counts fewer archived runs than the runs
    table holds is a corrupt row: refused as :class:`CorruptStateError` naming the batch
    (what the sweeps skip per batch, ``_ONE_BATCH``), nothing written, not as a generic
    ``StoreError`` ("the database rejected an operation"), which a consumer retries as a
    store fault and which stopped a deadline sweep for every other batch."""
    store = await make_store()
    story = await first_run(store, fail_spellcheck=False, purge=False)
    await _rewrite(store, backend, "b1", _count_zero)
    fresh = await make_store()
    service = PipelineService(fresh, clock=story.clock)
    env = HuleEduEnvelopes()
    # nlp was completed by the first run: the whole pipeline is pruned, its run archived at once
    with pytest.raises(CorruptStateError, match="counts 0 archived runs, the runs table holds 1") as info:
        await service.handle_message(*env.request("b1", "nlp", correlation_id=str(uuid.uuid4())))
    assert info.value.batch_id == "b1"
    assert len(await fresh.history("b1")) == 1


async def _sweep_story(make_store: StoreMaker, backend: str, *, tamper: bool) -> None:
    """(story) Two batches with an overdue phase; b1's row counts fewer runs than the runs table
    holds, so failing its overdue run (archiving it) collides with ``pk_runs``. The sweep
    must still expire b2 (a batch that cannot be swept is skipped, the others are swept)."""
    store = await make_store()
    story = await first_run(store, fail_spellcheck=False, purge=False)
    env = HuleEduEnvelopes()
    service = story.service
    # b1: a new run (cj_assessment: spellcheck is pruned, cj_assessment dispatched)
    await story.deliver(env.request("b1", "cj_assessment", correlation_id=str(uuid.uuid4())))
    assert (await store.load("b1")).active_run is not None  # type: ignore[union-attr]
    # b2: registered, provisioned, a run dispatched a moment later (later deadline)
    items = env.item_ids("b2", 1)
    for delivery in (
        env.register("b2", items=1),
        env.provisioned("b2", items),
        env.request("b2", "nlp", correlation_id=str(uuid.uuid4())),
    ):
        story.clock.advance(1)
        await story.deliver(delivery)
    assert (await store.load("b2")).active_run is not None  # type: ignore[union-attr]
    if tamper:
        await _rewrite(store, backend, "b1", _count_zero)
    fresh = await make_store()
    service = PipelineService(fresh, clock=story.clock)
    errors: list[str] = []
    for _ in range(12):  # re-sends first, then the timeout fails (archives) the run
        story.clock.advance(10 * 86_400)
        try:
            await service.expire_overdue()
        except StoreError as exc:
            errors.append(type(exc).__name__)
        b2 = await fresh.load("b2")
        assert b2 is not None
        if b2.active_run is None:
            break
    b2 = await fresh.load("b2")
    assert b2 is not None
    assert b2.active_run is None, f"b2 was never expired; sweep errors: {errors}"


async def test_a_count_tampered_batch_does_not_stop_the_deadline_sweep_of_other_batches(
    make_store: StoreMaker, backend: str
) -> None:
    """Was a defect (fixed): two batches with an overdue phase; b1's row counts fewer runs
    than the runs table holds, so failing its overdue run (archiving it) collides with
    ``pk_runs``. It was a ``StoreError`` (not in ``_ONE_BATCH``): ``expire_overdue`` raised
    at b1 on every sweep and b2, overdue too, was never expired."""
    await _sweep_story(make_store, backend, tamper=True)


async def test_an_untampered_sweep_expires_both(make_store: StoreMaker, backend: str) -> None:
    await _sweep_story(make_store, backend, tamper=False)
