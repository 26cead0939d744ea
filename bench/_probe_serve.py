"""``serve`` with timing probes, for ``bench/kafka.py --probe`` (issue 16: where the latency goes).

Run as ``python bench/_probe_serve.py serve ...`` with ``PIPELINE_STATE_BENCH_PROBE=FILE``. It
wraps, in this process only, the service's handling of inbound records, the store's commits,
the outbox claim and mark-published calls and the Kafka publisher, then runs ``serve``. For
each completion event (``Topic.PIPELINE_COMPLETED``) it records, on the system-wide monotonic
clock (comparable with the bench process's ``time.monotonic()``), when the handling of the
records that emitted it began, when their commit began and ended, and when the publish call
that carried it began and returned; it also adds up the time spent in claims and
mark-published calls. At exit it writes one JSON object to ``FILE``. Nothing here is used by
the library; it works on the code before and after the relay hand-off alike.
"""

from __future__ import annotations

import atexit
import contextvars
import functools
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from pipeline_state_kafka.publisher import KafkaPublisher  # noqa: E402

from pipeline_state._service import PipelineService  # noqa: E402
from pipeline_state.profiles.huleedu.events import Topic  # noqa: E402

_handling: contextvars.ContextVar[float | None] = contextvars.ContextVar("handling", default=None)
completions: dict[str, dict[str, float]] = {}
totals: dict[str, list[float]] = {}  # name -> [calls, seconds]
spans: list[tuple[str, float, float]] = []
"""Finer probes, each call as (name, began, seconds): the bench keeps those of the latency part."""


def _correlation(value: Any) -> str | None:
    if not isinstance(value, dict):
        return None
    data = value.get("data")
    found = (data.get("correlation_id") if isinstance(data, dict) else None) or value.get("correlation_id")
    return None if found is None else str(found)


def _completions(messages: Sequence[Any]) -> list[str]:
    return [
        c
        for m in messages
        if m.topic == Topic.PIPELINE_COMPLETED and (c := _correlation(m.value)) is not None
    ]


