"""Starting aiokafka clients while the broker may still be coming up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from ._kafka import KafkaError

__all__ = ["start_with_retry"]

log = logging.getLogger("pipeline_state_kafka.startup")


async def start_with_retry(
    start: Callable[[], Awaitable[None]],
    what: str,
    within: float,
    stop: asyncio.Event | None = None,
    *,
    interval: float = 0.5,
) -> bool:
    """Call ``start`` until it succeeds; ``False`` when ``stop`` was set first.

    Raises the last connection error once ``within`` seconds have passed.
    """
    deadline = time.monotonic() + within
    while True:
        if stop is not None and stop.is_set():
            return False
        try:
            await start()
        except (KafkaError, OSError) as exc:
            if time.monotonic() >= deadline:
                raise
            log.warning("%s not reachable yet, retrying: %s: %s", what, type(exc).__name__, exc)
            if stop is None:
                await asyncio.sleep(interval)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=interval)
            continue
        return True
