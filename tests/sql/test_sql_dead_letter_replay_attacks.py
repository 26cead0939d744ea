"""Found by an attack on the replay of dead-lettered facts on SQL stores. The test whose
docstring says "Was a defect" failed before its fix; the other held."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pipeline_state_sql import SqlStore

from pipeline_state import ManualClock, PipelineService
from pipeline_state._replay import replay_id
from pipeline_state._service import ExpiredFact
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from tests.sql.conftest import StoreMaker
from tests.sql.test_sql_new_batch_waiting_race import HeldCreation

pytestmark = pytest.mark.timeout(60)


async def _letter(service: PipelineService, clock: ManualClock, raw: tuple[str, Any]) -> ExpiredFact:
    kept = await service.handle_message(*raw)
    assert kept.waiting is not None
    letters: list[ExpiredFact] = []

    async def dead_letter(fact: ExpiredFact) -> None:
        letters.append(fact)

    clock.advance(service.waiting_window_seconds + 1)
    await service.sweep_waiting(dead_letter)
    (letter,) = letters
    return letter


async def test_the_sweep_goes_on_past_an_early_replay_its_batch_can_now_take(sql_store: SqlStore) -> None:
    """Was a defect (fixed): the early replay (waiting under R1) kept while the registration
    commits: the registration's look-again resumes it, and the commit fails on the inbox row
    of the original id E (the resumed command is re-parsed from the raw bytes, id E). Then
    every ``sweep_waiting`` re-attempts that batch first and raises DuplicateEventError (not
    one of the per-batch errors it skips): the periodic sweep stops, so no other fact of any
    batch is ever expired or dead-lettered again, and the provisioning never applies."""
    env = HuleEduEnvelopes()
    clock = ManualClock()
    held = HeldCreation(sql_store)
    registering = PipelineService(held, clock=clock)  # type: ignore[arg-type]
    replaying = PipelineService(sql_store, clock=clock)
    letter = await _letter(replaying, clock, env.provisioned("q1", env.item_ids("q1", 1)))

    registration = asyncio.create_task(registering.handle_message(*env.register("q1", items=1)))
    await asyncio.wait_for(held.held.wait(), 10)
    early = await replaying.handle_message(letter.topic, letter.raw)
    assert early.event_id == replay_id(letter.event_id)
    assert early.waiting is not None
    held.go.set()
    await asyncio.wait_for(registration, 10)

    async def dead_letter(_fact: ExpiredFact) -> None:
        pass

    sweep_error: BaseException | None = None
    try:
        await replaying.sweep_waiting(dead_letter)
    except Exception as exc:
        sweep_error = exc
    assert sweep_error is None, f"sweep_waiting raised {type(sweep_error).__name__}: {sweep_error}"
    assert (await replaying.get_batch("q1")).status.value == "ready_for_pipeline_execution"


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"])
async def test_two_processes_replay_one_letter_at_once(make_store: StoreMaker) -> None:
    """Two services (own engines) replay the same letter at the same moment on a ready
    batch: it applies exactly once; the other answer is a duplicate."""
    env = HuleEduEnvelopes()
    clock = ManualClock()
    one = PipelineService(await make_store(), clock=clock)
    two = PipelineService(await make_store(), clock=clock)
    letter = await _letter(one, clock, env.provisioned("t1", env.item_ids("t1", 2)))
    await one.handle_message(*env.register("t1", items=2))
    results = await asyncio.gather(
        one.handle_message(letter.topic, letter.raw), two.handle_message(letter.topic, letter.raw)
    )
    applied = [r for r in results if not r.duplicate]
    assert len(applied) == 1, results
    assert applied[0].event_id == replay_id(letter.event_id)
    state = await one.get_batch("t1")
    assert state.status.value == "ready_for_pipeline_execution"
    assert (await one.handle_message(letter.topic, letter.raw)).duplicate
