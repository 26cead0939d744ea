"""The API's routes: paths, status codes and response models, kept thin.

:func:`build_router` returns an :class:`~fastapi.APIRouter` for one service; its routes
use :class:`~pipeline_state_http.handlers.ApiRoute`, so their errors are answered the same
wherever the router is mounted. Mutating work is done by
:class:`~pipeline_state_http.operations.Operations`, dry runs by
:mod:`pipeline_state_http.resolution`.
"""

# No `from __future__ import annotations`: FastAPI must see the closures' real annotations.

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response

from pipeline_state._service import PipelineService
from pipeline_state._snapshot import run_view, snapshot
from pipeline_state.errors import StoreUnavailableError
from pipeline_state.profiles.huleedu.results.ports import ResultsStore

from .context import RequestContext, correlation_only, request_context
from .diagram import DiagramView, batch_mermaid
from .handlers import COMMON_ERRORS, ApiRoute, documented, documented_as_json
from .ids import BatchId, id_path
from .operations import Operations
from .resolution import define_pipeline, preflight
from .results_routes import build_results_router
from .schemas import (
    CancelAccepted,
    CancelBody,
    DefineRequest,
    DefineResponse,
    DenialBody,
    ErrorBody,
    Health,
    HistoryPage,
    PhaseCompletionBody,
    PhaseRecorded,
    PipelineAccepted,
    PipelineRequestBody,
    PreflightBody,
    PreflightResult,
    RegisterAccepted,
    RegistrationBody,
    RetryPhaseBody,
    batch_snapshot_model,
)
from .security import require_scopes
from .settings import HttpSettings, Scope
from .status_page import render_status_page

__all__ = ["HEALTH_SENTINEL", "build_router"]

HEALTH_SENTINEL = "__pipeline_state_healthz__"
"""The batch id ``/healthz`` loads to see that the store answers."""

Context = Annotated[RequestContext, Depends(request_context)]
Correlation = Annotated[str, Depends(correlation_only)]


OPERATOR_VIEWS = ("/v1/batches/{batch_id}/diagram", "/v1/batches/{batch_id}/status")
"""Routes under ``/v1`` that operators use too: they take the API or the operations token."""

_NOSNIFF = {"X-Content-Type-Options": "nosniff"}
_VIEW_ERRORS = documented_as_json(*COMMON_ERRORS, (404, ErrorBody))
"""The error answers of the text views: JSON, whatever the view's own media type."""
_DENIALS = ((400, DenialBody), (402, DenialBody), (404, DenialBody), (409, DenialBody), (429, DenialBody))
_EITHER = DenialBody | ErrorBody
"""A status a denial and an error share."""
_RETRY_ANSWERS = (*_DENIALS, (400, _EITHER), (404, _EITHER))
"""A phase retry is denied as a request is, and answers an :class:`ErrorBody` with 404 for
an unknown batch and with 400 for an ``after_runs`` the batch has moved past."""


