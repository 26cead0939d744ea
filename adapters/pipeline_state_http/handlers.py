"""Every error answer of the API is made here, in one place.

:func:`error_response` turns an exception into a JSON answer: a denial becomes
``{denial_reason, detail}`` with the status of :data:`~pipeline_state_http.errors.DENIAL_STATUS`;
library errors, validation errors and HTTP errors become an
:class:`~pipeline_state_http.schemas.ErrorBody`. Server-side failures (5xx) get a fixed
message: driver messages (which may hold addresses or SQL) and stack traces never leave
the process; they are logged instead. Bad input is never a server error: a value the store
refuses as invalid (:class:`~pipeline_state.errors.RejectedDataError`) answers 422
``rejected_data``, any other :class:`~pipeline_state.errors.BadCommandError` 400.

:class:`ApiRoute` is the route class of the adapter's router: it applies
:func:`error_response` around every endpoint, so a service that mounts the router gets
the same answers without registering handlers on its own app.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from pipeline_state import errors as library_errors
from pipeline_state.errors import (
    BadCommandError,
    BatchConflictError,
    BatchNotFoundError,
    ConcurrencyConflictError,
    CorruptStateError,
    DuplicateEventError,
    IllegalTransitionError,
    InvalidMessageError,
    PipelineStateError,
    PublishError,
    RejectedDataError,
    StoreError,
    StoreUnavailableError,
    UnknownPipelineError,
)

from .errors import PipelineDeniedError, RefusedBeforeError
from .schemas import DenialBody, ErrorBody

__all__ = [
    "COMMON_ERRORS",
    "CORRELATION_HEADER",
    "ApiRoute",
    "documented",
    "documented_as_json",
    "error_response",
]

log = logging.getLogger("pipeline_state_http")

CORRELATION_HEADER = "X-Correlation-ID"

# Most specific first is not needed: the lookup walks the exception's MRO.
_LIBRARY: dict[type[BaseException], tuple[int, str]] = {
    BatchNotFoundError: (404, "batch_not_found"),
    RejectedDataError: (422, "rejected_data"),
    BatchConflictError: (409, "batch_conflict"),
    UnknownPipelineError: (400, "unknown_pipeline"),
    BadCommandError: (400, "bad_command"),
    IllegalTransitionError: (409, "illegal_transition"),
    InvalidMessageError: (422, "invalid_message"),
    ConcurrencyConflictError: (409, "concurrency_conflict"),
    DuplicateEventError: (409, "duplicate_event"),
    StoreUnavailableError: (503, "store_unavailable"),
    CorruptStateError: (500, "corrupt_state"),
    StoreError: (503, "store_error"),
    PublishError: (503, "publish_error"),
    PipelineStateError: (500, "pipeline_state_error"),
}


def _answer_of(error_name: str) -> tuple[int, str]:
    """The status and code of the library error called ``error_name`` (a replayed refusal
    names one), found as for a raised one: along its class hierarchy."""
    cls = getattr(library_errors, error_name, None)
    if not (isinstance(cls, type) and issubclass(cls, PipelineStateError)):
        return 409, "refused"
    return next(_LIBRARY[t] for t in cls.__mro__ if t in _LIBRARY)


COMMON_ERRORS: tuple[tuple[int, Any], ...] = (
    (401, ErrorBody),
    (408, ErrorBody),
    (413, ErrorBody),
    (422, ErrorBody),
    (503, ErrorBody),
)
"""The error answers any route of the adapter may give (a missing token, a slow or large
body, a malformed one, a store out of reach): each an :class:`ErrorBody`."""


_COMPONENTS = "#/components/schemas/"


def documented(*pairs: tuple[int, Any]) -> dict[int | str, dict[str, Any]]:
    """A route's ``responses``: the model of each error answer's body by status (a later
    pair of a status replaces an earlier; a union documents either body)."""
    return {status: {"model": model} for status, model in pairs}


def documented_as_json(*pairs: tuple[int, type[Any]]) -> dict[int | str, dict[str, Any]]:
    """:func:`documented` for a route whose own answer is not JSON (a text view): FastAPI
    files a model under the route's media type, but the error answers are JSON, so each
    is documented as ``application/json`` by reference (the models are in every app's
    components: the JSON routes use them)."""
    return {
        status: {"content": {"application/json": {"schema": {"$ref": _COMPONENTS + model.__name__}}}}
        for status, model in pairs
    }


_SERVER_DETAIL = {
    503: "the service cannot reach its store right now; retry later",
    500: "internal server error",
}


def _json(status: int, body: ErrorBody | DenialBody, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body.model_dump(mode="json", exclude_none=True), status_code=status, headers=headers)


def _context(exc: BaseException) -> dict[str, str | None] | None:
    if isinstance(exc, IllegalTransitionError):
        return {
            "lifecycle": exc.lifecycle,
            "state": exc.state,
            "trigger": exc.trigger,
            "batch_id": exc.batch_id,
        }
    if isinstance(exc, RejectedDataError):
        return {"reason": exc.reason, "batch_id": exc.batch_id}
    if isinstance(exc, UnknownPipelineError):
        return {"name": exc.name, "kind": exc.kind, "batch_id": exc.batch_id}
    if isinstance(exc, BadCommandError):
        return {"batch_id": exc.batch_id}
    if isinstance(exc, ConcurrencyConflictError):
        return {
            "batch_id": exc.batch_id,
            "expected": None if exc.expected is None else str(exc.expected),
            "actual": None if exc.actual is None else str(exc.actual),
        }
    return None


def _validation(exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    first: dict[str, Any] = dict(errors[0]) if errors else {}
    field = ".".join(str(part) for part in first.get("loc", ())) or None
    body = ErrorBody(error="validation_error", detail=str(first.get("msg", "invalid request")), field=field)
    return _json(422, body)


def _library(exc: PipelineStateError) -> JSONResponse:
    if isinstance(exc, RefusedBeforeError):
        status, code = _answer_of(exc.original)
        context = {**exc.context, "batch_id": exc.batch_id, "refused_as": exc.original}
        return _json(status, ErrorBody(error=code, detail=str(exc), context=context))
    status, code = next(_LIBRARY[t] for t in type(exc).__mro__ if t in _LIBRARY)
    if status >= 500:
        log.error("%s answered %d: %s", code, status, exc, exc_info=exc)
        return _json(status, ErrorBody(error=code, detail=_SERVER_DETAIL[status]))
    field = exc.field if isinstance(exc, InvalidMessageError) else None
    return _json(status, ErrorBody(error=code, detail=str(exc), field=field, context=_context(exc)))


_HTTP_CODES = {
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
}
"""The ``error`` of an HTTP-level error's body, by status (others: ``http_error``)."""


