"""Serving the app with uvicorn, with header and body timeouts.

uvicorn's HTTP/1.1 protocols have a keep-alive timeout but none for a request in progress:
a client that sends its request head (or its body) a byte at a time holds the connection,
and a few hundred such clients hold the server (slowloris). :func:`timeout_protocol` makes an
``h11`` protocol class that times the two phases of every request on a connection:

- **head**: from the connection's start (or the end of the previous answer) to the end of
  the request headers: at most ``header_timeout`` seconds, else the connection is closed
  (with ``408 Request Timeout`` when part of a request had arrived);
- **body**: from the end of the headers to the end of the body: at most ``body_timeout``
  seconds. The app's body limit (:class:`~pipeline_state_http.security.BodyLimitMiddleware`)
  answers 408 at that point for the API's routes; one second later the protocol closes the
  connection whatever the route did (a body no route reads cannot hold it either).

:func:`uvicorn_config` builds the server configuration for an app made by
:func:`~pipeline_state_http.app.create_app`, with the timeouts of its settings;
:func:`serving` runs that server while an ``async with`` block runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Iterator
from typing import Any, ClassVar

import attrs
import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from .app import SETTINGS_STATE
from .settings import HttpSettings

__all__ = [
    "BODY_GRACE_SECONDS",
    "HttpServer",
    "TimeoutH11Protocol",
    "serving",
    "timeout_protocol",
    "uvicorn_config",
]

log = logging.getLogger("pipeline_state_http.server")

BODY_GRACE_SECONDS = 1.0
"""How long after the body timeout the protocol closes a connection the app has not answered."""

_TIMEOUT_ANSWER = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"x-content-type-options: nosniff\r\nconnection: close\r\ncontent-length: 22\r\n\r\n"
    b"request not in on time"
)


class TimeoutH11Protocol(H11Protocol):
    """uvicorn's ``h11`` protocol with a deadline on each request's head and body."""

    header_timeout: ClassVar[float] = 10.0
    body_timeout: ClassVar[float] = 30.0

    _phase: str | None = None
    _timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        self._watch()

    def _watch(self) -> None:
        """Arm the deadline of the phase the client is in, when it changed."""
        if self.transport is None or self.transport.is_closing():
            return
        state = self.conn.their_state
        phase = "head" if state is h11.IDLE else "body" if state is h11.SEND_BODY else None
        if phase == self._phase:
            return
        self._cancel()
        self._phase = phase
        if phase == "head":
            self._timer = self.loop.call_later(self.header_timeout, self._expired, "head")
        elif phase == "body":
            self._timer = self.loop.call_later(self.body_timeout + BODY_GRACE_SECONDS, self._expired, "body")

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self, phase: str) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "?"
        if phase == "head":
            started = bool(self.conn.trailing_data[0])
            log.info("request head from %s not complete after %ss: closed", client, self.header_timeout)
        else:
            started = self.cycle is not None and not self.cycle.response_started
            log.info("request body from %s not complete after %ss: closed", client, self.body_timeout)
            if self.cycle is not None:
                self.cycle.disconnected = True  # whatever the app sends now is dropped
                self.cycle.message_event.set()
        if started:
            self.transport.write(_TIMEOUT_ANSWER)
        self.transport.close()


def _seconds(value: float) -> float:
    """``value`` as a timeout in seconds; :class:`ValueError` unless positive and finite.
    NaN compares false with everything, so "<= 0" let it through (``call_later(nan)`` fires
    at once); an int too large for a float is no timeout either."""
    try:
        seconds = float(value)
    except OverflowError:
        seconds = math.inf
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ValueError(f"timeouts must be positive and finite, got {value!r:.40}")
    return seconds


def timeout_protocol(header_timeout: float, body_timeout: float) -> type[TimeoutH11Protocol]:
    """A :class:`TimeoutH11Protocol` class with these timeouts (seconds), for
    ``uvicorn.Config(http=...)``."""
    attributes = {"header_timeout": _seconds(header_timeout), "body_timeout": _seconds(body_timeout)}
    return type("TimeoutH11Protocol", (TimeoutH11Protocol,), attributes)


def uvicorn_config(
    app: Any, host: str, port: int, *, settings: HttpSettings | None = None, **options: Any
) -> uvicorn.Config:
    """The uvicorn configuration serving ``app`` on ``host:port`` with the header and body
    timeouts of ``settings`` (default: those ``app`` was created with, else the defaults);
    ``options`` go to :class:`uvicorn.Config` as they are."""
    if settings is None:
        settings = getattr(getattr(app, "state", None), SETTINGS_STATE, None) or HttpSettings()
    protocol = timeout_protocol(settings.header_timeout_seconds, settings.body_timeout_seconds)
    return uvicorn.Config(app, host=host, port=port, http=protocol, **options)


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves SIGINT/SIGTERM to its host process."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@attrs.frozen
class HttpServer:
    """A running server (what :func:`serving` and :func:`~pipeline_state_http.open` yield):
    the app, the address it listens on (``port`` is the bound one, also when ``0`` was asked
    for) and the task serving it, which ends early only when the server failed."""

    app: Any
    host: str
    port: int
    task: asyncio.Task[None]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


async def _serve(server: uvicorn.Server, host: str, port: int) -> None:
    try:
        await server.serve()
    except SystemExit as exc:  # uvicorn exits when it cannot bind or start the app
        raise OSError(f"the HTTP server could not start on {host}:{port}") from exc


@contextlib.asynccontextmanager
async def serving(
    app: Any, host: str = "127.0.0.1", port: int = 0, *, settings: HttpSettings | None = None, **options: Any
) -> AsyncIterator[HttpServer]:
    """Serve ``app`` with uvicorn (see :func:`uvicorn_config`) on ``host:port`` while the block
    runs, then shut it down gracefully (requests in progress finish). Raises :class:`OSError`
    when the server cannot start (the address is taken, the app's start-up failed)."""
    options = {"log_config": None, "access_log": False, "lifespan": "on"} | options
    server = _QuietServer(uvicorn_config(app, host, port, settings=settings, **options))
    task: asyncio.Task[None] = asyncio.create_task(_serve(server, host, port), name=f"http {host}:{port}")
    try:
        while not server.started and not task.done():
            await asyncio.wait({task}, timeout=0.01)
        if not server.started:
            await task  # the start-up error propagates
            raise OSError(f"the HTTP server on {host}:{port} stopped before it started")
        bound = server.servers[0].sockets[0].getsockname()[1] if server.servers else port
        yield HttpServer(app, host, int(bound), task)
    finally:
        server.should_exit = True
        if not task.cancelled():  # a failure of the server, at start or later, propagates
            await task
    log.info("HTTP server on %s:%s stopped", host, port)
