"""Shared helpers of the Kafka tests: running the service in-process or as a real process,
and bounded waits."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
from pipeline_state_kafka import ConsumerSettings
from pipeline_state_service import ServeSettings, ServiceRunner
from pipeline_state_service.stores import OpenedStore

from pipeline_state import BatchStatus, InMemoryStore
from pipeline_state.ports import Change

__all__ = [
    "FAST_ENV",
    "ServeProcess",
    "SlowCommits",
    "fast_settings",
    "running",
    "running_runner",
    "wait_status",
    "wait_until",
]

# Short group timeouts and fetch waits: the test broker holds fetches for the whole wait and
# makes a joining member wait about half the session timeout.
FAST_ENV = {
    "PIPELINE_STATE_KAFKA_SESSION_TIMEOUT_MS": "3000",
    "PIPELINE_STATE_KAFKA_HEARTBEAT_MS": "500",
    "PIPELINE_STATE_KAFKA_FETCH_MAX_WAIT_MS": "20",
    "PIPELINE_STATE_KAFKA_POLL_TIMEOUT_MS": "100",
    "PIPELINE_STATE_RELAY_IDLE_SECONDS": "0.2",
    "PIPELINE_STATE_SUMMARY": "plain",
    "PIPELINE_STATE_SUMMARY_SECONDS": "1",
    "PIPELINE_STATE_LOG_FORMAT": "json",
    "PIPELINE_STATE_SWEEP_SECONDS": "1",
}


class SlowCommits(InMemoryStore):
    """The in-memory store, with commits that take ``delay`` seconds and announce themselves
    (a slow database, to have units of work in flight at chosen moments)."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.delay = delay
        self.committing = asyncio.Event()

    async def commit(self, change: Change) -> None:
        self.committing.set()
        await asyncio.sleep(self.delay)
        await super().commit(change)

    async def commit_many(self, changes: Sequence[Change]) -> None:
        # A batched unit of work is as slow as its changes one by one would be.
        self.committing.set()
        await asyncio.sleep(self.delay * len(changes))
        await super().commit_many(changes)


def fast_settings(
    bootstrap: str, prefix: str, *, store_url: str = "memory://", **overrides: Any
) -> ServeSettings:
    """Serve settings for tests (in-process): quick group joins and fetches, no summary."""
    consumer = ConsumerSettings(
        bootstrap,
        session_timeout_ms=3000,
        heartbeat_interval_ms=500,
        fetch_max_wait_ms=20,
        poll_timeout_ms=100,
        retry_base_seconds=0.05,
        retry_max_seconds=0.5,
    )
    base = ServeSettings(
        kafka=bootstrap,
        store_url=store_url,
        group_id=f"{prefix}group",
        topic_prefix=prefix,
        summary="off",
        relay_idle_seconds=0.2,
        sweep_seconds=0,
        consumer=consumer,
        shutdown_seconds=5.0,
    )
    return attrs.evolve(base, **overrides)


@contextlib.asynccontextmanager
async def running(
    settings: ServeSettings, *, store: OpenedStore | None = None, within: float = 30.0
) -> AsyncIterator[ServiceRunner]:
    """Run the service in this event loop until the block ends (then a clean stop)."""
    async with running_runner(ServiceRunner(settings, store=store), within=within) as runner:
        yield runner


@contextlib.asynccontextmanager
async def running_runner(runner: ServiceRunner, *, within: float = 30.0) -> AsyncIterator[ServiceRunner]:
    """Run ``runner`` until the block ends; waits (bounded) until it is ready."""
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    ready = asyncio.create_task(runner.ready.wait())
    await asyncio.wait({task, ready}, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        ready.cancel()
        task.result()
        raise RuntimeError("the service stopped before it was ready")
    if not runner.ready.is_set():
        ready.cancel()
        stop.set()
        await asyncio.wait_for(task, timeout=within)
        raise TimeoutError(f"the service was not ready within {within}s")
    try:
        yield runner
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=within)


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]], *, within: float = 30.0, what: str = "condition"
) -> None:
    """Poll ``predicate`` until true; ``TimeoutError`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        outcome = predicate()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.02)


async def wait_status(
    runner: ServiceRunner, batch_id: str, status: BatchStatus, *, within: float = 30.0
) -> None:
    """Wait until the runner's store holds ``batch_id`` in ``status``."""
    assert runner.opened is not None
    store = runner.opened.store

    async def reached() -> bool:
        state = await store.load(batch_id)
        return state is not None and state.status is status

    await wait_until(reached, within=within, what=f"{batch_id} to be {status.value}")


