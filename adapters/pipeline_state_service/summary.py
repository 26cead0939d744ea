"""The running service's summary: a live table in a terminal, periodic lines otherwise.

Both show the same sample: records consumed (total and per second since the last sample),
dead-lettered records, transient retries, messages published by the relay, the outbox
depth (rows not yet published), the active runs (batches in ``processing_pipelines``) and
the waiting facts (early facts kept until their batch gets where they apply).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from typing import Any, TextIO

import attrs
from pipeline_state_kafka.gauges import read_store
from pipeline_state_kafka.stats import ServiceStats

from pipeline_state.ports import Outbox, Store

__all__ = ["Sample", "Summary"]


@attrs.frozen
class Sample:
    """One reading of the service's state."""

    consumed: int
    rate: float
    dead_lettered: int
    retries: int
    published: int
    outbox_depth: int | None
    active_runs: int | None
    uptime: float
    waiting: int | None = None
    active_runs_capped: bool = False
    """``active_runs`` stopped at :data:`~pipeline_state_kafka.gauges.ACTIVE_RUNS_LIMIT` (a
    store that cannot count them): shown as ``1000+``."""

    @property
    def shown_active_runs(self) -> str:
        """``active_runs`` as shown: ``?`` unknown, ``1000+`` when capped."""
        if self.active_runs is None:
            return "?"
        return f"{self.active_runs}+" if self.active_runs_capped else str(self.active_runs)

    def line(self) -> str:
        """The plain ``key=value`` summary line."""
        depth = "?" if self.outbox_depth is None else self.outbox_depth
        active = self.shown_active_runs
        waiting = "?" if self.waiting is None else self.waiting
        return (
            f"summary consumed={self.consumed} consumed_per_s={self.rate:.1f} dlq={self.dead_lettered} "
            f"retries={self.retries} published={self.published} outbox_depth={depth} "
            f"active_runs={active} waiting={waiting} uptime_s={self.uptime:.0f}"
        )


class Summary:
    """Samples ``stats`` and the store, and shows the result."""

    def __init__(self, stats: ServiceStats, store: Store, outbox: Outbox) -> None:
        self.stats = stats
        self.store = store
        self.outbox = outbox
        self._last = (time.monotonic(), stats.consumed)

    async def sample(self) -> Sample:
        now = time.monotonic()
        then, consumed_then = self._last
        consumed = self.stats.consumed
        rate = (consumed - consumed_then) / (now - then) if now > then else 0.0
        self._last = (now, consumed)
        reading = await read_store(self.store, self.outbox)
        return Sample(
            consumed,
            rate,
            self.stats.dead_lettered,
            self.stats.retries,
            self.stats.published,
            reading.outbox_pending,
            reading.active_runs,
            now - self.stats.started_at,
            reading.waiting,
            reading.active_runs_capped,
        )

    async def run_plain(self, stop: asyncio.Event, seconds: float, out: TextIO | None = None) -> None:
        """Print a summary line every ``seconds`` until stopped, and a last one."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=seconds)
            stream = out or sys.stdout
            print((await self.sample()).line(), file=stream, flush=True)

    async def run_live(self, stop: asyncio.Event, seconds: float = 1.0) -> None:
        """A rich live table refreshed every ``seconds`` until stopped."""
        from rich.live import Live

        with Live(self._table(await self.sample()), refresh_per_second=4, transient=False) as live:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=seconds)
                live.update(self._table(await self.sample()))

    @staticmethod
    def _table(sample: Sample) -> Any:
        from rich.table import Table

        table = Table(title="pipeline-state serve", show_header=True, header_style="bold")
        columns = ("consumed", "consumed/s", "DLQ", "retries", "published", "outbox depth", "active runs")
        for name in (*columns, "waiting"):
            table.add_column(name, justify="right")
        depth = "?" if sample.outbox_depth is None else str(sample.outbox_depth)
        active = sample.shown_active_runs
        table.add_row(
            str(sample.consumed),
            f"{sample.rate:.1f}",
            str(sample.dead_lettered),
            str(sample.retries),
            str(sample.published),
            depth,
            active,
            "?" if sample.waiting is None else str(sample.waiting),
        )
        return table
