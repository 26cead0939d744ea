"""Group commit for concurrent callers: work that arrives while units of work are being
committed waits for one of them to end, then goes to the store together with the other
work that waited, in one unit of work.

A caller that finds a free slot (at most ``slots`` units of work in flight) and nobody
queued runs its own work at once, so a lone caller pays nothing for the grouping. Other
callers queue; when a unit of work ends, the queued items go to groups in the free slots,
spread evenly and at most ``limit`` to a group, each group a task of its own; with a
``key`` (the service's: the batch), the items of one key go to one group, in arrival order,
since groups in flight at the same moment may decide in either order. Each caller
receives its own outcome: a result, or the exception raised for its item alone. A caller
cancelled while it waits in the queue drops only its wait: its item may still be committed
(as when a call is cancelled after its commit).

Two slots (the default) let one group be decided while the other is in the database, so
the process's CPU and the database's work overlap: eight callers settle into two groups of
four taking turns, rather than one group of eight that leaves the CPU idle while it commits
(measured with ``bench/anchors.py``). Units of work in flight at the same moment that touch
one batch are serialised by the store's compare-and-set (the loser retries from a fresh
read), as concurrent calls always were.

A slot freed while callers wait is filled on the event loop's next turn, not at once: the
callers whose unit of work just ended are woken first and, if they come straight back (a
consumer working through its messages), join the next group instead of one of them starting
a unit of work alone. A slot freed while nobody waits is free at once, so a caller that
works through its messages one after the other, without giving the loop a turn in between
(an in-memory store), goes alone every time.
A single queued item waits while another unit of work is in flight, and goes with the next
group, rather than being committed alone - but not for longer than :data:`LONE_WAIT_SECONDS`:
a unit of work that stays in flight (a row lock held elsewhere, a slow disk) must not hold
back the calls of other batches while a slot is free. Past that wait, the free slot takes
what is queued.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import weakref
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

__all__ = ["LONE_WAIT_SECONDS", "Coalescer"]

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger("pipeline_state.service")

LONE_WAIT_SECONDS = 0.01
"""How long queued items wait for the unit of work in flight while a slot is free (a few
commits on PostgreSQL): then the free slot takes them."""


class _Lane(Generic[T, R]):
    """What a coalescer holds for one event loop."""

    __slots__ = ("busy", "queue", "tasks", "timer")

    def __init__(self) -> None:
        self.busy = 0
        """Units of work in flight (alone or as a group)."""
        self.queue: list[tuple[T, asyncio.Future[R]]] = []
        self.tasks: set[asyncio.Task[None]] = set()
        """The groups in flight (the loop keeps only weak references to tasks)."""
        self.timer: asyncio.TimerHandle | None = None
        """The end of the queued items' wait while a slot is free, if one is set."""


