"""The results routes: read-only views of the results read model (issue 6).

:func:`build_results_router` serves
:class:`~pipeline_state.profiles.huleedu.results.ResultsQueries` over a
:class:`~pipeline_state.profiles.huleedu.results.ResultsStore`;
:func:`~pipeline_state_http.routes.build_router` adds it when given a results store.
The routes sit under ``/v1/results`` behind the same bearer token as the other ``/v1`` routes;
an unknown batch or class answers 404 ``results_not_found``.
"""

# No `from __future__ import annotations`: FastAPI must see the closures' real annotations.

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, params
from fastapi.responses import JSONResponse

from pipeline_state.profiles.huleedu.results.ports import ResultsStore
from pipeline_state.profiles.huleedu.results.queries import ResultsQueries

from .context import correlation_only
from .handlers import COMMON_ERRORS, ApiRoute, documented
from .ids import id_path
from .results_schemas import BatchResultsView, ClassResultsView, TeacherResultsView
from .schemas import ErrorBody
from .settings import HttpSettings

__all__ = ["NOT_FOUND", "build_results_router"]

NOT_FOUND = "results_not_found"
"""The ``error`` code of a 404 from the results routes."""

Correlation = Annotated[str, Depends(correlation_only)]
Id = id_path("the id")

_ANSWERS = documented(*COMMON_ERRORS)
"""Under ``/v1/``, the body limit answers these routes too (408, 413)."""


def _not_found(what: str) -> JSONResponse:
    body = ErrorBody(error=NOT_FOUND, detail=f"no results for {what}")
    return JSONResponse(body.model_dump(mode="json", exclude_none=True), status_code=404)


def build_results_router(
    results: ResultsStore,
    *,
    settings: HttpSettings | None = None,
    dependencies: Sequence[params.Depends] = (),
) -> APIRouter:
    """The results routes over ``results``; ``dependencies`` (the API token check, see
    :func:`~pipeline_state_http.security.require_scopes`) protect them."""
    settings = settings or HttpSettings()
    queries = ResultsQueries(results)
    router = APIRouter(
        route_class=ApiRoute,
        tags=["results"],
        dependencies=list(dependencies),
    )
    limit_query = Query(ge=1, le=settings.max_page_size)
    offset_query = Query(ge=0, le=1_000_000_000)

    @router.get(
        "/v1/results/batches/{batch_id}",
        response_model=BatchResultsView,
        responses=documented(*COMMON_ERRORS, (404, ErrorBody)),
        summary="The results of a batch",
    )
    async def batch_results(batch_id: Annotated[str, Id], correlation: Correlation) -> Any:
        view = await queries.batch_json(batch_id)
        return _not_found(f"batch {batch_id!r}") if view is None else view

    @router.get(
        # ``:path`` (here and for teachers): ids may hold a '/', which arrives decoded.
        "/v1/results/classes/{class_id:path}",
        response_model=ClassResultsView,
        responses=documented(*COMMON_ERRORS, (404, ErrorBody)),
        summary="The results of a class and a page of its batches",
    )
    async def class_results(
        class_id: Annotated[str, Id],
        correlation: Correlation,
        limit: Annotated[int, limit_query] = settings.default_page_size,
        offset: Annotated[int, offset_query] = 0,
    ) -> Any:
        view = await queries.class_json(class_id, limit=limit, offset=offset)
        return _not_found(f"class {class_id!r}") if view is None else view

    @router.get(
        "/v1/results/teachers/{user_id:path}",
        response_model=TeacherResultsView,
        responses=_ANSWERS,
        summary="A page of a teacher's batch results",
    )
    async def teacher_results(
        user_id: Annotated[str, Id],
        correlation: Correlation,
        limit: Annotated[int, limit_query] = settings.default_page_size,
        offset: Annotated[int, offset_query] = 0,
    ) -> Any:
        return await queries.teacher_json(user_id, limit=limit, offset=offset)

    return router
