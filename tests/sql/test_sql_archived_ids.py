"""Issue 16, point 5: the SQL store writes a batch's archived runs as a count (layout 4), not
as their ids, so an event on a batch with a long history reads and writes a row of the size
it had with one run (``tests/sql/test_sql_history_growth.py``). The decisions that ask about
those ids still get them, from the ``runs`` table, and only they pay for the lookup:

* an outcome carrying an archived run's correlation id is ignored as stale, while a run is
  active and while none is (it never waits for a run of its own);
* a run-starting request delivered again after the inbox purge is ``already_handled``
  (``tests/sql/test_sql_request_redelivered_after_purge.py``);
* an outcome of the active run asks nothing of the history.

Each story is played on the memory store as well: both decide alike.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from pipeline_state_sql import SqlStore
from pipeline_state_sql.codec import SCHEMA_VERSION
from sqlalchemy import text

from pipeline_state import HandleResult, InMemoryStore, PipelineService
from pipeline_state.ports import Store
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from tests.core.test_core_request_redelivered_after_purge import Story, first_run

StoreMaker = Callable[[], Awaitable[SqlStore]]


class Lookups:
    """Counts the service's reads of a store's history (a spy on the real store)."""

    def __init__(self, store: Store) -> None:
        self.calls: list[str] = []
        for name in ("archived_ids", "history"):
            read = getattr(store, name)

            async def counted(batch_id: str, _read: Any = read, _name: str = name) -> Any:
                self.calls.append(_name)
                return await _read(batch_id)

            setattr(store, name, counted)


async def _with_an_old_run(store: Store) -> tuple[Story, str]:
    """``b1`` with one archived run (returned: its correlation id), inbox kept."""
    story = await first_run(store, fail_spellcheck=False, purge=False)
    [old] = await store.history("b1")
    return story, old.correlation_id


def _outcome(correlation_id: str, phase: str = "cj_assessment") -> tuple[str, dict[str, object]]:
    env = HuleEduEnvelopes()
    return env.outcome(
        "b1", phase, correlation_id, processed=env.item_ids("b1", 1), event_id=str(uuid.uuid4())
    )


async def _stale_while_a_run_is_active(store: Store, fresh: Store) -> tuple[HandleResult, list[str]]:
    story, old = await _with_an_old_run(store)
    await story.deliver(HuleEduEnvelopes().request("b1", "cj_assessment", correlation_id=str(uuid.uuid4())))
    service = PipelineService(fresh, clock=story.clock)
    lookups = Lookups(fresh)
    result = await service.handle_message(*_outcome(old))
    assert isinstance(result, HandleResult)
    return result, lookups.calls


async def _stale_with_no_run(store: Store, fresh: Store) -> tuple[HandleResult, list[str], int]:
    story, old = await _with_an_old_run(store)
    service = PipelineService(fresh, clock=story.clock)
    lookups = Lookups(fresh)
    result = await service.handle_message(*_outcome(old))
    assert isinstance(result, HandleResult)
    return result, lookups.calls, await fresh.count_waiting()


async def test_a_stale_outcome_is_ignored_while_a_run_is_active(make_store: StoreMaker) -> None:
    result, calls = await _stale_while_a_run_is_active(store := await make_store(), await make_store())
    assert result.decision is not None
    assert result.decision.ignored == "stale_run", result.decision
    assert not result.messages
    assert calls == ["archived_ids"]  # the key columns, not the runs' documents
    memory = InMemoryStore()
    expected, _ = await _stale_while_a_run_is_active(memory, memory)
    assert expected.decision is not None
    assert expected.decision.ignored == result.decision.ignored
    del store


async def test_a_stale_outcome_never_waits_for_a_run(make_store: StoreMaker) -> None:
    result, calls, waiting = await _stale_with_no_run(await make_store(), await make_store())
    assert waiting == 0
    assert result.waiting is None
    assert result.decision is not None
    assert result.decision.ignored == "no_active_run", result.decision
    assert calls == ["archived_ids"]
    memory = InMemoryStore()
    expected, _, memory_waiting = await _stale_with_no_run(memory, memory)
    assert (expected.decision is not None, memory_waiting) == (True, 0)
    assert expected.decision.ignored == result.decision.ignored  # type: ignore[union-attr]


async def test_an_outcome_of_the_active_run_reads_no_history(make_store: StoreMaker, backend: str) -> None:
    store = await make_store()
    story, _ = await _with_an_old_run(store)
    current = str(uuid.uuid4())
    await story.deliver(HuleEduEnvelopes().request("b1", "cj_assessment", correlation_id=current))
    fresh = await make_store()
    lookups = Lookups(fresh)
    result = await PipelineService(fresh, clock=story.clock).handle_message(*_outcome(current))
    assert isinstance(result, HandleResult)
    assert result.decision is not None
    assert result.decision.changed
    assert lookups.calls == []
    # What the lookup of another event learns is not written: the row counts the runs.
    await PipelineService(fresh, clock=story.clock).handle_message(*_outcome(str(uuid.uuid4())))
    assert lookups.calls == ["archived_ids"]
    async with fresh.engine.connect() as conn:
        raw = (await conn.execute(text("SELECT state FROM batches WHERE batch_id = 'b1'"))).scalar_one()
    document = json.loads(raw) if isinstance(raw, str) else raw
    assert document["schema"] == SCHEMA_VERSION
    assert document["past"]["count"] == 2  # the first run and the one the outcome completed
    assert set(document["past"]) == {"count", "accepted", "recorded", "answered", "reported"}


@pytest.mark.parametrize("archived", [0, 3])
async def test_archived_ids_are_the_runs_table_key_columns(make_store: StoreMaker, archived: int) -> None:
    store = await make_store()
    assert await store.archived_ids("b1") == []
    if archived:
        story, _ = await _with_an_old_run(store)
        for _ in range(archived - 1):
            corr = str(uuid.uuid4())
            env = HuleEduEnvelopes()
            await story.deliver(env.request("b1", "nlp", correlation_id=corr))
            for phase in ("spellcheck", "nlp"):
                await story.deliver(env.outcome("b1", phase, corr, processed=env.item_ids("b1", 1)))
    runs = await store.history("b1")
    assert len(runs) == archived
    assert await store.archived_ids("b1") == [(run.run_id, run.correlation_id) for run in runs]
