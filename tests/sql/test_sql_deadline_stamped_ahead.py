"""A phase deadline stamped by a process whose clock was ahead, on a batch that a process
with a true clock changed since: the batch is filed as due at that change
(``pipeline_state._deadline_index.next_deadline``), so the next sweep times the phase out.
Time moves with ManualClock only (no sleeps)."""

from __future__ import annotations

from datetime import timedelta

from pipeline_state_sql import SqlStore
from sqlalchemy import text

from pipeline_state import Catalog, InMemoryStore, ManualClock, PipelineService
from pipeline_state.ports import Store
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.profile import huleedu_profile
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

from .conftest import StoreMaker

COMPLETED = Topic.PIPELINE_COMPLETED.value

# Two independent phases (both roots), each with a one-minute deadline.
CATALOG = Catalog.from_dict(
    {
        "pipelines": {
            "nlp": {
                "steps": [
                    {"name": "spellcheck", "deadline_seconds": 60},
                    {"name": "nlp", "deadline_seconds": 60},
                ]
            }
        }
    }
)

_TRUE = ManualClock().now()
_AHEAD = timedelta(days=365)


def _service(store: Store, clock: ManualClock) -> PipelineService:
    return PipelineService(store, profile=huleedu_profile(catalog=CATALOG, max_resends=1), clock=clock)


async def _stuck_after_two_days(store_a: Store, store_b: Store) -> str | None:
    """Process A (clock a year ahead) accepts an ``nlp`` run: spellcheck and nlp are both
    dispatched with deadlines a year (and a minute) from the true time. Process B (true
    clock) applies spellcheck's outcome, so the batch's ``updated_at`` is the true time
    again; nlp's worker never answers. B sweeps deadlines every ten minutes for two days.
    Returns a description of the still-active run, or ``None`` when it completed."""
    ahead = ManualClock(_TRUE + _AHEAD)
    clock = ManualClock(_TRUE)
    a, b = _service(store_a, ahead), _service(store_b, clock)
    env = HuleEduEnvelopes()
    ids = env.item_ids("b1", 2)
    await a.handle_message(*env.register("b1", items=2))
    await a.handle_message(*env.provisioned("b1", ids))
    accepted = await a.handle_message(*env.request("b1", "nlp"))
    assert accepted.state is not None
    assert accepted.state.active_run is not None
    correlation_id = accepted.state.active_run.correlation_id
    await b.handle_message(*env.outcome("b1", "spellcheck", correlation_id, processed=ids))
    for _ in range(2 * 24 * 6):
        clock.advance(600)
        await b.expire_overdue()
    state = await store_b.load("b1")
    assert state is not None
    run = state.active_run
    if run is None:
        return None
    phases = [(p.name, p.status.value, p.deadline_at) for p in run.phases]
    return f"status {state.status.value}; phases {phases}"


async def test_memory_deadline_stamped_ahead_fires_after_a_true_clock_change() -> None:
    """Was a defect (found by an attack on time).

    Expected (CONTRACT §2 "No run blocks its batch for ever"; the fix of
    tests/sql/test_sql_sweep_attacks.py::test_a_phase_deadline_stamped_by_a_clock_ahead_fires):
    a phase deadline further ahead than the phase's own span plus the clock-step horizon
    counts as passed, so nlp is re-sent, then timed out, and the run completes once.

    Actual: ``expire_overdue`` finds the batch neither by ``overdue_batches`` (its deadline is
    a year ahead) nor by the "changed ahead" ``stalled_runs`` look-up (its ``updated_at`` was
    reset to the true time by the spellcheck outcome B applied), so the ``overdue`` guard that
    would treat the far deadline as passed is never asked: the batch stays
    ``processing_pipelines`` for a year (pipeline_state/_service.py expire_overdue, the
    ``ahead = await self.store.stalled_runs(...)`` fallback)."""
    store = InMemoryStore()
    stuck = await _stuck_after_two_days(store, store)
    assert stuck is None, f"two days of sweeps later the run is still active: {stuck}"


async def test_sql_deadline_stamped_ahead_fires_after_a_true_clock_change(make_store: StoreMaker) -> None:
    """Was a defect (found by an attack on time). As the memory test, on SQLite and
    PostgreSQL with two processes (two stores on one database): the batch's
    ``next_deadline_at`` column was a year ahead and its ``updated_at`` the true time, so
    neither ``overdue_batches`` nor ``stalled_runs`` (the fallback for runs changed ahead)
    yielded it; the run blocked the batch for a year and no completion was written.
    Expected: nlp is timed out within the two days and the run completes once."""
    store_a, store_b = await make_store(), await make_store()
    stuck = await _stuck_after_two_days(store_a, store_b)
    assert stuck is None, f"two days of sweeps later the run is still active: {stuck}"
    assert isinstance(store_b, SqlStore)
    async with store_b.engine.connect() as conn:
        count = (
            await conn.execute(
                text("SELECT COUNT(*) FROM outbox WHERE topic = :t AND key = :k"), {"t": COMPLETED, "k": "b1"}
            )
        ).scalar_one()
    assert count == 1
