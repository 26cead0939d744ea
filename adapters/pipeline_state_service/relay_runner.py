"""Runs :class:`~pipeline_state._relay.OutboxRelay` passes with low latency and a bounded flush.

The relay itself is transport-agnostic; this loop decides *when* it runs: immediately again
while passes publish, otherwise after ``idle_seconds`` or as soon as :meth:`RelayRunner.wake`
is called (the consumer calls it after a unit of work wrote outbox rows), then after
``linger_seconds`` more so that one claim takes the rows of several units of work.

With ``hand_off`` (the store hands this process's committed rows to the relay in memory,
:meth:`RelayRunner.hand_off`), a wake publishes the handed rows at once, with no linger and
no claim; the claim runs only when it is due: every ``idle_seconds`` (rows of other
processes, expired leases, back-offs), when a commit left rows to it, and again after a full
batch. Published rows are marked with one statement at most ``mark_seconds`` after the first
of them went out (or once a batch of them waits, or when nothing else is to be done), so
one ``UPDATE`` marks the rows of several passes; that mark runs behind the loop (one at a
time), so rows handed to the relay meanwhile are published without waiting for it. While the store
or broker is down, rows stay pending with their retry count and backoff, and the loop keeps
trying; on stop it flushes what is due once more, bounded by ``flush_timeout_seconds``.

After a pass in which nothing could be published, the runner asks ``probe`` (by default:
can a TCP connection to a bootstrap server be opened?) before claiming rows again, so a
broker outage does not burn the rows' attempts and park them; attempts count failures
that happen while the broker is reachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable, Sequence

from pipeline_state_kafka.stats import ServiceStats

from pipeline_state._relay import OutboxRelay, RelayReport
from pipeline_state._retry import pause
from pipeline_state.errors import StoreError
from pipeline_state.ports import OutboxRow

__all__ = ["RelayRunner", "tcp_probe"]

log = logging.getLogger("pipeline_state_kafka.relay")


class RelayRunner:
    """Drives ``relay`` until stopped; counts into ``stats``."""

    def __init__(
        self,
        relay: OutboxRelay,
        *,
        idle_seconds: float = 0.5,
        linger_seconds: float = 0.005,
        error_backoff_seconds: float = 1.0,
        flush_timeout_seconds: float = 15.0,
        stats: ServiceStats | None = None,
        probe: Callable[[], Awaitable[bool]] | None = None,
        hand_off: bool = False,
        mark_seconds: float = 0.02,
    ) -> None:
        self.relay = relay
        self.probe = probe
        self.idle_seconds = idle_seconds
        self.linger_seconds = linger_seconds
        self.error_backoff_seconds = error_backoff_seconds
        self.flush_timeout_seconds = flush_timeout_seconds
        self.stats = stats or ServiceStats()
        self.hand_offs = hand_off
        self.mark_seconds = mark_seconds
        self._wake = asyncio.Event()
        self._last_claim = -math.inf
        self._first_unmarked: float | None = None
        self._marking: asyncio.Task[bool] | None = None

    def wake(self) -> None:
        """Run a pass now (new outbox rows were committed)."""
        self._wake.set()

    def hand_off(self, rows: Sequence[OutboxRow], poll: bool) -> None:
        """Rows a commit of this process wrote under the relay's lease: published by the next
        pass, which runs now (``poll``: the commit also left rows to the claim)."""
        self.relay.hand_off(rows, poll)
        self._wake.set()

    async def pass_once(self, *, claim: bool = True, mark: bool = True) -> RelayReport:
        """One relay pass, counted; store errors are logged and reported as an empty pass."""
        loop = asyncio.get_running_loop()
        try:
            if claim:
                self._last_claim = loop.time()
            report = await self.relay.run_once(claim=claim, mark=mark)
            if mark:
                self._first_unmarked = None
            elif self.relay.unmarked and self._first_unmarked is None:
                self._first_unmarked = loop.time()
        except StoreError as exc:
            log.warning("outbox unavailable, retrying: %s: %s", type(exc).__name__, exc)
            return RelayReport(failed=1)
        self.stats.published += report.published
        self.stats.publish_failures += report.failed
        self.stats.parked += report.parked
        if report.failed:
            log.warning("relay pass: %s published, %s failed, %s parked", *_fields(report))
        elif report.published:
            log.debug("relay pass: %s published", report.published)
        return report

    async def flush_marks(self) -> None:
        """Mark the rows published so far (store errors logged; they are tried again), after
        the mark running behind the loop, if any (two marks never run at once)."""
        await self._marks_settled()
        await self._mark()

    def _mark_behind(self) -> None:
        """Start marking the rows published so far without waiting for it; nothing to do
        while a mark is in flight (its end wakes the loop, which marks what came meanwhile)."""
        if self._marking is None or self._marking.done():
            self._marking = asyncio.get_running_loop().create_task(self._mark())
            self._marking.add_done_callback(self._marked)

    def _marked(self, task: asyncio.Task[bool]) -> None:
        if task.cancelled():
            return
        if (error := task.exception()) is not None:
            log.error("marking published rows failed: %s", type(error).__name__, exc_info=error)
            return
        if task.result() and self.relay.unmarked:
            self._wake.set()  # rows published while it ran are marked by the next pass
        # A failed mark does not wake the loop: it is tried again after the loop's wait.

    async def _marks_settled(self) -> None:
        task, self._marking = self._marking, None
        if task is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(task)

    async def _mark(self) -> bool:
        """Mark the rows published so far; ``False`` when the store failed (logged)."""
        try:
            await self.relay.flush_marks()
        except StoreError as exc:
            log.warning("outbox unavailable, retrying: %s: %s", type(exc).__name__, exc)
            return False
        # Rows published while this mark ran wait for the next one, mark_seconds from now.
        self._first_unmarked = asyncio.get_running_loop().time() if self.relay.unmarked else None
        return True

    def _claim_due(self) -> bool:
        if not self.hand_offs:
            return True  # every pass claims (a wake means rows were committed)
        if self.relay.claim_due:
            return True
        return asyncio.get_running_loop().time() - self._last_claim >= self.idle_seconds

    def _mark_wait(self) -> float | None:
        """Seconds until the published rows must be marked (``None``: none to mark)."""
        if not self.relay.unmarked:
            return None
        if self.relay.unmarked >= self.relay.batch_size or self._first_unmarked is None:
            return 0.0
        return max(0.0, self._first_unmarked + self.mark_seconds - asyncio.get_running_loop().time())

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until ``stop`` is set, then flush (bounded)."""
        while not stop.is_set():
            self._wake.clear()
            report = await self.pass_once(claim=self._claim_due(), mark=not self.hand_offs)
            if report.failed and not report.published:
                await self.flush_marks()
                await self._until_reachable(stop)
                continue
            if not report.failed and self.relay.handed:
                continue  # handed rows queued: published now
            if not report.failed and self.relay.claim_due:
                if 0 < report.published < self.relay.batch_size and self.linger_seconds > 0:
                    # Claims published rows, whose keys may hold more: claim again after the
                    # linger, so a backlog on one key drains at about one row per linger
                    # while steady traffic is not polled for without pause.
                    await self._sleep(stop, self.linger_seconds, wakeable=False)
                continue  # a full claim, or rows left to the claim: more rows are due now
            wait = self.error_backoff_seconds if report.failed else self.idle_seconds
            if self.hand_offs:
                mark = self._mark_wait()
                if mark is not None and mark <= 0:
                    self._mark_behind()
                elif mark is not None:
                    wait = min(wait, mark)
                next_claim = self._last_claim + self.idle_seconds - asyncio.get_running_loop().time()
                wait = min(wait, max(0.0, next_claim))
            await self._sleep(stop, wait, wakeable=not report.failed)
            if self._wake.is_set() and not self.hand_offs and self.linger_seconds > 0 and not stop.is_set():
                # Let the units of work in flight commit too: one claim for several of them.
                await self._sleep(stop, self.linger_seconds, wakeable=False)
        await self.flush()

    async def _until_reachable(self, stop: asyncio.Event) -> None:
        """Wait ``error_backoff_seconds``, then while ``probe`` says the transport is down."""
        await self._sleep(stop, self.error_backoff_seconds, wakeable=False)
        while self.probe is not None and not stop.is_set() and not await self.probe():
            log.info("broker unreachable; outbox rows stay pending")
            await self._sleep(stop, self.error_backoff_seconds, wakeable=False)

    async def flush(self) -> RelayReport:
        """Publish whatever is due now, giving up after ``flush_timeout_seconds``."""
        total = RelayReport()
        try:
            async with asyncio.timeout(self.flush_timeout_seconds):
                await self.flush_marks()
                while True:
                    report = await self.pass_once()
                    total = RelayReport(
                        *(a + b for a, b in zip(_fields(total), _fields(report), strict=True))
                    )
                    if (not report.published and not self.relay.handed) or report.failed:
                        break
        except TimeoutError:
            log.warning(
                "relay flush timed out after %ss; pending rows stay in the outbox", self.flush_timeout_seconds
            )
        return total

    async def _sleep(self, stop: asyncio.Event, seconds: float, *, wakeable: bool) -> None:
        if not wakeable:  # the back-off after a failed pass (pipeline_state._retry)
            await pause(seconds, stop)
            return
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            for waiter in waiters:
                with contextlib.suppress(asyncio.CancelledError):
                    await waiter


def _fields(report: RelayReport) -> tuple[int, int, int]:
    return report.published, report.failed, report.parked


def tcp_probe(bootstrap_servers: str, *, timeout: float = 1.0) -> Callable[[], Awaitable[bool]]:
    """A probe that is true when a TCP connection to one of ``bootstrap_servers`` opens."""
    addresses = []
    for entry in bootstrap_servers.split(","):
        host, _, port = entry.strip().rpartition(":")
        addresses.append((host.strip("[]") or "127.0.0.1", int(port or 9092)))

    async def probe() -> bool:
        for host, port in addresses:
            try:
                async with asyncio.timeout(timeout):
                    _, writer = await asyncio.open_connection(host, port)
            except (OSError, TimeoutError):
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return True
        return False

    return probe