def _handler(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        token = _handling.set(time.monotonic())
        try:
            return await fn(*args, **kwargs)
        finally:
            _handling.reset(token)

    return wrapped


def _commit(fn: Callable[..., Any], many: bool) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def wrapped(self: Any, arg: Any) -> Any:
        began = time.monotonic()
        result = await fn(self, arg)
        ended = time.monotonic()
        _add("commit", ended - began)
        for change in arg if many else (arg,):
            for corr in _completions(change.outbox):
                completions.setdefault(corr, {}).update(
                    handle=_handling.get() or began, commit=began, committed=ended
                )
        return result

    return wrapped


def _timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        began = time.monotonic()
        try:
            return await fn(*args, **kwargs)
        finally:
            _add(name, time.monotonic() - began)

    return wrapped


def _publish(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def wrapped(self: Any, messages: Sequence[Any]) -> Any:
        began = time.monotonic()
        result = await fn(self, messages)
        ended = time.monotonic()
        _add("publish", ended - began)
        for corr in _completions(messages):
            completions.setdefault(corr, {}).setdefault("publish", began)
            completions[corr].setdefault("acked", ended)
        return result

    return wrapped


def _spanned(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` (a coroutine function) with each call kept in :data:`spans`."""

    @functools.wraps(fn)
    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        began = time.monotonic()
        try:
            return await fn(*args, **kwargs)
        finally:
            spans.append((name, began, time.monotonic() - began))

    return wrapped


def _lanes() -> None:
    """Each lane operation split into the wait for a lane (slot and connection) and the
    ``run_sync`` call (the statements, in a greenlet, and any wait for the event loop)."""
    from pipeline_state_sql import lanes

    def run_sync(conn_cls: Any) -> None:
        original = conn_cls.run_sync

        @functools.wraps(original)
        async def wrapped(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
            began = time.monotonic()
            spans.append(("lane_wait", _lane_entered.get() or began, began - (_lane_entered.get() or began)))
            try:
                return await original(self, fn, *args, **kwargs)
            finally:
                inner = args[0] if args else None
                kind = getattr(inner, "__name__", "?")
                spans.append((f"run_sync:{kind}", began, time.monotonic() - began))

        conn_cls.run_sync = wrapped

    from sqlalchemy.ext.asyncio import AsyncConnection

    run_sync(AsyncConnection)
    original_run: Any = lanes.Lanes.run

    @functools.wraps(original_run)
    async def run(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        token = _lane_entered.set(time.monotonic())
        try:
            return await original_run(self, fn, *args, **kwargs)
        finally:
            _lane_entered.reset(token)

    lanes.Lanes.run = run  # type: ignore[method-assign]


_lane_entered: contextvars.ContextVar[float | None] = contextvars.ContextVar("lane", default=None)


async def _loop_lag() -> None:
    """How late the event loop wakes a 1 ms sleep (kept as ``loop_lag`` spans)."""
    import asyncio

    while True:
        began = time.monotonic()
        await asyncio.sleep(0.001)
        spans.append(("loop_lag", began, time.monotonic() - began - 0.001))


def _round_trips() -> None:
    """Each PostgreSQL round trip of the store (``BEGIN``, a statement, ``COMMIT``) from the
    call to its result: the server's time, the wire and the wait for the event loop."""
    try:
        from asyncpg.transaction import Transaction  # type: ignore[import-untyped]
        from sqlalchemy.dialects.postgresql import asyncpg as adapter
    except ImportError:
        return
    adapter.AsyncAdapt_asyncpg_connection._start_transaction = _spanned(  # type: ignore[method-assign]
        "rt_begin", adapter.AsyncAdapt_asyncpg_connection._start_transaction
    )
    adapter.AsyncAdapt_asyncpg_cursor._prepare_and_execute = _spanned(  # type: ignore[method-assign]
        "rt_statement", adapter.AsyncAdapt_asyncpg_cursor._prepare_and_execute
    )
    Transaction.commit = _spanned("rt_commit", Transaction.commit)


def _consumer() -> None:
    from pipeline_state_kafka import consumer

    cls = consumer.InboundConsumer
    cls._commit = _spanned("offset_commit", cls._commit)  # type: ignore[method-assign]
    cls._process = _spanned("process_fetch", cls._process)  # type: ignore[method-assign]
    original_run = cls.run

    @functools.wraps(original_run)
    async def run(self: Any, stop: Any) -> Any:
        import asyncio

        lag = asyncio.get_running_loop().create_task(_loop_lag()) if self.name == "inbound" else None
        try:
            return await original_run(self, stop)
        finally:
            if lag is not None:
                lag.cancel()

    cls.run = run  # type: ignore[method-assign]


def _add(name: str, seconds: float) -> None:
    entry = totals.setdefault(name, [0, 0.0])
    entry[0] += 1
    entry[1] += seconds


def _counted(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapped(self: Any, rows: Sequence[Any], poll: bool = False) -> Any:
        _add(name, 0.0)
        if poll:
            _add(f"{name}_poll", 0.0)
        _add(f"{name}_rows", 0.0)
        totals[f"{name}_rows"][0] += len(rows) - 1
        return fn(self, rows, poll)

    return wrapped


def install() -> None:
    from pipeline_state._relay import OutboxRelay

    if hasattr(OutboxRelay, "hand_off"):
        OutboxRelay.hand_off = _counted("hand_off", OutboxRelay.hand_off)  # type: ignore[method-assign]
    PipelineService.handle_many = _handler(PipelineService.handle_many)  # type: ignore[method-assign]
    PipelineService.handle_message = _handler(PipelineService.handle_message)  # type: ignore[method-assign]
    KafkaPublisher.publish = _publish(KafkaPublisher.publish)  # type: ignore[method-assign]
    from pipeline_state._memory import InMemoryStore

    stores: list[type[Any]] = [InMemoryStore]
    try:
        from pipeline_state_sql import SqlStore
        from pipeline_state_sql.lane_store import LaneStore

        stores.append(SqlStore)
        outboxes: list[type[Any]] = [InMemoryStore, LaneStore]
    except ImportError:
        outboxes = [InMemoryStore]
    if os.environ.get("PIPELINE_STATE_BENCH_PROBE_FINE"):  # they cost time of their own
        _lanes()
        _round_trips()
        _consumer()
    if len(stores) > 1 and os.environ.get("PIPELINE_STATE_BENCH_PROBE_FINE"):
        stores[1].load_for_event = _spanned("load_for_event", stores[1].load_for_event)
        stores[1].load_for_events = _spanned("load_for_events", stores[1].load_for_events)
    for cls in stores:
        cls.commit = _commit(cls.commit, many=False)
        cls.commit_many = _commit(cls.commit_many, many=True)
    for cls in outboxes:
        cls.claim = _timed("claim", cls.claim)
        cls.mark_published = _timed("mark_published", cls.mark_published)
        if hasattr(cls, "release"):
            cls.release = _timed("release", cls.release)
        if hasattr(cls, "mark_failed"):
            cls.mark_failed = _timed("mark_failed", cls.mark_failed)


def _write() -> None:
    target = os.environ.get("PIPELINE_STATE_BENCH_PROBE")
    if target:
        Path(target).write_text(json.dumps({"completions": completions, "totals": totals, "spans": spans}))


if __name__ == "__main__":
    install()
    atexit.register(_write)
    from pipeline_state._cli import main

    code = main()
    _write()
    sys.exit(code)
