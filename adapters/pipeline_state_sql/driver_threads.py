"""The threads of aiosqlite connections that failed to open, let finish while the loop runs.

aiosqlite runs each connection on a thread of its own. When a connection cannot open (a
SQLite file in a directory that does not exist), the thread is told to stop and answers
through the event loop; a process that gives up at once (``serve`` or the CLI exiting with
one error line) can close its loop before that answer, and the thread then dies printing a
traceback. :func:`settle` waits (boundedly) for the threads a failed open started.
"""

from __future__ import annotations

import asyncio
import threading

__all__ = ["SETTLE_SECONDS", "WORKER_NAME", "settle", "workers"]

WORKER_NAME = "_connection_worker_thread"
"""The target of aiosqlite's connection threads, which Python puts in their names."""


def workers() -> set[threading.Thread]:
    """The aiosqlite connection threads alive now."""
    return {t for t in threading.enumerate() if t.name.endswith(f"({WORKER_NAME})")}


SETTLE_SECONDS = 2.0
"""How long :func:`settle` waits for the threads in all."""


async def settle(before: set[threading.Thread]) -> None:
    """Let the connection threads started since ``before`` (a :func:`workers` snapshot)
    finish, for at most :data:`SETTLE_SECONDS` in all, while the event loop runs."""
    started = workers() - before
    if not started:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SETTLE_SECONDS
    for thread in started:
        remaining = deadline - loop.time()
        if remaining <= 0:
            return
        await asyncio.to_thread(thread.join, remaining)
