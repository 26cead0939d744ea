"""Found by an attack on the look-again after a commit that created a batch or kept a fact
for a missing one (``PipelineService._settle_new_batches``). The tests whose docstring says
"Was a defect" failed before their fix (the group commit of ``handle_many``, the Kafka
consumer's path, never looked again); the other held."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pipeline_state_sql import SqlStore

from pipeline_state import ManualClock, PipelineService
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from tests.sql.test_sql_new_batch_waiting_race import HeldCreation

pytestmark = pytest.mark.timeout(60)


async def _race(sql_store: SqlStore, *, registration_many: bool, provisioning_many: bool) -> tuple[str, int]:
    env = HuleEduEnvelopes()
    clock = ManualClock()
    held = HeldCreation(sql_store)
    registering = PipelineService(held, clock=clock)  # type: ignore[arg-type]
    provisioning = PipelineService(sql_store, clock=clock)
    items = env.item_ids("b1", 2)
    register = env.register("b1", items=2)
    if registration_many:
        registration: asyncio.Task[Any] = asyncio.create_task(registering.handle_many([register]))
    else:
        registration = asyncio.create_task(registering.handle_message(*register))
    await asyncio.wait_for(held.held.wait(), 10)
    provisioned = env.provisioned("b1", items)
    if provisioning_many:
        (kept,) = await provisioning.handle_many([provisioned])
    else:
        kept = await provisioning.handle_message(*provisioned)
    assert not isinstance(kept, Exception)
    assert kept.waiting is not None  # no batch yet: the fact waits
    held.go.set()
    await asyncio.wait_for(registration, 10)
    state = await provisioning.get_batch("b1")
    return state.status.value, await provisioning.waiting_count()


async def test_a_registration_through_handle_many_looks_again(sql_store: SqlStore) -> None:
    """Was a defect (fixed): the Kafka consumer handles its fetches with ``handle_many``: a
    registration committed there (``_batched`` calls the store's ``commit_many`` directly,
    not ``_commit``) never marks its new batch unsettled, so the provisioning kept meanwhile
    is left waiting for the next sweep, exactly the race commit 6510700 says it closed."""
    status, waiting = await _race(sql_store, registration_many=True, provisioning_many=False)
    assert (status, waiting) == ("ready_for_pipeline_execution", 0), (
        f"provisioning left waiting after a handle_many registration: status={status}, waiting={waiting}"
    )


async def test_both_sides_through_handle_many_look_again(sql_store: SqlStore) -> None:
    """Was a defect (fixed): both sides consumed by Kafka consumers (``handle_many``): neither
    looks again."""
    status, waiting = await _race(sql_store, registration_many=True, provisioning_many=True)
    assert (status, waiting) == ("ready_for_pipeline_execution", 0), (
        f"provisioning left waiting when both went through handle_many: status={status}, waiting={waiting}"
    )


async def test_fact_through_handle_many_registration_alone(sql_store: SqlStore) -> None:
    """The fact kept by ``handle_many``, the registration by ``handle_message``: the
    registration's own look-again finds the fact."""
    status, waiting = await _race(sql_store, registration_many=False, provisioning_many=True)
    assert (status, waiting) == ("ready_for_pipeline_execution", 0)
