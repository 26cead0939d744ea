"""Group commit on SQLite while another connection holds the write lock: each caller gets its
own outcome, nothing is half-applied, and the service groups again once the lock is gone."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

from pipeline_state_sql import open_store

from pipeline_state import HandleResult, ManualClock, PipelineService, StoreUnavailableError
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes


async def test_locked_database_fails_each_caller_alone_and_recovers(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    store = await open_store(f"sqlite+aiosqlite:///{path}", busy_timeout=0.05)
    try:
        env = HuleEduEnvelopes()
        svc = PipelineService(store, clock=ManualClock())
        await svc.handle_message(*env.register("warm", items=1))
        other = sqlite3.connect(path, isolation_level=None, timeout=5)
        other.execute("BEGIN IMMEDIATE")
        messages = [env.register(f"b{n}", items=1) for n in range(10)]

        refused = asyncio.Event()

        async def release_later() -> None:
            # Held until a caller has met the lock (not for a fixed time: on a loaded machine
            # the callers' reads and decisions took longer than that, and none met it).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(refused.wait(), 10)
            await asyncio.sleep(0.05)  # others meet it too
            other.execute("COMMIT")

        async def call(m: object) -> object:
            try:
                return await svc.handle_message(*m)  # type: ignore[misc]
            except StoreUnavailableError as exc:
                refused.set()
                return exc

        releaser = asyncio.ensure_future(release_later())
        first = await asyncio.wait_for(asyncio.gather(*(call(m) for m in messages)), 10)
        await releaser
        other.close()
        assert any(isinstance(r, StoreUnavailableError) for r in first), first
        more = await asyncio.wait_for(asyncio.gather(*(call(m) for m in messages)), 10)
        # A failed call wrote nothing (it applies now), a call that got its result did.
        for before, now in zip(first, more, strict=True):
            assert isinstance(now, HandleResult), now
            assert now.duplicate == isinstance(before, HandleResult), (before, now)
        again = await asyncio.gather(*(call(m) for m in messages))
        assert all(isinstance(r, HandleResult) and r.duplicate for r in again)
    finally:
        await store.close()