class Coalescer(Generic[T, R]):
    """Runs ``alone(item)`` for a caller that finds a free slot and ``together(items)`` for
    the items queued while none was free. ``together`` returns one outcome per item, in
    order: its result, or the exception its caller receives.

    Each event loop has its own slots and queue (a service used from several loops, one per
    thread, groups the calls of each loop apart); they go with the loop."""

    __slots__ = ("_alone", "_key", "_lanes", "_limit", "_other", "_slots", "_together")

    def __init__(
        self,
        alone: Callable[[T], Awaitable[R]],
        together: Callable[[Sequence[T]], Awaitable[Sequence[R | BaseException]]],
        *,
        limit: int,
        slots: int = 2,
        key: Callable[[T], Hashable] | None = None,
    ) -> None:
        if limit < 2:
            raise ValueError("a group holds at least two items")
        if slots < 1:
            raise ValueError("at least one unit of work must be allowed in flight")
        self._alone = alone
        self._together = together
        self._limit = limit
        self._slots = slots
        self._key = key
        self._lanes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Lane[T, R]] = (
            weakref.WeakKeyDictionary()
        )
        self._other: tuple[asyncio.AbstractEventLoop, _Lane[T, R]] | None = None

    async def submit(self, item: T) -> R:
        """``item``'s outcome, committed alone or with the items of other callers."""
        loop = asyncio.get_running_loop()
        lane = self._lane(loop)
        if lane.busy < self._slots and not lane.queue:
            lane.busy += 1
            try:
                return await self._alone(item)
            finally:
                if lane.queue:
                    loop.call_soon(self._refill, lane)
                else:  # nobody waits: the slot is free now, for this caller's next call too
                    lane.busy -= 1
        future: asyncio.Future[R] = loop.create_future()
        lane.queue.append((item, future))
        if lane.busy < self._slots:
            self._wait_at_most(lane, loop)
        return await future

    def _lane(self, loop: asyncio.AbstractEventLoop) -> _Lane[T, R]:
        try:
            lane = self._lanes.get(loop)
            if lane is None:
                lane = self._lanes[loop] = _Lane()
            return lane
        except TypeError:  # a loop that takes no weak reference: the last such loop's lane
            if self._other is None or self._other[0] is not loop:
                self._other = (loop, _Lane())
            return self._other[1]

    def _refill(self, lane: _Lane[T, R]) -> None:
        """A unit of work ended: its slot is free. The queued items go to groups in the free
        slots, spread evenly (two groups of four rather than one of eight when both slots are
        free, so that one is decided while the other is in the database). One item alone
        waits while another unit of work is in flight: that one takes it along when it ends,
        or the free slot does after :data:`LONE_WAIT_SECONDS`."""
        lane.busy -= 1
        waiting = len(lane.queue)
        if not waiting:
            return
        loop = asyncio.get_running_loop()
        if waiting == 1 and lane.busy:
            self._wait_at_most(lane, loop)
            return
        self._fill(lane, loop)

    def _wait_at_most(self, lane: _Lane[T, R], loop: asyncio.AbstractEventLoop) -> None:
        """Queued items wait for the unit of work in flight while a slot is free: at most
        :data:`LONE_WAIT_SECONDS`, then the free slots take them."""
        if lane.timer is None:
            lane.timer = loop.call_later(LONE_WAIT_SECONDS, self._waited, lane, loop)

    def _waited(self, lane: _Lane[T, R], loop: asyncio.AbstractEventLoop) -> None:
        lane.timer = None
        if lane.queue and lane.busy < self._slots:
            self._fill(lane, loop)

    def _fill(self, lane: _Lane[T, R], loop: asyncio.AbstractEventLoop) -> None:
        """The queued items to groups in the free slots, spread evenly. When every caller
        in the queue stopped waiting (their loop is ending: ``asyncio.run`` cancelled them),
        nothing is started: a group started now would outlive the loop."""
        if all(future.done() for _, future in lane.queue):
            lane.queue = []
            return
        waiting = len(lane.queue)
        groups = min(self._slots - lane.busy, waiting)
        size = min(-(-waiting // groups), self._limit)
        for group in self._split(lane, groups, size):
            lane.busy += 1
            # A context of its own: the group is no caller's child (each item's work runs in
            # the span its caller made for it), and no caller's context variables leak into it.
            task = loop.create_task(self._run(lane, group), context=contextvars.Context())
            lane.tasks.add(task)
            task.add_done_callback(lane.tasks.discard)

    def _split(self, lane: _Lane[T, R], groups: int, size: int) -> list[list[tuple[T, asyncio.Future[R]]]]:
        """At most ``groups`` groups of about ``size`` items from the head of the queue, in
        queue order; what does not fit stays queued. With a ``key``, the items of one key go
        to one group (groups run at once: two of them holding one batch's messages would
        decide them in either order), and once one of a key's items stays queued, so do its
        later ones."""
        key = self._key
        if key is None or groups == 1:
            taken = lane.queue[: groups * size]
            lane.queue = lane.queue[groups * size :]
            return [taken[i : i + size] for i in range(0, len(taken), size)]
        out: list[list[tuple[T, asyncio.Future[R]]]] = [[] for _ in range(groups)]
        owner: dict[Hashable, int | None] = {}  # None: that key's items stay queued
        left: list[tuple[T, asyncio.Future[R]]] = []
        for entry in lane.queue:
            k = key(entry[0])
            index = owner.get(k, -1)
            if index == -1:
                index = next((i for i, group in enumerate(out) if len(group) < size), None)
            elif index is not None and len(out[index]) >= self._limit:
                index = None
            owner[k] = index
            if index is None:
                left.append(entry)
            else:
                out[index].append(entry)
        lane.queue = left
        return [group for group in out if group]

    async def _run(self, lane: _Lane[T, R], group: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            outcomes: Sequence[R | BaseException] = await self._together([item for item, _ in group])
        except Exception as exc:  # ``together`` reports errors per item: this is a defect of it
            log.exception("a group of %d items failed as a whole", len(group))
            outcomes = [exc] * len(group)
        except BaseException as exc:  # cancelled (the loop is closing): nobody is left to serve
            for _, future in (*group, *lane.queue):
                if not future.done():
                    future.set_exception(exc)
            # Its own slot is free; other units in flight free theirs when they end.
            lane.queue = []
            lane.busy -= 1
            if lane.timer is not None:
                lane.timer.cancel()
                lane.timer = None
            raise
        for (_, future), outcome in zip(group, outcomes, strict=True):
            if future.done():  # its caller stopped waiting
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
        asyncio.get_running_loop().call_soon(self._refill, lane)
