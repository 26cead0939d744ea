"""Stored rows from an older layout, tampered by hand. A row that cannot be read
must give CorruptStateError naming its batch (codec.py's promise), never another exception,
and must not keep the other batches from loading."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from pipeline_state_sql import SqlStore
from pipeline_state_sql.codec import decode_state
from sqlalchemy import text

from pipeline_state import ManualClock, PipelineService
from pipeline_state.errors import CorruptStateError
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes


async def _one_archived_run(service: PipelineService, clock: ManualClock, batch: str) -> None:
    env, corr = HuleEduEnvelopes(), str(uuid.uuid4())
    items = env.item_ids(batch, 1)
    for delivery in (
        env.register(batch, items=1),
        env.provisioned(batch, items),
        env.request(batch, "nlp", correlation_id=corr),
        env.outcome(batch, "spellcheck", corr, processed=items),
        env.outcome(batch, "nlp", corr, processed=items),
    ):
        clock.advance(1)
        await service.handle_message(*delivery)


async def _layout_1(store: SqlStore, batch: str) -> dict[str, Any]:
    """The batch's document as layout 1 wrote it: every archived run under ``history``."""
    async with store.engine.connect() as conn:
        state = (
            await conn.execute(
                text("SELECT CAST(state AS TEXT) FROM batches WHERE batch_id = :b"), {"b": batch}
            )
        ).scalar_one()
        runs = (
            await conn.execute(
                text("SELECT CAST(document AS TEXT) FROM runs WHERE batch_id = :b ORDER BY seq"), {"b": batch}
            )
        ).scalars()
        history = [{k: v for k, v in json.loads(r).items() if k != "schema"} for r in runs]
    document = {k: v for k, v in json.loads(state).items() if k != "past"}
    document["schema"] = 1
    document["history"] = history
    return document


async def _write(store: SqlStore, backend: str, batch: str, document: dict[str, Any]) -> None:
    cast = "CAST(:d AS jsonb)" if backend == "postgres" else ":d"
    async with store.engine.begin() as conn:
        await conn.execute(
            text(f"UPDATE batches SET state = {cast} WHERE batch_id = :b"),
            {"d": json.dumps(document), "b": batch},
        )


async def _active_pair(make_store: Any, backend: str, *, bad: str, good: str) -> tuple[SqlStore, ManualClock]:
    """Two batches with an active run each; ``bad`` archived one run before, and its row is
    then rewritten in layout 1 with that run's first phase holding a list as its status."""
    store = await make_store()
    clock = ManualClock()
    service = PipelineService(store, clock=clock)
    env = HuleEduEnvelopes()
    await _one_archived_run(service, clock, bad)
    clock.advance(1)
    await service.handle_message(*env.request(bad, "ai_feedback", correlation_id=str(uuid.uuid4())))
    assert (await store.load(bad)).active_run is not None  # type: ignore[union-attr]
    for delivery in (
        env.register(good, items=1),
        env.provisioned(good, env.item_ids(good, 1)),
        env.request(good, "nlp", correlation_id=str(uuid.uuid4())),
    ):
        clock.advance(1)
        await service.handle_message(*delivery)
    document = await _layout_1(store, bad)
    document["history"][0]["phases"][0]["status"] = ["completed_successfully"]
    await _write(store, backend, bad, document)
    return store, clock


@pytest.mark.parametrize(
    ("field", "value"),
    [("status", ["completed_successfully"]), ("name", {"phase": "spellcheck"}), ("name", ["nlp"])],
)
async def test_a_layout_1_row_with_an_unhashable_phase_field_is_corrupt(
    make_store: Any, backend: str, field: str, value: object
) -> None:
    """Was a defect (fixed): a layout-1 row (archived runs under ``history``) whose
    archived phase has a list or an
    object for ``status`` or ``name``: the upgrade step ``past_from_history``
    (adapters/pipeline_state_sql/codec.py:90-92, ``phase.get("status") in _DONE`` and
    ``recorded.pop(phase.get("name"))``) hashes the value and raises a bare TypeError
    ("unhashable type"), which ``DocumentCodec.decode`` does not turn into
    CorruptStateError (it catches only UnknownSchemaError and Invalid). Observed: TypeError
    out of ``store.load``, naming no batch. Expected: CorruptStateError naming the batch (as
    for every other malformed field), and the other batches still load."""
    store = await make_store()
    clock = ManualClock()
    service = PipelineService(store, clock=clock)
    await _one_archived_run(service, clock, "bad")
    await _one_archived_run(service, clock, "good")
    document = await _layout_1(store, "bad")
    decode_state("bad", document)  # the untampered layout-1 row reads
    document["history"][0]["phases"][0][field] = value
    await _write(store, backend, "bad", document)
    fresh = await make_store()  # no state cache in front of the row
    with pytest.raises(CorruptStateError, match="bad"):
        await fresh.load("bad")
    assert (await fresh.load("good")) is not None


async def test_one_layout_1_row_with_an_unhashable_phase_status_hides_no_other_stalled_run(
    make_store: Any, backend: str
) -> None:
    """Was a defect (fixed): ``stalled_runs`` (queries.py:357-362) promises that a batch
    whose state cannot be read
    "is logged and left out, so that it hides none of the others" - it catches
    CorruptStateError only. The layout-1 row above raises a bare TypeError instead, so the
    whole listing fails and the operator sees no stalled run at all. Expected: ``good`` is
    listed, ``bad`` left out (logged)."""
    _, clock = await _active_pair(make_store, backend, bad="bad", good="good")
    fresh = await make_store()
    clock.advance(600)
    stalled = await fresh.stalled_runs(clock.now(), 60)
    assert [s.batch_id for s in stalled] == ["good"]


async def test_one_layout_1_row_with_an_unhashable_phase_status_does_not_stop_the_deadline_sweep(
    make_store: Any, backend: str
) -> None:
    """Was a defect (fixed): ``PipelineService.expire_overdue`` skips a batch it cannot sweep (``_ONE_BATCH``,
    _service.py:207, holds CorruptStateError) so that the others still meet their deadlines.
    The tampered layout-1 row of ``a1`` raises a bare TypeError out of ``store.load``
    instead (codec.py:90-92), which aborts the whole sweep: ``b1``, overdue too, is never
    expired, on this sweep or any later one. Expected: ``b1`` swept, ``a1`` skipped."""
    store, clock = await _active_pair(make_store, backend, bad="a1", good="b1")
    before = await store.load("b1")
    assert before is not None
    fresh = await make_store()
    sweeper = PipelineService(fresh, clock=clock)
    clock.advance(2 * 3600)  # past the default one-hour deadline of both
    results = await sweeper.expire_overdue()
    assert [r.batch_id for r in results] == ["b1"]
    after = await fresh.load("b1")
    assert after is not None
    assert after.version > before.version
