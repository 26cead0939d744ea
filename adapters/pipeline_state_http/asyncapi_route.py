"""``GET /asyncapi.json``: the AsyncAPI 3.0.0 document of the service's Kafka wire.

The document is :func:`pipeline_state._asyncapi.asyncapi_document` of the service's profile,
built once when the routes are built (a profile cannot change). Like ``/openapi.json`` it
needs the API token: every route but ``/healthz`` is behind a token of its scope.
"""

# No `from __future__ import annotations`: FastAPI must see the closures' real annotations.

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from pipeline_state._asyncapi import asyncapi_document
from pipeline_state._service import PipelineService

from .handlers import ApiRoute
from .security import require_scopes
from .settings import HttpSettings, Scope

__all__ = ["build_asyncapi_router"]


def build_asyncapi_router(service: PipelineService, *, settings: HttpSettings) -> APIRouter:
    """The router serving ``/asyncapi.json`` for ``service`` (API token)."""
    document = asyncapi_document(service.profile)
    router = APIRouter(route_class=ApiRoute, dependencies=require_scopes(settings, Scope.API))

    @router.get("/asyncapi.json", include_in_schema=False)
    async def asyncapi() -> JSONResponse:
        return JSONResponse(document)

    return router
