"""Where every task of a running process waits (``serve`` logs it on SIGUSR1).

``asyncio.Task.print_stack`` shows a task's own frame only; a task stuck inside a library
(as ``serve`` was inside aiokafka's ``getmany`` during a rebalance) shows the line of the
call, not the wait. The chain goes down to the frame suspended on a future.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from pipeline_state_service.tasks import await_chain, log_tasks


async def _inner(event: asyncio.Event) -> None:
    await event.wait()


async def _middle(event: asyncio.Event) -> None:
    await _inner(event)


async def _outer(event: asyncio.Event) -> None:
    await asyncio.wait_for(_middle(event), timeout=60)


async def test_the_await_chain_goes_down_to_the_frame_that_waits(caplog: pytest.LogCaptureFixture) -> None:
    event = asyncio.Event()
    direct = asyncio.create_task(_middle(event), name="direct")
    wrapped = asyncio.create_task(_outer(event), name="wrapped")
    await asyncio.sleep(0.01)
    try:
        chain = await_chain(direct)
        assert [frame.split(" ")[0] for frame in chain] == ["_middle", "_inner", "Event.wait"]
        assert "test_kafka_serve_tasks.py:" in chain[0]
        assert next(frame.split(" ")[0] for frame in await_chain(wrapped)) == "_outer"
        with caplog.at_level(logging.WARNING, logger="tasks"):
            logged = log_tasks(logging.getLogger("tasks"))
        assert logged == len(asyncio.all_tasks())
        (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("task direct ")]
        assert line == f"task direct waits in {' -> '.join(chain)}"
        assert " -> _inner (kafka/test_kafka_serve_tasks.py:" in line
    finally:
        event.set()
        await asyncio.gather(direct, wrapped)
    assert await_chain(direct) == []