def build_router(
    service: PipelineService,
    *,
    settings: HttpSettings | None = None,
    results: ResultsStore | None = None,
) -> APIRouter:
    """All routes of the API for ``service``, each in its token scope (see
    :func:`~pipeline_state_http.security.require_scopes`): ``/v1/*`` needs the API token,
    ``/internal/*`` the internal token, and the operator views (:data:`OPERATOR_VIEWS`) the
    API or the operations token; ``/healthz`` is open. With a ``results`` store, also the
    ``/v1/results/...`` routes (:mod:`~pipeline_state_http.results_routes`)."""
    settings = settings or HttpSettings()
    ops = Operations(service)
    api_only = require_scopes(settings, Scope.API)
    api = APIRouter(route_class=ApiRoute, tags=["batches"], dependencies=api_only)
    views = APIRouter(
        route_class=ApiRoute,
        tags=["batches"],
        dependencies=require_scopes(settings, Scope.API, Scope.OPS),
    )
    page = APIRouter(
        route_class=ApiRoute,
        tags=["batches"],
        dependencies=[] if settings.public_status_page else require_scopes(settings, Scope.API, Scope.OPS),
    )
    internal = APIRouter(
        route_class=ApiRoute, tags=["internal"], dependencies=require_scopes(settings, Scope.INTERNAL)
    )
    ops_router = APIRouter(route_class=ApiRoute, tags=["operations"])

    @api.post(
        "/v1/batches/register",
        status_code=202,
        response_model=RegisterAccepted,
        responses=documented(*COMMON_ERRORS, (409, ErrorBody)),
        summary="Register a batch",
    )
    async def register(request: Request, payload: RegistrationBody, ctx: Context) -> RegisterAccepted:
        answer = await ops.register(payload, ctx)
        request.state.correlation_id = answer.correlation_id  # a replay's is the first one's
        return answer

    @api.post(
        "/v1/batches/{batch_id}/pipelines",
        status_code=202,
        response_model=PipelineAccepted,
        responses=documented(*COMMON_ERRORS, *_DENIALS),
        summary="Request a pipeline run",
    )
    async def request_pipeline(
        request: Request, batch_id: BatchId, body: PipelineRequestBody, ctx: Context
    ) -> PipelineAccepted:
        answer = await ops.request_pipeline(batch_id, body, ctx)
        request.state.correlation_id = answer.correlation_id
        return answer

    @api.post(
        "/v1/batches/{batch_id}/pipelines/{pipeline}/preflight",
        response_model=PreflightResult,
        responses=documented(*COMMON_ERRORS, *_DENIALS),
        summary="Check and resolve a pipeline request without running it",
    )
    async def preflight_pipeline(
        batch_id: BatchId,
        pipeline: Annotated[str, id_path("the pipeline name")],
        correlation: Correlation,
        body: Annotated[PreflightBody | None, Body()] = None,
    ) -> PreflightResult:
        return await preflight(service, batch_id, pipeline, body or PreflightBody(), correlation)

    @api.post(
        "/v1/batches/{batch_id}/cancel",
        status_code=202,
        response_model=CancelAccepted,
        responses=documented(*COMMON_ERRORS, (400, ErrorBody), (404, ErrorBody), (409, ErrorBody)),
        summary="Cancel the active run",
    )
    async def cancel(
        request: Request, batch_id: BatchId, ctx: Context, body: Annotated[CancelBody | None, Body()] = None
    ) -> CancelAccepted:
        answer = await ops.cancel(batch_id, body or CancelBody(), ctx)
        request.state.correlation_id = answer.correlation_id  # a replay's is the first one's
        return answer

    @api.post(
        "/v1/batches/{batch_id}/retry-phase",
        status_code=202,
        response_model=PipelineAccepted,
        responses=documented(*COMMON_ERRORS, *_RETRY_ANSWERS),
        summary="Run one phase again in a new run",
    )
    async def retry_phase(
        request: Request, batch_id: BatchId, body: RetryPhaseBody, ctx: Context
    ) -> PipelineAccepted:
        answer = await ops.retry_phase(batch_id, body, ctx)
        request.state.correlation_id = answer.correlation_id
        return answer

    @api.get(
        "/v1/batches/{batch_id}",
        # Its owner, group and item-count keys are the profile's (Profile.view_names).
        response_model=batch_snapshot_model(service.profile.view_names),
        responses=documented(*COMMON_ERRORS, (404, ErrorBody)),
        summary="The batch snapshot",
    )
    async def get_batch(batch_id: BatchId, correlation: Correlation) -> dict[str, Any]:
        return snapshot(
            await service.get_batch(batch_id), service.profile.view_names, service.profile.state_names
        )

    @api.get(
        "/v1/batches/{batch_id}/history",
        response_model=HistoryPage,
        responses=documented(*COMMON_ERRORS, (404, ErrorBody)),
        summary="Archived runs, newest first",
    )
    async def history(
        batch_id: BatchId,
        correlation: Correlation,
        limit: Annotated[int, Query(ge=1, le=settings.max_page_size)] = settings.default_page_size,
        offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
    ) -> HistoryPage:
        state = await service.get_batch(batch_id)
        newest_first = list(reversed(state.history))
        items = [run_view(run) for run in newest_first[offset : offset + limit]]
        return HistoryPage.model_validate(
            {
                "batch_id": batch_id,
                "total": len(newest_first),
                "limit": limit,
                "offset": offset,
                "items": items,
            }
        )

    @views.get(
        "/v1/batches/{batch_id}/diagram",
        response_class=PlainTextResponse,
        responses={**_VIEW_ERRORS, 200: {"content": {"text/plain": {}}}},
        summary="The batch's diagrams in Mermaid, current states highlighted",
    )
    async def diagram(
        batch_id: BatchId, correlation: Correlation, view: Annotated[DiagramView, Query()] = "all"
    ) -> PlainTextResponse:
        state = await service.get_batch(batch_id)
        text = batch_mermaid(state, service.profile.catalog, view, service.profile.state_names)
        return PlainTextResponse(
            text,
            headers={
                **_NOSNIFF,
                "Content-Security-Policy": "default-src 'none'",
                "Cache-Control": "no-store",
            },
        )

    @page.get(
        "/v1/batches/{batch_id}/status",
        response_class=HTMLResponse,
        responses={**_VIEW_ERRORS, 200: {"content": {"text/html": {}}}},
        summary="A live HTML status page",
    )
    async def status_page(batch_id: BatchId, correlation: Correlation) -> HTMLResponse:
        state = await service.get_batch(batch_id)
        rendered = render_status_page(
            state,
            service.profile.catalog,
            title=settings.title,
            refresh_seconds=settings.status_refresh_seconds,
            history_limit=settings.max_page_size,
            items=service.profile.view_names.items_word,
            state_names=service.profile.state_names,
        )
        headers = {
            "Content-Security-Policy": rendered.csp,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
        }
        return HTMLResponse(rendered.html, headers=headers)

    @internal.post(
        "/internal/v1/pipelines/define",
        response_model=DefineResponse,
        responses=documented(*COMMON_ERRORS, (400, _EITHER), (404, ErrorBody)),
        summary="Resolve a pipeline for a batch (the conductor's question)",
    )
    async def define(request: Request, body: DefineRequest) -> DefineResponse:
        request.state.correlation_id = str(body.correlation_id)
        return await define_pipeline(service, body)

    @internal.post(
        "/internal/v1/phases/complete",
        response_model=PhaseRecorded,
        responses=documented(*COMMON_ERRORS, (400, ErrorBody), (404, ErrorBody)),
        summary="Record an out-of-band phase completion",
    )
    async def phase_complete(request: Request, body: PhaseCompletionBody, ctx: Context) -> PhaseRecorded:
        answer, request.state.correlation_id = await ops.record_completion(body, ctx)
        return answer  # echoing the first answer's correlation id on a replay

    @ops_router.get(
        "/healthz",
        response_model=Health,
        responses={503: {"model": Health}},
        summary="Liveness and store reachability",
    )
    async def healthz() -> Response:
        try:
            await service.store.load(HEALTH_SENTINEL)
        except StoreUnavailableError:
            body = Health(status="unavailable", detail="the store cannot be reached")
            return JSONResponse(body.model_dump(mode="json"), status_code=503)
        except Exception:
            body = Health(status="unavailable", detail="the store failed to answer")
            return JSONResponse(body.model_dump(mode="json"), status_code=503)
        return JSONResponse(Health(status="ok").model_dump(mode="json", exclude_none=True))

    router = APIRouter()
    for part in (api, views, page, internal, ops_router):
        router.include_router(part)
    if results is not None:
        router.include_router(build_results_router(results, settings=settings, dependencies=api_only))
    return router
