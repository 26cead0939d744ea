"""The one retry helper (:mod:`pipeline_state._retry`): attempts, deadline, stop, back-off."""

from __future__ import annotations

import asyncio

import pytest

from pipeline_state._retry import Backoff, Retrying, pause
from pipeline_state.errors import ConcurrencyConflictError


async def _run(retrying: Retrying, outcomes: list[BaseException | None]) -> tuple[list[int], str]:
    """Drive ``retrying`` over ``outcomes`` (an exception to raise or ``None`` to succeed)."""
    tried: list[int] = []
    async for attempt in retrying:
        with attempt:
            tried.append(attempt.number)
            outcome = outcomes[attempt.number - 1]
            if outcome is not None:
                raise outcome
            return tried, "done"
    return tried, "stopped"


async def test_a_retried_failure_is_tried_again_and_success_ends_the_loop() -> None:
    seen: list[int] = []
    retrying = Retrying(on=ConcurrencyConflictError, attempts=3, on_retry=lambda _e, n: seen.append(n))
    conflict = ConcurrencyConflictError("b", 1, 2)
    assert await _run(retrying, [conflict, conflict, None]) == ([1, 2, 3], "done")
    assert seen == [1, 2]


async def test_the_last_failure_propagates() -> None:
    conflict = ConcurrencyConflictError("b", 1, 2)
    with pytest.raises(ConcurrencyConflictError):
        await _run(Retrying(on=ConcurrencyConflictError, attempts=2), [conflict, conflict, None])


async def test_another_kind_of_error_is_never_retried() -> None:
    retrying = Retrying(on=OSError, attempts=5)
    with pytest.raises(KeyError):
        await _run(retrying, [KeyError("boom"), None])
    assert retrying.attempts == 5
    with pytest.raises(StopAsyncIteration):  # the loop is over: no second attempt
        await retrying.__anext__()


async def test_a_deadline_ends_the_retries() -> None:
    with pytest.raises(OSError, match="down"):
        await _run(Retrying(on=OSError, within=0.0), [OSError("down"), None])


async def test_a_set_stop_ends_the_loop_without_an_attempt() -> None:
    stop = asyncio.Event()
    stop.set()
    assert await _run(Retrying(on=OSError, stop=stop), [None]) == ([], "stopped")


async def test_stop_set_during_the_back_off_ends_the_loop() -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, stop.set)
    retrying = Retrying(on=OSError, backoff=Backoff.fixed(30.0), stop=stop)
    tried, how = await asyncio.wait_for(_run(retrying, [OSError("down"), None]), timeout=5)
    assert (tried, how) == ([1], "stopped")


def test_backoff_doubles_up_to_its_cap() -> None:
    backoff = Backoff(0.1, 0.5)
    assert [backoff.delay(n) for n in range(1, 6)] == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])
    assert Backoff().delay(3) == 0.0
    assert Backoff.fixed(2.0).delay(7) == 2.0


async def test_pause_ends_when_stop_is_set() -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, stop.set)
    await asyncio.wait_for(pause(30.0, stop), timeout=5)


def test_attempts_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Retrying(on=OSError, attempts=0)
