"""Hostile input, found by an attack: waiting (early) facts and their windows.

Tests whose docstring starts "Held" are attacks the code withstood, kept as guards;
the others failed before the fix that came with them."""

from __future__ import annotations

import uuid

import pytest
from core_flow import Flow, topics

from pipeline_state import InMemoryRuntime, ManualClock, PipelineService
from pipeline_state._memory import InMemoryStore
from pipeline_state._service import MAX_WAITING_PER_BATCH
from pipeline_state.errors import WaitingLimitError
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes


async def test_every_kept_waiting_fact_is_re_attempted_and_one_past_the_limit_is_refused() -> None:
    """Was a defect: 1000 outcomes (foreign correlation ids) arrived for a batch that was not
    registered yet, then its provisioning fact, then its registration. A change read only the
    first 1000 waiting facts of its batch, so the provisioning fact (the 1001st) was kept
    but never re-attempted: the batch stayed ``awaiting_content_validation`` and a request
    was denied ``batch_not_ready`` while its readiness fact sat in the waiting set (CONTRACT
    4: a fact that cannot apply yet "is re-attempted whenever its batch changes").

    Now at most :data:`MAX_WAITING_PER_BATCH` facts of a batch wait, and every one of them
    is re-attempted on each change; one more is refused at once (``WaitingLimitError``, which
    the Kafka consumer dead-letters for re-injection) instead of sitting where no change
    looks at it."""
    rt = InMemoryRuntime()
    env = HuleEduEnvelopes()
    flow = Flow(rt, env)
    ids = env.item_ids("b1", 2)
    for _ in range(MAX_WAITING_PER_BATCH - 1):
        assert await rt.deliver(*env.outcome("b1", "spellcheck", str(uuid.uuid4()), processed=ids)) == []
    await rt.deliver(*env.provisioned("b1", ids))  # the limit-th fact: kept
    with pytest.raises(WaitingLimitError) as refused:
        await rt.deliver(*env.outcome("b1", "spellcheck", str(uuid.uuid4()), processed=ids))
    assert refused.value.batch_id == "b1"
    assert len(await rt.service.store.list_waiting("b1", limit=5000)) == MAX_WAITING_PER_BATCH
    await flow.register("b1", items=2)
    state = await flow.state("b1")
    assert state.status.value == "ready_for_pipeline_execution", state.status
    out = await flow.request("b1", "nlp")
    assert Topic.PIPELINE_DENIED.value not in topics(out)


def test_waiting_window_that_cannot_be_represented_is_refused() -> None:
    """``PipelineService(waiting_window_seconds=...)`` checks only ``<= 0``: NaN passes (NaN
    <= 0 is False) and so does 1e12; both make every ``expired_waiting``/``sweep_waiting``
    raise (ValueError / OverflowError from ``now - timedelta(...)``, _service.py:599).
    Expected: a ValueError at construction, as for 0."""
    for bad in (float("nan"), float("inf"), 1e12):
        with pytest.raises(ValueError, match="waiting_window_seconds must be a positive number"):
            PipelineService(InMemoryStore(), clock=ManualClock(), waiting_window_seconds=bad)


async def test_window_boundary_is_strict() -> None:
    """Held: a fact that arrived at T is not expired at T+window, and is at T+window+1µs."""
    clock = ManualClock()
    rt = InMemoryRuntime(clock=clock)
    rt.service.waiting_window_seconds = 60
    env = HuleEduEnvelopes()
    await rt.deliver(*env.provisioned("b1", env.item_ids("b1", 2)))
    clock.advance(60)
    assert await rt.service.expired_waiting() == []
    clock.advance(0.000001)
    (expired,) = await rt.service.expired_waiting()
    assert expired.fact.waits_for == "batch_registration"


async def test_window_expires_in_the_same_tick_the_batch_becomes_ready() -> None:
    """Held: the expired request is re-attempted first; its registration+provisioning
    arrived within the tick, so it applies instead of being denied/dead-lettered."""
    clock = ManualClock()
    rt = InMemoryRuntime(clock=clock)
    rt.service.waiting_window_seconds = 60
    env = HuleEduEnvelopes()
    flow = Flow(rt, env)
    ids = env.item_ids("b1", 2)
    await flow.request("b1", "nlp")
    clock.advance(61)
    await flow.register("b1", items=2)
    await rt.deliver(*env.provisioned("b1", ids))
    dead: list[object] = []

    async def letter(fact: object) -> None:
        dead.append(fact)

    await rt.service.sweep_waiting(letter)
    assert dead == []
    state = await flow.state("b1")
    assert state.status.value == "processing_pipelines"