async def http_error(request: Request, exc: Exception) -> Response:
    """The answer to an error the router raises itself (no route for the path, a method the
    route does not take): the same ``{error, detail}`` body as every other error."""
    response = error_response(exc)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response


def error_response(exc: BaseException) -> JSONResponse:
    """The answer to ``exc``; unknown exceptions give a bare 500 (and are logged)."""
    if isinstance(exc, PipelineDeniedError):
        return _json(exc.status_code, DenialBody(denial_reason=exc.reason, detail=exc.detail))
    if isinstance(exc, RequestValidationError):
        return _validation(exc)
    if isinstance(exc, PipelineStateError):
        return _library(exc)
    if isinstance(exc, HTTPException):
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return _json(exc.status_code, ErrorBody(error=code, detail=str(exc.detail)), dict(exc.headers or {}))
    log.error("unhandled error answered 500", exc_info=exc)
    return _json(500, ErrorBody(error="internal_error", detail=_SERVER_DETAIL[500]))


Endpoint = Callable[[Request], Coroutine[Any, Any, Response]]


class ApiRoute(APIRoute):
    """A route whose errors are answered by :func:`error_response` and whose answers carry the
    request's correlation id (set by the correlation dependency) in ``X-Correlation-ID`` and
    ``X-Content-Type-Options: nosniff`` (no browser guesses a type from user data).

    The route's token checks (:func:`~pipeline_state_http.security.route_guards`) run before
    anything else: FastAPI reads and parses a JSON body before it solves the dependencies, so
    without this a request with no token and a malformed body would be answered 422 (how its
    body parses), not 401. The checks stay dependencies too (the OpenAPI schema shows them,
    and a router used with another route class still checks tokens)."""

    def get_route_handler(self) -> Endpoint:
        # Imported here: security imports this module (for error_response).
        from .security import route_guards

        handler = super().get_route_handler()
        guards = route_guards(self.dependencies)

        async def guarded(request: Request) -> Response:
            try:
                for guard in guards:
                    await guard(request)
                response = await handler(request)
            except Exception as exc:
                response = error_response(exc)
                if isinstance(exc, PipelineDeniedError) and exc.correlation_id is not None:
                    request.state.correlation_id = exc.correlation_id  # what it was denied under
            response.headers.setdefault("X-Content-Type-Options", "nosniff")
            correlation = getattr(request.state, "correlation_id", None)
            if correlation is not None and CORRELATION_HEADER.lower() not in response.headers:
                response.headers[CORRELATION_HEADER] = str(correlation)
            return response

        return guarded
