"""The outbox relay: moves committed outbox rows to a transport.

Transport-agnostic: it reads an :class:`~pipeline_state.ports.Outbox` and writes to a
:class:`~pipeline_state.ports.Publisher`. Rows keep the ``event_id`` they were written
with, go out in order per key, are marked published once the transport confirms, and are
retried with exponential backoff; after ``max_attempts`` failures a row is parked with its
last error for an operator to inspect.

Each publish attempt is a producer span in the trace stored on its row (the decision that
emitted it, see :mod:`pipeline_state._tracing`), and the transport is handed that span's
trace context, so a retry after a failure or a restart still continues the decision's trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import timedelta

import attrs

from ._tracing import for_publish, publish_span, record_published
from .errors import PipelineStateError, StoreUnavailableError
from .ports import Clock, Outbox, OutboxRow, Publisher

__all__ = ["OutboxRelay", "RelayReport"]

log = logging.getLogger("pipeline_state.relay")


@attrs.frozen
class RelayReport:
    """What one relay pass did."""

    published: int = 0
    failed: int = 0
    parked: int = 0

    @property
    def idle(self) -> bool:
        return not (self.published or self.failed or self.parked)

    def plus(self, other: RelayReport) -> RelayReport:
        """The report of this pass and ``other`` together."""
        return RelayReport(
            self.published + other.published, self.failed + other.failed, self.parked + other.parked
        )


_IDLE = RelayReport()


class OutboxRelay:
    """Publishes outbox rows; run :meth:`run_once` in a loop or :meth:`run` until stopped."""

    def __init__(
        self,
        outbox: Outbox,
        publisher: Publisher,
        clock: Clock,
        *,
        batch_size: int = 100,
        max_attempts: int = 5,
        base_backoff: float = 0.5,
        max_backoff: float = 60.0,
    ) -> None:
        if batch_size < 1 or max_attempts < 1:
            raise ValueError("batch_size and max_attempts must be at least 1")
        self.outbox = outbox
        self.publisher = publisher
        self.clock = clock
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        self.base_backoff = base_backoff
        self.max_backoff = max_backoff

    def backoff(self, attempts: int) -> float:
        """Seconds to wait before the next try after ``attempts`` failures."""
        return float(min(self.max_backoff, self.base_backoff * 2 ** max(0, attempts - 1)))

    async def run_once(self) -> RelayReport:
        """Claim one batch of due rows and publish them."""
        rows = await self.outbox.claim(self.clock.now(), self.batch_size)
        if not rows:
            return _IDLE
        spans = [publish_span(r.message, r.attempts + 1) for r in rows]
        results: Sequence[BaseException | None] = ()
        try:
            try:
                results = await self.publisher.publish(
                    [for_publish(r.message, span) for r, span in zip(rows, spans, strict=True)]
                )
            except (PipelineStateError, OSError) as exc:
                results = [exc] * len(rows)
        finally:
            for index, span in enumerate(spans):
                error = results[index] if index < len(results) else RuntimeError("not published")
                record_published(span, error)
        if len(results) != len(rows):
            raise RuntimeError("the publisher returned a result count that differs from the messages")
        if results.count(None) == len(rows):  # the usual case: everything went out
            await self.outbox.mark_published([r.id for r in rows], self.clock.now())
            return RelayReport(len(rows))
        published: list[int] = []
        failed = parked = 0
        for row, error in zip(rows, results, strict=True):
            if error is None:
                published.append(row.id)
                continue
            park = row.attempts + 1 >= self.max_attempts
            await self._fail(row, error, park=park)
            failed += 1
            parked += int(park)
        if published:
            await self.outbox.mark_published(published, self.clock.now())
        return RelayReport(len(published), failed, parked)

    async def _fail(self, row: OutboxRow, error: BaseException, *, park: bool) -> None:
        now = self.clock.now()
        retry_at = now + timedelta(seconds=self.backoff(row.attempts + 1))
        text = f"{type(error).__name__}: {error}"
        await self.outbox.mark_failed(row.id, text, now, retry_at=retry_at, park=park)
        if park:
            log.error(
                "parked outbox row %s (%s) after %s attempts: %s",
                row.id,
                row.message.topic,
                row.attempts + 1,
                text,
            )
        else:
            log.warning("outbox row %s failed (attempt %s): %s", row.id, row.attempts + 1, text)

    async def drain(self, *, max_passes: int = 1000) -> RelayReport:
        """Publish until nothing is due: stop after a pass that published nothing, or once
        the outbox has no pending row left (no empty pass after the last one)."""
        total: RelayReport | None = None
        for _ in range(max_passes):
            report = await self.run_once()
            total = report if total is None else total.plus(report)
            if report.published == 0 or not await self.outbox.pending_count():
                break
        return _IDLE if total is None else total

    async def run(self, stop: asyncio.Event, *, idle_seconds: float = 0.2) -> None:
        """Relay until ``stop`` is set, then flush what is due once more."""
        while not stop.is_set():
            try:
                report = await self.run_once()
            except StoreUnavailableError as exc:
                log.warning("outbox unavailable, retrying: %s", exc)
                report = RelayReport()
            if report.published == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=idle_seconds)
        await self.drain()
