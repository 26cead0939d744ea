"""The one retry helper: every loop that tries something again goes through it.

:class:`Retrying` is an async iterator of :class:`Attempt` s; the body of one attempt runs
inside ``with attempt:``. An exception of the retried kinds is swallowed while attempts and
time remain (the next attempt follows after the :class:`Backoff` delay); any other exception,
or the last failure, propagates. The loop ends without an attempt when ``stop`` is set::

    async for attempt in Retrying(on=ConcurrencyConflictError, attempts=5):
        with attempt:
            return await unit_of_work()

Users: the one unit-of-work loop (:func:`~pipeline_state._unit_of_work.conflict_retries`)
of :class:`~pipeline_state._service.PipelineService` and the default profile's results
service (retry from a fresh read at once),
the Kafka adapter's client start-up (a fixed interval until a deadline), its consumer's
back-off after a failed fetch or record (:meth:`Backoff.delay` and :func:`pause`) and the
relay runner's wait for the broker. The relay's per-row ``retry_at`` is stored state, not a
loop, and keeps its own schedule (:mod:`pipeline_state._relay`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from types import TracebackType

import attrs

__all__ = ["Attempt", "Backoff", "Retrying", "pause"]


@attrs.frozen
class Backoff:
    """The delay before the retry that follows ``failures`` failures in a row: ``base``
    times ``factor`` to the power ``failures - 1``, at most ``cap``. ``base`` 0 (the
    default) retries at once, after yielding to the event loop."""

    base: float = 0.0
    cap: float = 0.0
    factor: float = 2.0

    @classmethod
    def fixed(cls, seconds: float) -> Backoff:
        """The same delay before every retry."""
        return cls(seconds, seconds, 1.0)

    def delay(self, failures: int) -> float:
        if self.base <= 0 or failures < 1:
            return 0.0
        return float(min(self.cap, self.base * self.factor ** min(failures - 1, 32)))


async def pause(seconds: float, stop: asyncio.Event | None = None) -> None:
    """Sleep ``seconds`` (0: just yield to the event loop), ending early when ``stop`` is set."""
    if stop is None or seconds <= 0:
        await asyncio.sleep(max(seconds, 0.0))
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


OnRetry = Callable[[BaseException, int], None]
"""Told of each failure that will be retried, with the number of the attempt that failed."""


class Attempt:
    """One try; ``with attempt:`` around its body decides whether a failure is retried."""

    __slots__ = ("_retrying", "number")

    def __init__(self, retrying: Retrying, number: int) -> None:
        self._retrying = retrying
        self.number = number
        """1 for the first try, 2 for the first retry, ..."""

    def __enter__(self) -> Attempt:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _tb: TracebackType | None
    ) -> bool:
        if error is None:
            self._retrying._done = True
            return False
        return self._retrying._swallow(error, self.number)


class Retrying:
    """Attempts of one call: at most ``attempts`` of them (``None``: no limit) and none that
    starts after ``within`` seconds (``None``: no limit), while ``stop`` is not set; a
    failure of the kinds ``on`` is retried after ``backoff.delay(number)``."""

    __slots__ = ("_deadline", "_done", "_failures", "attempts", "backoff", "on", "on_retry", "stop")

    def __init__(
        self,
        *,
        on: type[BaseException] | tuple[type[BaseException], ...],
        attempts: int | None = None,
        within: float | None = None,
        backoff: Backoff = Backoff(),
        stop: asyncio.Event | None = None,
        on_retry: OnRetry | None = None,
    ) -> None:
        if attempts is not None and attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.on = on
        self.attempts = attempts
        self.backoff = backoff
        self.stop = stop
        self.on_retry = on_retry
        self._deadline = None if within is None else time.monotonic() + within
        self._failures = 0
        self._done = False

    def __aiter__(self) -> Retrying:
        return self

    async def __anext__(self) -> Attempt:
        if self._done:
            raise StopAsyncIteration
        if self._failures:
            await pause(self.backoff.delay(self._failures), self.stop)
        if self.stop is not None and self.stop.is_set():
            raise StopAsyncIteration
        self._done = True  # until the attempt fails and is retried
        return Attempt(self, self._failures + 1)

    def _swallow(self, error: BaseException, number: int) -> bool:
        """Whether the failure of attempt ``number`` is retried (else it propagates)."""
        if not isinstance(error, self.on):
            return False
        if self.attempts is not None and number >= self.attempts:
            return False
        if self._deadline is not None and time.monotonic() >= self._deadline:
            return False
        self._failures = number
        self._done = False
        if self.on_retry is not None:
            self.on_retry(error, number)
        return True
