"""A batch written by a process whose clock is behind is not filed as overdue before its
time: the deadline index files a deadline further ahead of the writer's clock than its
span and the horizon allow at the writer's time plus that allowance (not at the writer's
time), so the true deadline is met within the clock's lag, and a batch the sweep finds with
nothing overdue takes no slot of its ``limit``. Time moves with ManualClock only."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pipeline_state import Catalog, InMemoryStore, ManualClock, PipelineService
from pipeline_state.profiles.huleedu.profile import huleedu_profile
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

from .conftest import StoreMaker

DAY = 86_400
CATALOG = Catalog.from_dict(
    {
        "pipelines": {
            "nlp": {
                "steps": [
                    {"name": "spellcheck", "deadline_seconds": DAY},
                    {"name": "nlp", "deadline_seconds": DAY},
                ]
            }
        }
    }
)


def _service(store: Any, clock: ManualClock) -> PipelineService:
    return PipelineService(store, profile=huleedu_profile(catalog=CATALOG, max_resends=1), clock=clock)


async def _start(service: PipelineService, env: HuleEduEnvelopes, batch_id: str) -> tuple[str, list[str]]:
    ids = env.item_ids(batch_id, 1)
    await service.handle_message(*env.register(batch_id, items=1))
    await service.handle_message(*env.provisioned(batch_id, ids))
    accepted = await service.handle_message(*env.request(batch_id, "nlp"))
    assert accepted.state is not None
    assert accepted.state.active_run is not None
    return accepted.state.active_run.correlation_id, ids


async def _scenario(store_a: Any, store_b: Any) -> tuple[list[str], int]:
    """``b2`` is accepted at T0 by process A (true clock); ``b1`` twelve hours later.
    Process B, whose clock is two hours behind, applies b1's spellcheck outcome: b1's
    ``updated_at`` is B's time, its nlp deadline (true, a day on) is more than the span and
    the horizon ahead of it, so b1 is filed as due at B's time. At T0 + 1 day + 10 min b2's
    phases are a little overdue and b1's nlp is not (12 h to go). A sweeps with ``limit=1``
    every ten minutes for three hours. Returns what ``overdue_batches`` lists then, and how
    many of b2's phases are still in their first dispatch."""
    clock = ManualClock()
    a = _service(store_a, clock)
    env = HuleEduEnvelopes()
    await _start(a, env, "b2")
    clock.advance(12 * 3600)
    corr1, ids1 = await _start(a, env, "b1")
    behind = ManualClock(clock.now() - timedelta(hours=2))
    b = _service(store_b, behind)
    await b.handle_message(*env.outcome("b1", "spellcheck", corr1, processed=ids1))
    clock.advance(12 * 3600 + 600)  # T0 + 1 day + 10 min: b2 overdue, b1 not
    listed = await store_a.overdue_batches(clock.now())
    for _ in range(18):
        await a.expire_overdue(limit=1)
        clock.advance(600)
    state = await store_a.load("b2")
    assert state is not None
    assert state.active_run is not None
    untouched = sum(1 for p in state.active_run.phases if p.resends == 0 and p.is_active)
    return listed, untouched


async def _check(store_a: Any, store_b: Any) -> None:
    listed, untouched = await _scenario(store_a, store_b)
    assert listed == ["b2"], f"overdue_batches lists {listed}; only b2 has a phase past its deadline"
    assert untouched == 0, f"three hours of sweeps later, {untouched} overdue phase(s) of b2 were never swept"


async def test_memory_a_batch_written_by_a_clock_behind_is_not_filed_as_overdue() -> None:
    """Was a defect (found by a review of this fix's first form, which filed such a batch
    at the writer's time).

    Expected (ports ``Store.overdue_batches``: "batches whose active run has a phase
    deadline at or before ``now``"; ``PipelineService.expire_overdue``: batches that cannot
    be swept "never keep the others from their deadlines"): ``overdue_batches`` lists b2
    only, and b2's overdue phases are re-sent by the next sweep.

    Actual: ``next_deadline`` (pipeline_state/_deadline_index.py:31) files b1 under
    ``updated_at`` = B's time (T0 + 10 h) because its deadline is more than a day and an hour
    ahead of *that*; the sweep's guard (pipeline_state/_decide/run.py:327 ``overdue``) reads
    the sweeper's clock and says ``not_overdue``. b1 is listed first, ignored, and with
    ``limit=1`` b2 is never reached (at the default limit, 1,000 such batches do it). Before
    the fix b1 was filed at its true deadline. Fix: the state alone cannot tell which clock
    was wrong (dispatch ahead, or last write behind), so the sweep must not pay for the
    guess: a batch the sweep finds ``nothing_overdue`` should take no slot of ``limit``
    (as the unswept ones) and be re-filed at its true deadline (or the index should use the
    sweeper's own reading, e.g. file it at ``min(deadline, updated_at + horizon)``)."""
    store = InMemoryStore()
    await _check(store, store)


async def test_sql_a_batch_written_by_a_clock_behind_is_not_filed_as_overdue(make_store: StoreMaker) -> None:
    """As the memory test, on SQLite and PostgreSQL with two processes (two stores on one
    database): ``batches.next_deadline_at`` of b1 is B's (behind) write time."""
    await _check(await make_store(), await make_store())
