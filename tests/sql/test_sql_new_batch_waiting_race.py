"""A batch's registration and an early fact of it (its provisioning) handled at the same
moment, by two services on one SQL store: the fact must not be left waiting for the next
sweep of the waiting set."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from pipeline_state_sql import SqlStore

from pipeline_state import ManualClock, PipelineService
from pipeline_state.ports import Change
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

pytestmark = pytest.mark.timeout(60)


class HeldCreation:
    """``store`` whose commit of a change creating a batch waits for ``go`` (the test's
    way to put another writer's commit between this one's read and its commit)."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store
        self.held = asyncio.Event()
        self.go = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def _hold(self, changes: Sequence[Change]) -> None:
        if any(c.expected_version is None and c.state is not None for c in changes):
            self.held.set()
            await self.go.wait()

    async def commit(self, change: Change) -> None:
        await self._hold([change])
        await self._store.commit(change)

    async def commit_many(self, changes: Sequence[Change]) -> None:
        await self._hold(changes)
        await self._store.commit_many(changes)


async def test_a_provisioning_kept_while_the_registration_commits_applies_at_once(
    sql_store: SqlStore,
) -> None:
    """Was a defect (fixed): the registration read the new batch (no waiting facts), the
    provisioning then found no batch and was kept waiting, and the registration committed:
    no change of the batch was left to resume the fact, which waited for the next
    ``sweep_waiting``. The service that created the batch now looks for facts kept
    meanwhile once its commit is done, and the one that kept a fact for a batch that did not
    exist looks for the batch once its commit is done; one of the two finds the other."""
    env = HuleEduEnvelopes()
    clock = ManualClock()
    held = HeldCreation(sql_store)
    registering = PipelineService(held, clock=clock)  # type: ignore[arg-type]
    provisioning = PipelineService(sql_store, clock=clock)
    items = env.item_ids("b1", 2)
    registration = asyncio.create_task(registering.handle_message(*env.register("b1", items=2)))
    await asyncio.wait_for(held.held.wait(), 10)
    kept = await provisioning.handle_message(*env.provisioned("b1", items))
    assert kept.waiting is not None  # no batch yet: the fact waits
    held.go.set()
    registered = await asyncio.wait_for(registration, 10)
    assert registered.decision is not None

    state = await provisioning.get_batch("b1")
    assert state.status.value == "ready_for_pipeline_execution"
    assert await provisioning.waiting_count() == 0
