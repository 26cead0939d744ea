"""The HTTP adapter inside ``serve --http HOST:PORT``: its ASGI app under uvicorn.

uvicorn normally installs its own SIGINT/SIGTERM handlers and re-raises the signal when it
stops; here the service owns signals and stops uvicorn itself, so the server is told not to.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from collections.abc import Iterator
from typing import Any

from pipeline_state.service import PipelineService

__all__ = ["build_http_app", "serve_http"]

log = logging.getLogger("pipeline_state_kafka.http")


def build_http_app(service: PipelineService, *, results: Any = None) -> Any | None:
    """The HTTP adapter's app for ``service`` (with the ``results`` read model's routes when a
    results store is given), or ``None`` when the adapter is not installed."""
    try:
        module: Any = importlib.import_module("pipeline_state_http")
    except ImportError as exc:
        log.warning("--http given but the HTTP adapter cannot be imported: %s", exc)
        return None
    create_app = getattr(module, "create_app", None)
    if create_app is None:
        log.warning("--http given but pipeline_state_http provides no create_app")
        return None
    if results is not None:
        return create_app(service, results=results)
    return create_app(service)


async def serve_http(app: Any, host: str, port: int, stop: asyncio.Event) -> None:
    """Serve ``app`` on ``host:port`` until ``stop`` is set, then shut down gracefully."""
    import uvicorn

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, lifespan="on")
    server = _Server(config)
    task = asyncio.create_task(server.serve(), name="http")
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        server.should_exit = True
        stopper.cancel()
        try:
            await task
        except SystemExit as exc:  # uvicorn exits when it cannot bind or start the app
            raise OSError(f"the HTTP server could not start on {host}:{port}") from exc
    log.info("HTTP server on %s:%s stopped", host, port)
