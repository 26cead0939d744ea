"""Runs :class:`~pipeline_state._relay.OutboxRelay` passes with low latency and a bounded flush.

The relay itself is transport-agnostic; this loop decides *when* it runs: immediately again
while passes publish, otherwise after ``idle_seconds`` or as soon as :meth:`RelayRunner.wake`
is called (the consumer calls it after a unit of work wrote outbox rows), then after
``linger_seconds`` more so that one claim takes the rows of several units of work. While the store
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
from collections.abc import Awaitable, Callable

from pipeline_state_kafka.stats import ServiceStats

from pipeline_state._relay import OutboxRelay, RelayReport
from pipeline_state._retry import pause
from pipeline_state.errors import StoreError

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
    ) -> None:
        self.relay = relay
        self.probe = probe
        self.idle_seconds = idle_seconds
        self.linger_seconds = linger_seconds
        self.error_backoff_seconds = error_backoff_seconds
        self.flush_timeout_seconds = flush_timeout_seconds
        self.stats = stats or ServiceStats()
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Run a pass now (new outbox rows were committed)."""
        self._wake.set()

    async def pass_once(self) -> RelayReport:
        """One relay pass, counted; store errors are logged and reported as an empty pass."""
        try:
            report = await self.relay.run_once()
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

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until ``stop`` is set, then flush (bounded)."""
        while not stop.is_set():
            self._wake.clear()
            report = await self.pass_once()
            if report.published >= self.relay.batch_size and not report.failed:
                continue  # a full pass: more rows are probably due
            if report.failed and not report.published:
                await self._until_reachable(stop)
                continue
            wait = self.error_backoff_seconds if report.failed else self.idle_seconds
            await self._sleep(stop, wait, wakeable=not report.failed)
            if self._wake.is_set() and self.linger_seconds > 0 and not stop.is_set():
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
                while True:
                    report = await self.pass_once()
                    total = RelayReport(
                        *(a + b for a, b in zip(_fields(total), _fields(report), strict=True))
                    )
                    if not report.published or report.failed:
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
