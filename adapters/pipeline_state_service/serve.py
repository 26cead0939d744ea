"""``pipeline-state serve``: the orchestrator as a process.

``serve_main(args)`` is what the CLI calls with the parsed ``serve`` flags. It reads the
settings (flags plus ``PIPELINE_STATE_*`` variables, see
:mod:`pipeline_state_service.settings`), sets up structured logging on stderr, opens the
store, runs :class:`~pipeline_state_service.runner.ServiceRunner` and shows a summary (a live
table on a terminal, ``summary ...`` lines on stdout otherwise); it installs the OpenTelemetry
SDK when the ``OTEL_*`` variables ask for traces (:mod:`pipeline_state_service.otel`). The first
SIGINT or SIGTERM shuts down cleanly (exit status 0); a second one aborts at once (status 130).
SIGUSR1 logs where every asyncio task waits (:mod:`pipeline_state_service.tasks`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TextIO

from pipeline_state_kafka import KafkaError

from pipeline_state.errors import PipelineStateError

from .errors import UnknownConsumerError
from .extensions import resolve_consumer
from .logs import configure_logging
from .ops.exits import one_line
from .otel import tracing_from
from .runner import ServiceRunner
from .settings import ServeSettings, SettingsError, unknown_variables
from .stores import OpenedStore, open_store, shown_url
from .summary import Summary
from .tasks import log_tasks
from .web import http_serve_settings, http_settings_in_effect

__all__ = ["serve", "serve_main"]

log = logging.getLogger("pipeline_state_kafka.serve")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_ABORTED = 130


def serve_main(args: argparse.Namespace) -> int:
    """Run the service from parsed CLI flags; returns the process exit status."""
    try:
        settings = ServeSettings.from_args(args)
        for name in settings.consumers:  # a name nobody provides is a bad flag, found now
            resolve_consumer(name)
    except (SettingsError, UnknownConsumerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(settings.log_level, settings.log_format)
    unknown = unknown_variables(os.environ)
    if unknown:  # most likely misspelt: each would otherwise be ignored without a word
        log.warning(
            "no setting reads %s: misspelt? (docs/operations.md and the READMEs list the variables)",
            ", ".join(unknown),
        )
    try:
        # the SDK and an exporter when the OTEL_* variables ask for traces (see .otel)
        with tracing_from():
            return asyncio.run(serve(settings))
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_ABORTED


async def serve(
    settings: ServeSettings, *, stop: asyncio.Event | None = None, out: TextIO | None = None
) -> int:
    """Run until ``stop`` is set or a signal arrives; returns the exit status."""
    stop = stop or asyncio.Event()
    main = asyncio.current_task()
    signals = _install_signals(stop, main)
    try:
        try:
            http = http_serve_settings(settings)
        except SettingsError as exc:
            log.error("cannot serve HTTP: %s", exc)
            return EXIT_USAGE
        if http is not None and settings.http_insecure_no_auth:
            host = settings.http[0] if settings.http else "?"
            log.warning("--insecure-no-auth: HTTP routes without a token are open to anyone on %s", host)
        try:
            opened = await _until_stopped(open_store(settings.store_url, **settings.store_options()), stop)
        except PipelineStateError as exc:
            log.error("cannot open the store %s: %s", shown_url(settings.store_url), exc)
            return EXIT_FAILED
        except (TypeError, ValueError) as exc:
            # The first connection: the driver refuses an option of the URL's query or
            # cannot read it (``?timeout=abc``), as the operator commands say it.
            log.error(
                "the store URL %s has an option the driver refuses: %s",
                shown_url(settings.store_url),
                one_line(exc),
            )
            return EXIT_USAGE
        if opened is None:  # stopped while the store was opening (a migration lock, a silent database)
            log.info("stopped before the store was open")
            return EXIT_OK
        runner = ServiceRunner(settings, store=opened)
        summary_stop = asyncio.Event()
        summary = asyncio.create_task(
            _summary(settings, Summary(runner.stats, opened.store, opened.outbox), summary_stop, out)
        )
        try:
            log.info(
                "starting",
                extra={
                    "kafka": settings.kafka,
                    "store": opened.shown_url,
                    "group_id": settings.group_id,
                    "relay": settings.relay_enabled,
                    "http": None if settings.http is None else f"{settings.http[0]}:{settings.http[1]}",
                },
            )
            _freeze_start_up()
            ready = asyncio.create_task(_freeze_when_ready(runner))
            try:
                with http_settings_in_effect(http):
                    await runner.run(stop)
            finally:
                ready.cancel()
        except (KafkaError, OSError, PipelineStateError) as exc:
            log.error("service failed: %s: %s", type(exc).__name__, exc)
            return EXIT_FAILED
        finally:
            summary_stop.set()
            with contextlib.suppress(Exception):
                await summary
            with contextlib.suppress(Exception):
                await opened.close()
        return EXIT_OK
    except asyncio.CancelledError:
        return EXIT_ABORTED
    finally:
        _remove_signals(signals)


def _freeze_start_up() -> None:
    """Leave what start-up made (modules, classes, the wiring: about 100,000 objects) out of
    every later garbage collection: a full collection visits every object the collector
    tracks and holds the event loop meanwhile, and in a running ``serve`` those pauses grew
    to about 100 ms, a delay of every message in flight (``bench/README.md``). Garbage is
    collected first, so that none of it is kept for good."""
    gc.collect()
    gc.freeze()


async def _freeze_when_ready(runner: ServiceRunner) -> None:
    """Freeze once more when the service is ready: what the runner built after the first
    freeze (the consumer, the producer, the HTTP server and its app, the modules they
    imported: tens of thousands of objects with ``--http``) would otherwise be visited by
    every full collection for the life of the process."""
    await runner.ready.wait()
    _freeze_start_up()


async def _summary(
    settings: ServeSettings, summary: Summary, stop: asyncio.Event, out: TextIO | None
) -> None:
    mode = settings.summary
    stream = out or sys.stdout
    if mode == "auto":
        mode = "live" if stream.isatty() else "plain"
    if mode == "live":
        await summary.run_live(stop)
    elif mode == "plain":
        await summary.run_plain(stop, settings.summary_seconds, out=stream)


async def _until_stopped(
    opening: Coroutine[Any, Any, OpenedStore], stop: asyncio.Event
) -> OpenedStore | None:
    """What ``opening`` returns, or ``None`` when ``stop`` is set first: opening is then
    cancelled (a store it opened after all is closed again)."""
    task = asyncio.ensure_future(opening)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # serve itself cancelled: do not leave the opening behind
        task.cancel()
        raise
    finally:
        stopped.cancel()
    if task.done():
        return task.result()
    task.cancel()
    try:
        late = await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():  # serve itself is aborted
            raise
        return None
    except Exception:  # failed while being stopped: nothing to close
        return None
    await late.close()
    return None


def _install_signals(stop: asyncio.Event, main: asyncio.Task[object] | None) -> list[signal.Signals]:
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []

    def on_signal(sig: signal.Signals) -> None:
        if not stop.is_set():
            log.info("%s received: shutting down (again to abort)", sig.name)
            stop.set()
        elif main is not None:
            log.warning("%s received again: aborting", sig.name)
            main.cancel()

    def add(sig: signal.Signals, handler: Callable[..., object], *args: object) -> None:
        try:
            loop.add_signal_handler(sig, handler, *args)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no support
            return
        installed.append(sig)

    for sig in (signal.SIGINT, signal.SIGTERM):
        add(sig, on_signal, sig)
    if hasattr(signal, "SIGUSR1"):  # where every task waits, for a process that seems stuck
        add(signal.SIGUSR1, log_tasks, log)
    return installed


def _remove_signals(installed: list[signal.Signals]) -> None:
    loop = asyncio.get_running_loop()
    for sig in installed:
        with contextlib.suppress(Exception):
            loop.remove_signal_handler(sig)
