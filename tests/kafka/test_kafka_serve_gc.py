"""``serve`` leaves what its start-up made out of later garbage collections.

Measured before: in a running ``serve`` every full collection visited the ~100,000 objects
of the start-up (modules, classes, the wiring) and held the event loop for up to ~100 ms, a
delay of every message in flight: the completion latency's p99 on the memory store was
76-104 ms, and the collections took ~0.5 s of CPU per bench run (``bench/README.md``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import time
import uuid

from pipeline_state_kafka.testing import LocalBroker, free_port
from pipeline_state_service import ServeSettings
from pipeline_state_service.serve import serve


async def test_serve_freezes_its_start_up_before_it_consumes(broker: LocalBroker) -> None:
    args = argparse.Namespace(
        kafka=broker.bootstrap,
        store="memory://",
        http=None,
        group_id=f"gc-{uuid.uuid4().hex[:8]}",
        consumers=[],
    )
    settings = ServeSettings.from_args(args)
    gc.unfreeze()  # nothing frozen by anything before
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop=stop, out=io.StringIO()))
    frozen = 0
    try:
        deadline = time.monotonic() + 20
        while not frozen and time.monotonic() < deadline and not task.done():
            await asyncio.sleep(0.05)
            frozen = gc.get_freeze_count()
    finally:
        stop.set()
        code = await asyncio.wait_for(task, 60)
        gc.unfreeze()  # the rest of the test session collects as before
    assert code == 0
    assert frozen > 10_000  # the start-up's objects, not a handful


async def test_serve_freezes_again_what_it_built_until_it_was_ready(broker: LocalBroker) -> None:
    """Measured before: with ``--http`` (the metrics' route) the HTTP server, its app and the
    modules they import were built after the start-up's freeze, so every full collection
    visited them for the life of the process: the memory store's completion p99 with metrics
    on was 56-68 ms against 34-35 off; frozen once more when ready, 37-38 against 30-32."""
    args = argparse.Namespace(
        kafka=broker.bootstrap,
        store="memory://",
        http=f"127.0.0.1:{free_port()}",
        group_id=f"gc-{uuid.uuid4().hex[:8]}",
        consumers=[],
        insecure_no_auth=True,
    )
    settings = ServeSettings.from_args(args)
    gc.unfreeze()
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop=stop, out=io.StringIO()))
    first = again = 0
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not task.done():
            await asyncio.sleep(0.02)
            frozen = gc.get_freeze_count()  # frozen objects that die leave it: it can go down
            if not first:
                first = frozen
            elif frozen > first + 1_000:  # a second freeze: the HTTP server, the Kafka clients
                again = frozen
                break
    finally:
        stop.set()
        code = await asyncio.wait_for(task, 60)
        gc.unfreeze()
    assert code == 0
    assert first > 10_000  # the start-up's freeze
    assert again, f"frozen once only ({first} objects), not again once ready"
