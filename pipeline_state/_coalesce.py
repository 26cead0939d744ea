"""Group commit for concurrent callers: work that arrives while units of work are being
committed waits for one of them to end, then goes to the store together with the other
work that waited, in one unit of work.

A caller that finds a free slot (at most ``slots`` units of work in flight) and nobody
queued runs its own work at once, so a lone caller pays nothing for the grouping. Other
callers queue; when a unit of work ends, the queued items go to groups in the free slots,
spread evenly and at most ``limit`` to a group, each group a task of its own. Each caller
receives its own outcome: a result, or the exception raised for its item alone. A caller
cancelled while it waits in the queue drops only its wait: its item may still be committed
(as when a call is cancelled after its commit).

Two slots (the default) let one group be decided while the other is in the database, so
the process's CPU and the database's work overlap: eight callers settle into two groups of
four taking turns, rather than one group of eight that leaves the CPU idle while it commits
(measured with ``bench/anchors.py``). Units of work in flight at the same moment that touch
one batch are serialised by the store's compare-and-set (the loser retries from a fresh
read), as concurrent calls always were.

A freed slot is filled on the event loop's next turn, not at once: the callers whose unit of
work just ended are woken first and, if they come straight back (a consumer working through
its messages), join the next group instead of one of them starting a unit of work alone.
A single queued item waits while another unit of work is in flight, and goes with the next
group, rather than being committed alone.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["Coalescer"]

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger("pipeline_state.service")


class Coalescer(Generic[T, R]):
    """Runs ``alone(item)`` for a caller that finds a free slot and ``together(items)`` for
    the items queued while none was free. ``together`` returns one outcome per item, in
    order: its result, or the exception its caller receives."""

    __slots__ = ("_alone", "_busy", "_limit", "_loop", "_queue", "_slots", "_tasks", "_together")

    def __init__(
        self,
        alone: Callable[[T], Awaitable[R]],
        together: Callable[[Sequence[T]], Awaitable[Sequence[R | BaseException]]],
        *,
        limit: int,
        slots: int = 2,
    ) -> None:
        if limit < 2:
            raise ValueError("a group holds at least two items")
        if slots < 1:
            raise ValueError("at least one unit of work must be allowed in flight")
        self._alone = alone
        self._together = together
        self._limit = limit
        self._slots = slots
        self._busy = 0
        """Units of work in flight (alone or as a group)."""
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        """The groups in flight (the loop keeps only weak references to tasks)."""

    async def submit(self, item: T) -> R:
        """``item``'s outcome, committed alone or with the items of other callers."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # first use, or the previous loop is gone with its queue
            self._loop, self._busy, self._queue, self._tasks = loop, 0, [], set()
        if self._busy < self._slots and not self._queue:
            self._busy += 1
            try:
                return await self._alone(item)
            finally:
                loop.call_soon(self._refill)
        future: asyncio.Future[R] = loop.create_future()
        self._queue.append((item, future))
        return await future

    def _refill(self) -> None:
        """A unit of work ended: its slot is free. The queued items go to groups in the free
        slots, spread evenly (two groups of four rather than one of eight when both slots are
        free, so that one is decided while the other is in the database). One item alone
        waits while another unit of work is in flight: that one takes it along when it ends."""
        self._busy -= 1
        waiting = len(self._queue)
        if not waiting or (waiting == 1 and self._busy):
            return
        groups = min(self._slots - self._busy, waiting)
        size = min(-(-waiting // groups), self._limit)
        loop = asyncio.get_running_loop()
        for _ in range(groups):
            if not self._queue:
                break
            group, self._queue = self._queue[:size], self._queue[size:]
            self._busy += 1
            # A context of its own: the group is no caller's child (each item's work runs in
            # the span its caller made for it), and no caller's context variables leak into it.
            task = loop.create_task(self._run(group), context=contextvars.Context())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, group: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            outcomes: Sequence[R | BaseException] = await self._together([item for item, _ in group])
        except Exception as exc:  # ``together`` reports errors per item: this is a defect of it
            log.exception("a group of %d items failed as a whole", len(group))
            outcomes = [exc] * len(group)
        except BaseException as exc:  # cancelled (the loop is closing): nobody is left to serve
            for _, future in (*group, *self._queue):
                if not future.done():
                    future.set_exception(exc)
            self._queue, self._busy = [], 0
            raise
        for (_, future), outcome in zip(group, outcomes, strict=True):
            if future.done():  # its caller stopped waiting
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
        asyncio.get_running_loop().call_soon(self._refill)
