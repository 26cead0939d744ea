"""Group commit and a unit of work that takes long (a row lock held elsewhere, a slow disk):
calls for other batches made while a slot is free."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from pipeline_state import InMemoryStore, ManualClock, PipelineService
from pipeline_state.ports import Change
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes


class GatedStore(InMemoryStore):
    """A commit of a batch in ``gates`` waits for its gate (another writer holds the row)."""

    def __init__(self) -> None:
        super().__init__()
        self.gates: dict[str, asyncio.Event] = {}
        self.entered: dict[str, asyncio.Event] = {}

    async def _wait(self, changes: Sequence[Change]) -> None:
        for change in changes:
            if change.batch_id in self.entered:
                self.entered[change.batch_id].set()
            if change.batch_id in self.gates:
                await self.gates[change.batch_id].wait()
        await asyncio.sleep(0)

    async def commit(self, change: Change) -> None:
        await self._wait([change])
        await super().commit(change)

    async def commit_many(self, changes: Sequence[Change]) -> None:
        await self._wait(changes)
        await super().commit_many(changes)


async def test_one_slow_unit_does_not_stall_later_calls_while_a_slot_is_free() -> None:
    """Was a defect (fixed): with one unit of work stuck in flight and a slot free, a call
    that queued stayed queued, and every later call queued behind it, until the stuck unit
    ended (however long); queued items now wait for it at most ``LONE_WAIT_SECONDS``."""
    env = HuleEduEnvelopes()
    store = GatedStore()
    svc = PipelineService(store, clock=ManualClock())
    for name in ("slow", "b"):
        store.gates[name] = asyncio.Event()
        store.entered[name] = asyncio.Event()
    # 1. A unit of work of batch "slow" is in flight and stays there (its row is locked).
    slow = asyncio.ensure_future(svc.handle_message(*env.register("slow", items=1)))
    await asyncio.wait_for(store.entered["slow"].wait(), 2)
    # 2. A second call takes the other slot; a third call arrives meanwhile and queues.
    b = asyncio.ensure_future(svc.handle_message(*env.register("b", items=1)))
    await asyncio.wait_for(store.entered["b"].wait(), 2)
    c = asyncio.ensure_future(svc.handle_message(*env.register("c", items=1)))
    await asyncio.sleep(0)
    # 3. The second call ends: one unit of work ("slow") is in flight, one slot is free.
    store.gates["b"].set()
    await asyncio.wait_for(b, 2)
    # Calls for other batches made now, with fewer than two units of work in flight, are to be
    # "handled at once" (PipelineService's doc). Observed: the queued call and every later one
    # wait for the unrelated "slow" unit to end, however long that takes.
    later = [asyncio.ensure_future(svc.handle_message(*env.register(f"d{n}", items=1))) for n in range(3)]
    _done, pending = await asyncio.wait([c, *later], timeout=1.0)
    stalled = len(pending)
    store.gates["slow"].set()  # let everything finish before asserting
    await asyncio.wait_for(asyncio.gather(slow, c, *later), 5)
    assert stalled == 0, f"{stalled} of 4 calls for other batches waited for batch 'slow' with a slot free"
