"""The HTTP adapter inside ``serve --http HOST:PORT``: its ASGI app under uvicorn.

Access control: :func:`http_serve_settings` reads the HTTP adapter's settings from the
environment (``PIPELINE_STATE_HTTP_API_TOKEN``, ``..._INTERNAL_TOKEN`` and ``..._OPS_TOKEN``,
or a ``..._FILE`` variant of each naming a file that holds the token, plus the HTTP limits)
and refuses, with :class:`~pipeline_state_service.settings.SettingsError`, to serve without a
token for every scope unless ``--insecure-no-auth`` was given, which is itself refused on an
address that is not a loopback address. ``serve`` calls it before anything starts and puts
the result in effect (:func:`http_settings_in_effect`) for :func:`build_http_app`. An app
built without settings in effect reads the environment and keeps every scope without a
token closed.

The server is the HTTP adapter's (:func:`pipeline_state_http.server.serving`): it leaves
signals to the service, which stops it, and times each request's head and body.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from pipeline_state._service import PipelineService
from pipeline_state.profiles.huleedu.results import ResultsStore

from .settings import ServeSettings, SettingsError

if TYPE_CHECKING:  # the http extra is optional: imported where used
    from fastapi import FastAPI
    from pipeline_state_http import HttpSettings
    from pipeline_state_http.metrics_routes import MetricsSource

__all__ = ["build_http_app", "http_serve_settings", "http_settings_in_effect", "is_loopback", "serve_http"]

log = logging.getLogger("pipeline_state_kafka.http")

_IN_EFFECT: contextvars.ContextVar[HttpSettings | None] = contextvars.ContextVar(
    "pipeline_state_http_settings", default=None
)


def _http_installed() -> bool:
    """Whether the HTTP adapter (the http extra) can be imported; a warning when not."""
    try:
        import pipeline_state_http  # noqa: F401
    except ImportError as exc:
        log.warning("--http given but the HTTP adapter cannot be imported: %s", exc)
        return False
    return True


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address, or ``localhost``) only accepts local connections: the
    HTTP adapter's rule (:func:`pipeline_state_http.settings.is_loopback`), which its own
    ``open`` applies too; imported here, as the http extra is optional."""
    from pipeline_state_http.settings import is_loopback as adapter_is_loopback

    return adapter_is_loopback(host)


def http_serve_settings(
    settings: ServeSettings, environ: Mapping[str, str] | None = None
) -> HttpSettings | None:
    """The HTTP adapter's ``HttpSettings`` for ``serve --http`` (``None`` without ``--http`` or
    without the adapter). Raises :class:`SettingsError` when a token (or its file) is
    unusable, when a scope has no token and ``--insecure-no-auth`` was not given, when two
    scopes are given the same token, and when ``--insecure-no-auth`` is given for an
    address that is not a loopback address."""
    if settings.http is None:
        return None
    if not _http_installed():
        return None
    from pipeline_state_http.settings import TOKEN_VARIABLES, HttpSettings

    host = settings.http[0]
    insecure = settings.http_insecure_no_auth
    if insecure and not is_loopback(host):
        raise SettingsError(
            f"--insecure-no-auth is refused on {host}: it serves the API without tokens, so only on a "
            "loopback address (127.0.0.1, ::1, localhost); set the tokens to serve on other addresses"
        )
    try:
        http = HttpSettings.from_environ(environ, insecure_no_auth=insecure)
    except ValueError as exc:
        raise SettingsError(str(exc)) from exc
    missing = [variable for scope, variable in TOKEN_VARIABLES.items() if http.token(scope) is None]
    if missing and not insecure:
        names = ", ".join(f"{variable} (or {variable}_FILE)" for variable in missing)
        raise SettingsError(
            f"serve --http needs a bearer token for every scope; set {names}, "
            "or give --insecure-no-auth for local development on a loopback address"
        )
    for scopes in http.shared_tokens():
        names = " and ".join(TOKEN_VARIABLES[scope] for scope in scopes)
        raise SettingsError(f"{names} hold the same token: each scope needs its own (value not shown)")
    return http


@contextlib.contextmanager
def http_settings_in_effect(http: HttpSettings | None) -> Iterator[None]:
    """Make ``http`` (an ``HttpSettings``) what :func:`build_http_app` uses in this context."""
    token = _IN_EFFECT.set(http)
    try:
        yield
    finally:
        _IN_EFFECT.reset(token)


def build_http_app(
    service: PipelineService,
    *,
    results: ResultsStore | None = None,
    settings: HttpSettings | None = None,
    metrics: MetricsSource | None = None,
) -> FastAPI | None:
    """The HTTP adapter's app for ``service`` (with the ``results`` read model's routes when a
    results store is given, and ``/metrics`` when ``metrics`` are), or ``None`` when the
    adapter is not installed. ``settings`` defaults to those in effect, else to the
    environment's."""
    if not _http_installed():
        return None
    from pipeline_state_http import HttpSettings, create_app

    if settings is None:
        settings = _IN_EFFECT.get()
    if settings is None:
        settings = HttpSettings.from_environ()
    return create_app(service, settings=settings, results=results, metrics=metrics)


async def serve_http(app: FastAPI, host: str, port: int, stop: asyncio.Event) -> None:
    """Serve ``app`` on ``host:port`` until ``stop`` is set, then shut down gracefully (the
    HTTP adapter's :func:`~pipeline_state_http.server.serving`); raises :class:`OSError` when
    the server cannot start."""
    from pipeline_state_http.server import serving

    async with serving(app, host, port) as server:
        stopper = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({server.task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
