"""Group commit and a unit of work that takes long (a row lock held elsewhere, a slow disk):
calls for other batches made while a slot is free."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from pipeline_state import InMemoryStore, ManualClock, PipelineService
from pipeline_state._coalesce import Coalescer
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


async def test_a_cancelled_group_frees_only_its_own_slot() -> None:
    """Was a defect (fixed, found in review): a group whose task was cancelled (the loop
    closing, or anything cancelling it) set the count of units in flight to zero while
    another unit was still in flight; when that one ended the count went below zero, and
    from then on more than two units of work ran at once."""
    in_flight: list[str] = []
    most = 0
    gates = {name: asyncio.Event() for name in ("a", "b", "c", "x", "y", "z")}

    async def work(item: str) -> str:
        nonlocal most
        in_flight.append(item)
        most = max(most, len(in_flight))
        try:
            await gates[item[0]].wait()
        finally:
            in_flight.remove(item)
        return item

    async def alone(item: str) -> str:
        return await work(item)

    async def together(items: Sequence[str]) -> list[str | BaseException]:
        return [await work(item) for item in items]

    coalescer: Coalescer[str, str] = Coalescer(alone, together, limit=8)
    a = asyncio.ensure_future(coalescer.submit("a"))
    b = asyncio.ensure_future(coalescer.submit("b"))
    await asyncio.sleep(0)
    queued = [asyncio.ensure_future(coalescer.submit(item)) for item in ("c1", "c2")]
    await asyncio.sleep(0)
    gates["b"].set()
    assert await b == "b"
    for _ in range(5):
        await asyncio.sleep(0)  # the queued pair went as a group in b's slot
    group = next(iter(coalescer._lane(asyncio.get_running_loop()).tasks))
    group.cancel()
    for call in queued:
        with contextlib.suppress(asyncio.CancelledError):
            await call
    gates["a"].set()
    assert await a == "a"
    most = 0
    later = [asyncio.ensure_future(coalescer.submit(item)) for item in ("x", "y", "z")]
    for _ in range(5):
        await asyncio.sleep(0)
    for name in ("x", "y", "z"):
        gates[name].set()
    assert sorted(await asyncio.gather(*later)) == ["x", "y", "z"]
    assert most <= 2, f"{most} units of work ran at once with two slots"
