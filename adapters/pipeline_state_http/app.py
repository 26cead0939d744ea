"""Mounting the API: :func:`install` on an existing app, or :func:`create_app` for a new one."""

from __future__ import annotations

from fastapi import FastAPI

from pipeline_state.results.ports import ResultsStore
from pipeline_state.service import PipelineService

from .routes import build_router
from .security import BodyLimitMiddleware
from .settings import HttpSettings

__all__ = ["create_app", "install"]


def install(
    app: FastAPI,
    service: PipelineService,
    *,
    settings: HttpSettings | None = None,
    prefix: str = "",
    results: ResultsStore | None = None,
) -> None:
    """Mount the API's routes under ``prefix`` on ``app`` and limit the bodies they receive;
    with a ``results`` store, the results routes too."""
    settings = settings or HttpSettings()
    app.include_router(build_router(service, settings=settings, results=results), prefix=prefix)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        prefixes=(f"{prefix}/v1/", f"{prefix}/internal/"),
    )


def create_app(
    service: PipelineService,
    *,
    settings: HttpSettings | None = None,
    results: ResultsStore | None = None,
) -> FastAPI:
    """A FastAPI application serving the API for ``service`` (see the package README) and,
    given a ``results`` store, its results read model under ``/v1/results``."""
    settings = settings or HttpSettings()
    app = FastAPI(
        title=settings.title,
        version="1",
        description="Batch pipeline state: registration, pipeline runs, history and status.",
    )
    install(app, service, settings=settings, results=results)
    return app