class ServeProcess:
    """``python -m pipeline_state._cli serve ...`` as a child process with JSON logs on stderr.

    Log lines are parsed as they arrive; :meth:`wait_log` waits for one that matches.
    """

    def __init__(
        self,
        bootstrap: str,
        store_url: str,
        prefix: str,
        *,
        env: Mapping[str, str] | None = None,
        log_file: Path | None = None,
    ) -> None:
        self.command = [
            sys.executable,
            "-m",
            "pipeline_state._cli",
            "serve",
            "--kafka",
            bootstrap,
            "--store",
            store_url,
            "--group-id",
            f"{prefix}group",
        ]
        self.env = {**os.environ, **FAST_ENV, "PIPELINE_STATE_TOPIC_PREFIX": prefix, **(env or {})}
        self.log_file = log_file
        self.logs: list[dict[str, Any]] = []
        self.stdout: list[str] = []
        self._changed = threading.Condition()
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> ServeProcess:
        self.process = subprocess.Popen(
            self.command, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert self.process.stderr is not None
        assert self.process.stdout is not None
        threading.Thread(target=self._read_logs, args=(self.process.stderr,), daemon=True).start()
        threading.Thread(target=self._read_stdout, args=(self.process.stdout,), daemon=True).start()
        return self

    def _read_logs(self, stream: Any) -> None:
        sink = open(self.log_file, "a") if self.log_file else None  # noqa: SIM115
        try:
            for line in stream:
                if sink:
                    sink.write(line)
                    sink.flush()
                try:
                    record = json.loads(line)
                except ValueError:
                    record = {"msg": line.rstrip("\n"), "level": "RAW"}
                with self._changed:
                    self.logs.append(record)
                    self._changed.notify_all()
        finally:
            if sink:
                sink.close()

    def _read_stdout(self, stream: Any) -> None:
        for line in stream:
            with self._changed:
                self.stdout.append(line.rstrip("\n"))
                self._changed.notify_all()

    def find(self, predicate: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        with self._changed:
            return [r for r in self.logs if predicate(r)]

    async def wait_log(
        self, predicate: Callable[[dict[str, Any]], bool], *, within: float = 30.0, what: str = "a log line"
    ) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while True:
            found = self.find(predicate)
            if found:
                return found[0]
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"serve exited ({self.process.returncode}) before {what}: {self.tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {within}s waiting for {what}: {self.tail()}")
            await asyncio.sleep(0.02)

    async def wait_ready(self, within: float = 40.0) -> None:
        await self.wait_log(lambda r: r.get("msg") == "ready", within=within, what="ready")

    async def wait_handled(self, event_ids: set[str], *, within: float = 30.0) -> None:
        def all_handled(_: dict[str, Any]) -> bool:
            seen = {r.get("event_id") for r in self.logs if str(r.get("msg", "")).startswith("handled")}
            return event_ids <= seen

        await self.wait_log(all_handled, within=within, what=f"{len(event_ids)} events handled")

    def tail(self, lines: int = 15) -> str:
        with self._changed:
            return "\n".join(json.dumps(r) for r in self.logs[-lines:])

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs (a crash)."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)

    def signal(self, sig: signal.Signals, *, within: float = 30.0) -> int:
        """Send ``sig`` and wait for the exit status; a member that does not exit in time
        fails with the tail of its log (what it was doing when it stopped answering)."""
        assert self.process is not None
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=within)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"serve (pid {self.process.pid}) did not exit within {within:.0f}s of {sig.name}; "
                f"its last lines:\n{self.tail(40)}"
            ) from None

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
