"""random interleavings of callers, timeouts (asyncio.wait_for) and failing units
of work on the coalescer: no caller stranded, no slot leaked, never more units than slots."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

import pytest

from pipeline_state._coalesce import Coalescer


@pytest.mark.parametrize("seed", range(12))
async def test_random_cancellations_and_failures_strand_no_caller_and_leak_no_slot(seed: int) -> None:
    rnd = random.Random(seed)
    in_flight = 0
    most = 0
    failing = [True]

    async def work(items: Sequence[str]) -> None:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        try:
            delay = rnd.choice([0, 0, 0.0005, 0.002, 0.005, 0.012, 0.03])
            if delay:
                await asyncio.sleep(delay)
            else:
                await asyncio.sleep(0)
        finally:
            in_flight -= 1

    async def alone(item: str) -> str:
        await work([item])
        if item.endswith("!"):
            raise RuntimeError(item)
        return item.upper()

    async def together(items: Sequence[str]) -> list[str | BaseException]:
        if failing[0] and rnd.random() < 0.1:
            await asyncio.sleep(0)
            raise OSError("whole group failed")
        await work(items)
        return [RuntimeError(i) if i.endswith("!") else i.upper() for i in items]

    slots = rnd.choice([1, 2, 3])
    coalescer: Coalescer[str, str] = Coalescer(alone, together, limit=rnd.choice([2, 3, 8]), slots=slots)

    async def caller(name: str) -> str:
        item = name + ("!" if rnd.random() < 0.15 else "")
        timeout = rnd.choice([None, None, 0.001, 0.004, 0.02])
        await asyncio.sleep(rnd.choice([0, 0, 0.0003, 0.001, 0.004, 0.011]))
        try:
            if timeout is None:
                got = await coalescer.submit(item)
            else:
                got = await asyncio.wait_for(coalescer.submit(item), timeout)
            assert got == item.upper(), (got, item)  # its own outcome
            return got
        except (RuntimeError, OSError, TimeoutError) as exc:
            return type(exc).__name__

    callers = [asyncio.ensure_future(caller(f"c{n}")) for n in range(40)]
    victims = rnd.sample(callers, 5)
    await asyncio.sleep(0.003)
    for v in victims:
        v.cancel()
    _done, pending = await asyncio.wait(callers, timeout=5)
    assert not pending, f"{len(pending)} callers stranded"
    assert most <= slots, f"{most} units at once with {slots} slots"
    # Let the groups of abandoned items end, then the lane is idle and a call goes at once.
    for _ in range(100):
        lane = coalescer._lane(asyncio.get_running_loop())
        if not lane.tasks and not lane.queue and lane.busy == 0:
            break
        await asyncio.sleep(0.005)
    lane = coalescer._lane(asyncio.get_running_loop())
    assert (lane.busy, len(lane.queue), len(lane.tasks)) == (0, 0, 0)
    failing[0] = False
    later = await asyncio.wait_for(
        asyncio.gather(*(coalescer.submit(f"z{n}") for n in range(2 * slots + 3))), 5
    )
    assert later == [f"Z{n}" for n in range(2 * slots + 3)]
