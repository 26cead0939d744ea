"""A housekeeping task of ``serve``: one action every period until the stop event, failures
logged and tried again next period (a purge or sweep that fails must not stop the service)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from pipeline_state.errors import PipelineStateError

__all__ = ["every"]


async def every(
    period: float,
    stop: asyncio.Event,
    action: Callable[[], Awaitable[None]],
    *,
    what: str,
    log: logging.Logger,
) -> None:
    """Await ``action`` every ``period`` seconds (the first one period after the start) until
    ``stop`` is set. A :class:`~pipeline_state.errors.PipelineStateError` (a store down) is
    logged as a warning, anything else with its traceback; both are tried again next period."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=period)
        if stop.is_set():
            return
        try:
            await action()
        except PipelineStateError as exc:
            log.warning("%s failed (tried again next period): %s: %s", what, type(exc).__name__, exc)
        except Exception:
            log.exception("%s failed unexpectedly; trying again next period", what)
