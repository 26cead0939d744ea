"""Opening the HTTP adapter as an async context: the app, served while the block runs.

::

    from pipeline_state_http import Settings, open

    async with open(service, Settings(http_api_token=..., ...), port=8080) as server:
        ...                     # server.app answers on server.url
    # the server has shut down here (requests in progress finished)

Without settings, they are read from the ``PIPELINE_STATE_HTTP_*`` variables; an
:class:`~pipeline_state_http.settings.HttpSettings` given in code is used as it is.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from pipeline_state._service import PipelineService

from .app import create_app
from .server import HttpServer, serving
from .settings import HttpSettings, Settings

if TYPE_CHECKING:
    from pipeline_state.profiles.huleedu.results import ResultsStore

    from .metrics_routes import MetricsSource

__all__ = ["open"]


@contextlib.asynccontextmanager
async def open(
    service: PipelineService,
    settings: Settings | HttpSettings | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    results: ResultsStore | None = None,
    metrics: MetricsSource | None = None,
    **server_options: Any,
) -> AsyncIterator[HttpServer]:
    """Build the app for ``service`` (:func:`~pipeline_state_http.app.create_app`) and serve it
    on ``host:port`` (``0``: a free port, see :attr:`HttpServer.port`) until the block ends;
    ``server_options`` go to ``uvicorn.Config``. Raises :class:`OSError` when the server
    cannot start, and :class:`~pipeline_state_http.errors.HttpSettingsError` before anything
    binds when the settings open a scope (insecure mode) and ``host`` is not a loopback
    address (:meth:`HttpSettings.check_host`), as ``serve --http`` refuses it."""
    if settings is None:
        settings = Settings.from_environ()
    http = settings.http_settings() if isinstance(settings, Settings) else settings
    http.check_host(host)
    app = create_app(service, settings=http, results=results, metrics=metrics)
    async with serving(app, host, port, settings=http, **server_options) as server:
        yield server
