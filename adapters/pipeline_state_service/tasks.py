"""What every asyncio task of a running process is waiting on (``serve`` logs it on SIGUSR1).

A stuck service answers no request and logs nothing; what an operator needs then is where
each task waits. :meth:`asyncio.Task.print_stack` shows only a task's own coroutine frame,
not the chain of awaits below it (a wait inside a library is invisible), so
:func:`await_chain` follows the chain, coroutine by coroutine, down to the frame suspended
on a future, and :func:`log_tasks` writes one log line per task.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Generator
from pathlib import PurePath
from typing import Any

__all__ = ["await_chain", "log_tasks"]

MAX_DEPTH = 64
"""Frames followed per task at most (an await chain is rarely deeper than a dozen)."""


def _where(frame: Any) -> str:
    code = frame.f_code
    path = PurePath(code.co_filename)
    return f"{code.co_qualname} ({'/'.join(path.parts[-2:])}:{frame.f_lineno})"


def await_chain(task: asyncio.Task[Any]) -> list[str]:
    """The frames of ``task``'s await chain, outermost first, down to the one suspended on a
    future (``Event.wait``, a socket read, ``asyncio.wait``...); empty once the task is done."""
    chain: list[str] = []
    awaited: Any = task.get_coro()
    while isinstance(awaited, Coroutine | Generator) and len(chain) < MAX_DEPTH:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        if frame is None:  # a finished coroutine, or a future's own iterator
            break
        chain.append(_where(frame))
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return chain


def log_tasks(logger: logging.Logger) -> int:
    """Log, at WARNING, one line per pending task of the running loop with its await chain;
    returns how many tasks were logged."""
    tasks = sorted(asyncio.all_tasks(), key=lambda t: t.get_name())
    for task in tasks:
        chain = await_chain(task)
        logger.warning(
            "task %s waits in %s", task.get_name(), " -> ".join(chain), extra={"task": task.get_name()}
        )
    return len(tasks)
