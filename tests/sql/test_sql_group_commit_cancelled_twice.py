"""A caller cancelled twice in a row (a timeout, then its own task cancelled at shutdown)
while its unit of work is on SQLite's one writing connection."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
from pipeline_state_sql import open_store

from pipeline_state import ManualClock, PipelineService, StoreUnavailableError
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes


@pytest.mark.parametrize("seed", range(3))
async def test_twice_cancelled_callers_leave_the_store_writable(tmp_path: Path, seed: int) -> None:
    rnd = random.Random(seed)
    store = await open_store(f"sqlite+aiosqlite:///{tmp_path / 'twice.db'}", busy_timeout=1.0)
    try:
        env = HuleEduEnvelopes()
        svc = PipelineService(store, clock=ManualClock())
        await svc.handle_message(*env.register("warm", items=1))
        for n in range(60):
            tasks = [
                asyncio.ensure_future(svc.handle_message(*env.register(f"b{n}-{k}", items=1)))
                for k in range(3)
            ]
            await asyncio.sleep(rnd.choice([0, 0.0002, 0.0005, 0.001, 0.002]))
            victim = rnd.choice(tasks)
            victim.cancel()
            for _ in range(rnd.choice([0, 1, 2, 3])):
                await asyncio.sleep(0)
            victim.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        # The writing connection is free again: a write goes through well within the timeout.
        try:
            result = await asyncio.wait_for(svc.handle_message(*env.register("after", items=1)), 5)
        except StoreUnavailableError as exc:  # pragma: no cover - what a wedged writer gives
            pytest.fail(f"the store stayed locked: {exc}")
        assert not result.duplicate
    finally:
        await store.close()
