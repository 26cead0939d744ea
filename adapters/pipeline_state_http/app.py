"""Mounting the API: :func:`install` on an existing app, or :func:`create_app` for a new one."""

# No `from __future__ import annotations`: FastAPI must see the closures' real annotations.

import html
import logging

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipeline_state._service import PipelineService
from pipeline_state.profiles.huleedu.results.ports import ResultsStore

from .asyncapi_route import build_asyncapi_router
from .handlers import ApiRoute, http_error
from .metrics_routes import MetricsSource, build_metrics_router
from .ops_routes import build_ops_router
from .routes import build_router
from .security import BodyLimitMiddleware, require_scopes
from .settings import HttpSettings, Scope

__all__ = ["SETTINGS_STATE", "create_app", "install"]

log = logging.getLogger("pipeline_state_http")

SETTINGS_STATE = "pipeline_state_http_settings"
"""The attribute of ``app.state`` holding the :class:`HttpSettings` the app was built with
(the server reads its timeouts there)."""


def _warn_about_scopes(settings: HttpSettings) -> None:
    for scope in settings.closed_scopes():
        log.warning("no %s token configured: the %s routes refuse every request", scope.value, scope.value)
    for scope in settings.open_scopes():
        log.warning("insecure mode: the %s routes are open to anyone (no %s token)", scope.value, scope.value)
    for scopes in settings.shared_tokens():
        names = " and ".join(scope.value for scope in scopes)
        log.warning("the %s scopes share one token: its holder opens the routes of each", names)


def install(
    app: FastAPI,
    service: PipelineService,
    *,
    settings: HttpSettings | None = None,
    prefix: str = "",
    results: ResultsStore | None = None,
    metrics: MetricsSource | None = None,
) -> None:
    """Mount the API's routes (``/asyncapi.json`` included) under ``prefix`` on ``app`` and
    limit the bodies they receive; with a ``results`` store, the results routes too, and
    with ``metrics``, ``/metrics``. Each route needs the token of its scope (see
    :class:`HttpSettings`); with no token
    configured, a scope is closed."""
    settings = settings or HttpSettings()
    _warn_about_scopes(settings)
    app.include_router(build_router(service, settings=settings, results=results), prefix=prefix)
    app.include_router(build_ops_router(service, settings=settings), prefix=prefix)
    app.include_router(build_asyncapi_router(service, settings=settings), prefix=prefix)
    if metrics is not None:
        app.include_router(build_metrics_router(metrics, settings=settings), prefix=prefix)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        prefixes=(f"{prefix}/v1/", f"{prefix}/internal/"),
        timeout=settings.body_timeout_seconds,
    )


def _docs_router(app: FastAPI, settings: HttpSettings) -> APIRouter:
    """``/openapi.json``, ``/docs`` and ``/redoc``, behind the API token."""
    router = APIRouter(route_class=ApiRoute, dependencies=require_scopes(settings, Scope.API))

    @router.get("/openapi.json", include_in_schema=False)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @router.get("/docs", include_in_schema=False)
    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{html.escape(app.title)} - docs")

    @router.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title=f"{html.escape(app.title)} - ReDoc")

    return router


def create_app(
    service: PipelineService,
    *,
    settings: HttpSettings | None = None,
    results: ResultsStore | None = None,
    metrics: MetricsSource | None = None,
) -> FastAPI:
    """A FastAPI application serving the API for ``service`` (see the package README),
    given a ``results`` store, its results read model under ``/v1/results``, and given
    ``metrics``, their Prometheus text at ``/metrics``.

    Secure by default: every route but ``/healthz`` (the OpenAPI schema and docs pages
    included) needs the bearer token of its scope, and a scope without a token in
    ``settings`` refuses every request, unless ``settings.insecure_no_auth`` opens it."""
    settings = settings or HttpSettings()
    app = FastAPI(
        title=settings.title,
        version="1",
        description="Batch pipeline state: registration, pipeline runs, history and status.",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    setattr(app.state, SETTINGS_STATE, settings)
    # The router's own 404 and 405 answer the API's error body too (install() leaves an
    # application it is given its own handlers).
    app.add_exception_handler(StarletteHTTPException, http_error)
    install(app, service, settings=settings, results=results, metrics=metrics)
    app.include_router(_docs_router(app, settings))
    return app
