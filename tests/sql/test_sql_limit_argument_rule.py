"""A ``limit`` below 1 is refused alike by every store and by the service's sweeps
(``pipeline_state._limits.check_limit``)."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline_state import InMemoryStore, ManualClock, PipelineService
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

from .conftest import StoreMaker


async def _three_overdue_runs(store: Any) -> tuple[PipelineService, ManualClock]:
    """Three batches with an active ``nlp`` run, all past their spellcheck deadline and
    without progress for two hours."""
    clock = ManualClock()
    service = PipelineService(store, clock=clock)
    env = HuleEduEnvelopes()
    for batch_id in ("b1", "b2", "b3"):
        ids = env.item_ids(batch_id, 1)
        await service.handle_message(*env.register(batch_id, items=1))
        await service.handle_message(*env.provisioned(batch_id, ids))
        await service.handle_message(*env.request(batch_id, "nlp", prompt_payload={"prompt_ref": "p"}))
        clock.advance(10)
    clock.advance(7200)
    return service, clock


async def _answers(store: Any) -> dict[str, str]:
    service, clock = await _three_overdue_runs(store)
    answers: dict[str, str] = {}
    calls = {
        "stalled_runs": lambda: store.stalled_runs(clock.now(), 0, limit=-1),
        "overdue_batches": lambda: store.overdue_batches(clock.now(), -1),
        "expire_overdue": lambda: service.expire_overdue(limit=-1),
    }
    for name, call in calls.items():
        try:
            found = await call()
        except ValueError as exc:
            answers[name] = f"ValueError: {exc}"[:11]  # the refusal, whatever its wording
            continue
        except Exception as exc:
            answers[name] = f"{type(exc).__name__}"
            continue
        shown = [getattr(f, "batch_id", f) for f in found] if name != "expire_overdue" else len(found)
        answers[name] = repr(shown)
    return answers


async def test_a_negative_limit_is_refused_alike_by_every_store(make_store: StoreMaker) -> None:
    """Was a defect (found by an attack on time).

    Expected: ``limit=-1`` on ``Store.stalled_runs``, ``Store.overdue_batches`` and
    ``PipelineService.expire_overdue`` is refused with a clear ``ValueError`` ("limit must be a
    whole number of at least 1", as ``purge`` already does on both stores), and in any case
    the three stores answer alike (CONTRACT: the stores are interchangeable).

    Actual: three different answers for the same call on the same data. In memory,
    ``sorted(...)[:limit]`` drops the *last* item (``stalled_runs`` lists b1, b2 and hides
    b3; pipeline_state/_memory.py ``overdue_batches``/``stalled_runs``); SQLite renders
    ``LIMIT -1`` as "no limit" and lists all three; PostgreSQL refuses it as
    ``RejectedDataError`` ("LIMIT must not be negative",
    adapters/pipeline_state_sql/queries.py ``stalled_runs``/``overdue_batch_ids``). And
    ``expire_overdue(limit=-1)`` silently sweeps nothing on memory and SQLite (``swept >=
    limit`` skips every batch, pipeline_state/_service.py) while PostgreSQL raises."""
    memory = await _answers(InMemoryStore())
    sql = await _answers(await make_store())
    assert memory == sql, f"memory answers {memory}, this SQL store {sql}"
    assert all(answer.startswith("ValueError") for answer in sql.values()), sql


async def test_every_listing_and_sweep_refuses_a_limit_below_one(make_store: StoreMaker) -> None:
    for store in (InMemoryStore(), await make_store()):
        service, clock = await _three_overdue_runs(store)
        for limit in (0, -1, True, 1.5):
            calls = [
                store.stalled_runs(clock.now(), 0, limit=limit),
                store.overdue_batches(clock.now(), limit),
                store.list_waiting(limit=limit),
                service.expire_overdue(limit=limit),
                service.expired_waiting(limit=limit),
            ]
            for call in calls:
                with pytest.raises(ValueError, match="whole number of at least 1"):
                    await call
