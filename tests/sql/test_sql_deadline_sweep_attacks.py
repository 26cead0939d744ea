"""Found by an attack, held: the deadline sweep's remembered unswept batches (a mended batch
is swept behind more than a page of overdue ones) and the clock-ahead rule (a legit
six-hour deadline never fires early)."""

from __future__ import annotations

import pytest
from pipeline_state_sql import SqlStore
from sqlalchemy import text

from pipeline_state import Catalog, ManualClock, PipelineService
from pipeline_state.profiles.huleedu.profile import huleedu_profile
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from tests.sql.conftest import StoreMaker

pytestmark = pytest.mark.timeout(120)

HOURS = 6 * 3600.0
CATALOG = Catalog.from_dict(
    {
        "pipelines": {
            "nlp": {
                "steps": [
                    {"name": "spellcheck", "deadline_seconds": 60},
                    {"name": "nlp", "depends_on": ["spellcheck"], "deadline_seconds": 60},
                ]
            },
            "cj_assessment": {
                "steps": [
                    {"name": "spellcheck", "deadline_seconds": HOURS},
                    {"name": "cj_assessment", "depends_on": ["spellcheck"], "deadline_seconds": HOURS},
                ]
            },
        }
    }
)


def _service(store: SqlStore, clock: ManualClock) -> PipelineService:
    return PipelineService(store, profile=huleedu_profile(catalog=CATALOG, max_resends=0), clock=clock)


async def _start(service: PipelineService, batch_id: str, pipeline: str = "nlp") -> None:
    env = HuleEduEnvelopes()
    ids = env.item_ids(batch_id, 1)
    for delivery in (env.register(batch_id, items=1), env.provisioned(batch_id, ids)):
        await service.handle_message(*delivery)
    result = await service.handle_message(*env.request(batch_id, pipeline))
    assert result.state is not None
    assert result.state.active_run is not None


async def _set_state(store: SqlStore, batch_id: str, document: str) -> None:
    cast = "CAST(:doc AS JSONB)" if store.engine.dialect.name == "postgresql" else ":doc"
    async with store.engine.begin() as conn:
        await conn.execute(
            text(f"UPDATE batches SET state = {cast} WHERE batch_id = :id"), {"doc": document, "id": batch_id}
        )


async def _get_state(store: SqlStore, batch_id: str) -> str:
    async with store.engine.connect() as conn:
        value = (
            await conn.execute(
                text("SELECT CAST(state AS TEXT) FROM batches WHERE batch_id = :id"), {"id": batch_id}
            )
        ).scalar_one()
    return str(value)


async def test_repaired_batch_is_swept_behind_more_than_a_page(make_store: StoreMaker) -> None:
    """The most overdue batch is unreadable for two sweeps, then mended, while more than a
    page of other overdue batches wait: the next sweep takes it (remembered, on top of the
    limit), and every run times out once."""
    store = await make_store()
    clock = ManualClock()
    service = _service(store, clock)
    await _start(service, "a0")
    clock.advance(1)
    for n in range(4):
        await _start(service, f"h{n}")
    good = await _get_state(store, "a0")
    await _set_state(store, "a0", '{"schema": 99, "batch_id": "a0"}')
    sweeper = _service(await make_store(), clock)
    clock.advance(61)
    await sweeper.expire_overdue(limit=2)
    await sweeper.expire_overdue(limit=2)
    await _set_state(store, "a0", good)
    await sweeper.expire_overdue(limit=2)
    mended = await store.load("a0")
    assert mended is not None
    assert mended.active_run is None, "the mended batch was not swept at once"
    for _ in range(3):
        await sweeper.expire_overdue(limit=2)
    for batch_id in ("h0", "h1", "h2", "h3"):
        loaded = await store.load(batch_id)
        assert loaded is not None, batch_id
        assert loaded.active_run is None, batch_id
    assert sweeper._unswept == set()


async def test_a_six_hour_deadline_never_fires_early(make_store: StoreMaker) -> None:
    """A legit six-hour phase deadline, swept every ten minutes: nothing fires before it."""
    store = await make_store()
    clock = ManualClock()
    service = _service(store, clock)
    await _start(service, "long", "cj_assessment")
    for _ in range(int(HOURS // 600) - 1):
        clock.advance(600)
        swept = await service.expire_overdue()
        assert all(r.decision is None or not r.decision.changed for r in swept), swept
        state = await store.load("long")
        assert state is not None
        assert state.active_run is not None
        assert state.active_run.phases[0].status.value in ("dispatch_initiated", "in_progress")
    clock.advance(1200)
    await service.expire_overdue()
    state = await store.load("long")
    assert state is not None
    assert state.active_run is None or state.active_run.phases[0].status.value == "failed"
