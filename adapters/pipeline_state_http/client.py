"""A typed async client of the API, on :mod:`httpx`.

Answers come back as the models of :mod:`pipeline_state_http.schemas`; error answers
raise the library's errors: a denial raises
:class:`~pipeline_state_http.errors.PipelineDeniedError` (an unknown batch
:class:`~pipeline_state.errors.BatchNotFoundError`), a conflicting registration
:class:`~pipeline_state.errors.BatchConflictError`, a cancel without an active run
:class:`~pipeline_state.errors.IllegalTransitionError`, a validation failure
:class:`~pipeline_state.errors.InvalidMessageError` naming the field, a 503
:class:`~pipeline_state.errors.StoreUnavailableError`. Pass
``transport=httpx.ASGITransport(app)`` to talk to an app in process.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from pipeline_state.errors import (
    BadCommandError,
    BatchConflictError,
    BatchNotFoundError,
    ConcurrencyConflictError,
    IllegalTransitionError,
    InvalidMessageError,
    PipelineStateError,
    StoreUnavailableError,
    UnknownPipelineError,
)
from pipeline_state.profiles.huleedu.events import BatchRegistrationRequestV1

from .errors import HttpApiError, PipelineDeniedError, UnauthorizedError
from .schemas import (
    BatchSnapshot,
    CancelAccepted,
    DefineResponse,
    HistoryPage,
    PhaseRecorded,
    PipelineAccepted,
    PreflightResult,
    RegisterAccepted,
)
from .settings import BEARER_TOKEN_RULE, is_bearer_token

__all__ = ["PipelineStateClient"]

M = TypeVar("M", bound=BaseModel)


def _headers(idempotency_key: str | None, correlation_id: str | None) -> dict[str, str]:
    headers = {}
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    if correlation_id is not None:
        headers["X-Correlation-ID"] = correlation_id
    return headers


def _body(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except (ValueError, RecursionError):  # deeply nested JSON exhausts the parser's stack
        return {}
    return data if isinstance(data, dict) else {}


def _context(body: Mapping[str, Any]) -> dict[str, Any]:
    context = body.get("context")
    return context if isinstance(context, dict) else {}


def error_from_response(response: httpx.Response, *, batch_id: str | None = None) -> PipelineStateError:
    """The library error an error answer stands for."""
    status = response.status_code
    body = _body(response)
    ctx = _context(body)
    detail = str(body.get("detail", response.reason_phrase))
    if "denial_reason" in body:
        reason = str(body["denial_reason"])
        if reason == "batch_not_found" and batch_id is not None:
            return BatchNotFoundError(batch_id)
        return PipelineDeniedError(reason, detail, batch_id=batch_id)
    code = str(body.get("error", "http_error"))
    bid = ctx.get("batch_id") or batch_id
    if code == "batch_not_found" and bid:
        return BatchNotFoundError(str(bid))
    if code == "batch_conflict" and bid:
        return BatchConflictError(str(bid))
    if code == "illegal_transition":
        return IllegalTransitionError(
            str(ctx.get("lifecycle", "?")),
            str(ctx.get("state", "?")),
            str(ctx.get("trigger", "?")),
            batch_id=None if bid is None else str(bid),
        )
    if code == "unknown_pipeline":
        kind = str(ctx.get("kind") or "pipeline")
        return UnknownPipelineError(str(ctx.get("name", "?")), batch_id=bid, kind=kind)
    if code == "bad_command":
        return BadCommandError(detail, batch_id=bid)
    if code == "concurrency_conflict" and bid:
        return ConcurrencyConflictError(str(bid), None)
    if status == 422:
        field = body.get("field")
        return InvalidMessageError("http", detail, field=None if field is None else str(field))
    if status == 503:
        return StoreUnavailableError(detail)
    if status == 401:
        return UnauthorizedError(status, code, detail)
    field = body.get("field")
    return HttpApiError(status, code, detail, field=None if field is None else str(field))


class PipelineStateClient:
    """The API as typed coroutines. Use as ``async with PipelineStateClient(url) as c: ...``.

    ``token`` is sent to ``/v1/*`` routes and ``internal_token`` to ``/internal/*`` routes.
    A token a header cannot carry (a trailing newline, a space, a non-ASCII letter) is a
    :class:`ValueError` here, which never shows the token; sent, the HTTP library's error
    would quote the whole header.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        internal_token: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 10.0,
    ) -> None:
        for name, value in (("token", token), ("internal_token", internal_token)):
            if value is not None and not is_bearer_token(value):
                raise ValueError(f"{name} is not a bearer token: {BEARER_TOKEN_RULE} (value not shown)")
        self._token = token
        self._internal_token = internal_token
        self._http = httpx.AsyncClient(base_url=base_url, transport=transport, timeout=timeout)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- batches --------------------------------------------------------------------------
    async def register(
        self,
        registration: BatchRegistrationRequestV1 | Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
        correlation_id: str | None = None,
    ) -> RegisterAccepted:
        payload = (
            registration.model_dump(mode="json", exclude_none=True)
            if isinstance(registration, BaseModel)
            else dict(registration)
        )
        response = await self._send(
            "POST",
            "/v1/batches/register",
            json=payload,
            headers=_headers(idempotency_key, correlation_id),
            batch_id=str(payload.get("batch_id", "")) or None,
        )
        return self._parse(response, RegisterAccepted)

    async def request_pipeline(
        self,
        batch_id: str,
        pipeline: str,
        *,
        user_id: str,
        prompt_payload: Mapping[str, Any] | None = None,
        is_retry: bool = False,
        retry_reason: str | None = None,
        idempotency_key: str | None = None,
        correlation_id: str | None = None,
    ) -> PipelineAccepted:
        body: dict[str, Any] = {"requested_pipeline": pipeline, "user_id": user_id, "is_retry": is_retry}
        if prompt_payload is not None:
            body["prompt_payload"] = dict(prompt_payload)
        if retry_reason is not None:
            body["retry_reason"] = retry_reason
        response = await self._send(
            "POST",
            f"/v1/batches/{_seg(batch_id)}/pipelines",
            json=body,
            headers=_headers(idempotency_key, correlation_id),
            batch_id=batch_id,
        )
        return self._parse(response, PipelineAccepted)

    async def preflight(
        self,
        batch_id: str,
        pipeline: str,
        *,
        user_id: str | None = None,
        prompt_payload: Mapping[str, Any] | None = None,
    ) -> PreflightResult:
        body: dict[str, Any] = {}
        if user_id is not None:
            body["user_id"] = user_id
        if prompt_payload is not None:
            body["prompt_payload"] = dict(prompt_payload)
        response = await self._send(
            "POST",
            f"/v1/batches/{_seg(batch_id)}/pipelines/{_seg(pipeline, 'path.pipeline')}/preflight",
            json=body,
            batch_id=batch_id,
        )
        return self._parse(response, PreflightResult)

    async def cancel(
        self,
        batch_id: str,
        *,
        user_id: str | None = None,
        reason: str | None = None,
        run_id: str | None = None,
        idempotency_key: str | None = None,
        correlation_id: str | None = None,
    ) -> CancelAccepted:
        """Cancel the active run; with ``run_id``, only if it is that run (the one the caller
        saw): another active run refuses it (:class:`~pipeline_state.errors.BadCommandError`)."""
        fields = {"user_id": user_id, "reason": reason, "run_id": run_id}
        body = {k: v for k, v in fields.items() if v is not None}
        response = await self._send(
            "POST",
            f"/v1/batches/{_seg(batch_id)}/cancel",
            json=body,
            headers=_headers(idempotency_key, correlation_id),
            batch_id=batch_id,
        )
        return self._parse(response, CancelAccepted)

    async def retry_phase(
        self,
        batch_id: str,
        phase_name: str,
        *,
        user_id: str,
        retry_reason: str | None = None,
        after_runs: int | None = None,
        idempotency_key: str | None = None,
        correlation_id: str | None = None,
    ) -> PipelineAccepted:
        """Run ``phase_name`` again in a new run; with ``after_runs`` (the archived runs the
        caller saw), refused once another run was archived since
        (:class:`~pipeline_state.errors.BadCommandError`)."""
        body: dict[str, Any] = {"phase_name": phase_name, "user_id": user_id}
        if retry_reason is not None:
            body["retry_reason"] = retry_reason
        if after_runs is not None:
            body["after_runs"] = after_runs
        response = await self._send(
            "POST",
            f"/v1/batches/{_seg(batch_id)}/retry-phase",
            json=body,
            headers=_headers(idempotency_key, correlation_id),
            batch_id=batch_id,
        )
        return self._parse(response, PipelineAccepted)

    async def get_batch(self, batch_id: str) -> BatchSnapshot:
        """The batch's view as a :class:`BatchSnapshot`: the shipped profile's keys (a server
        running a profile with other ``view_names`` answers a view this model does not fit:
        :class:`HttpApiError` ``unexpected_answer``; use :meth:`get_batch_view`)."""
        return self._parse(await self._get_batch(batch_id), BatchSnapshot)

    async def get_batch_view(self, batch_id: str) -> dict[str, Any]:
        """The batch's view as the server answers it, under any profile: the engine's keys
        and the owner, group and item-count keys of the server profile's ``view_names``."""
        response = await self._get_batch(batch_id)
        try:
            view = response.json()
        except (ValueError, RecursionError) as exc:  # not JSON, or nested too deep to parse
            raise HttpApiError(response.status_code, "unexpected_answer", str(exc)) from exc
        if not isinstance(view, dict):
            raise HttpApiError(response.status_code, "unexpected_answer", "the view is not a JSON object")
        return view

    async def _get_batch(self, batch_id: str) -> httpx.Response:
        return await self._send("GET", f"/v1/batches/{_seg(batch_id)}", batch_id=batch_id)

    async def history(self, batch_id: str, *, limit: int | None = None, offset: int = 0) -> HistoryPage:
        params: dict[str, int] = {"offset": offset}
        if limit is not None:
            params["limit"] = limit
        response = await self._send(
            "GET", f"/v1/batches/{_seg(batch_id)}/history", params=params, batch_id=batch_id
        )
        return self._parse(response, HistoryPage)

    async def diagram(self, batch_id: str, *, view: str = "all") -> str:
        response = await self._send(
            "GET", f"/v1/batches/{_seg(batch_id)}/diagram", params={"view": view}, batch_id=batch_id
        )
        return self._text(response)

    async def status_page(self, batch_id: str) -> str:
        response = await self._send("GET", f"/v1/batches/{_seg(batch_id)}/status", batch_id=batch_id)
        return self._text(response)

    # -- internal -------------------------------------------------------------------------
    async def define_pipeline(
        self,
        batch_id: str,
        requested_pipeline: str,
        *,
        correlation_id: str,
        batch_metadata: Mapping[str, Any] | None = None,
    ) -> DefineResponse:
        body: dict[str, Any] = {
            "batch_id": batch_id,
            "requested_pipeline": requested_pipeline,
            "correlation_id": correlation_id,
        }
        if batch_metadata is not None:
            body["batch_metadata"] = dict(batch_metadata)
        response = await self._send(
            "POST", "/internal/v1/pipelines/define", json=body, batch_id=batch_id, internal=True
        )
        return self._parse(response, DefineResponse)

    async def record_phase_completion(
        self, batch_id: str, phase_name: str, *, success: bool, idempotency_key: str | None = None
    ) -> PhaseRecorded:
        body = {"batch_id": batch_id, "phase_name": phase_name, "success": success}
        response = await self._send(
            "POST",
            "/internal/v1/phases/complete",
            json=body,
            headers=_headers(idempotency_key, None),
            batch_id=batch_id,
            internal=True,
        )
        return self._parse(response, PhaseRecorded)

    async def healthy(self) -> bool:
        """Whether ``/healthz`` answers 200 (the store is reachable)."""
        response = await self._http.get("/healthz")
        return response.status_code == 200

    # -- plumbing -------------------------------------------------------------------------
    async def _send(
        self,
        method: str,
        path: str,
        *,
        batch_id: str | None,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        internal: bool = False,
    ) -> httpx.Response:
        sent = dict(headers or {})
        token = self._internal_token if internal else self._token
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        response = await self._http.request(method, path, json=json, params=params, headers=sent)
        if response.is_error:
            raise error_from_response(response, batch_id=batch_id)
        return response

    @staticmethod
    def _text(response: httpx.Response) -> str:
        """The text of a 200 answer: any other one that is not an error (a redirect, which the
        client does not follow, a 204 or a 304) has no view in it, and is refused rather than
        returned as an empty diagram or page."""
        if response.status_code != 200:
            detail = f"expected 200 with the view, got {response.status_code}"
            raise HttpApiError(response.status_code, "unexpected_answer", detail)
        return response.text

    @staticmethod
    def _parse(response: httpx.Response, model: type[M]) -> M:
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            raise HttpApiError(response.status_code, "unexpected_answer", str(exc)) from exc


def _seg(value: str, field: str = "path.batch_id") -> str:
    """``value`` as one URL path segment; raises :class:`InvalidMessageError` naming ``field``
    when ``value`` holds ``/``: ASGI servers decode ``%2F`` before routing, so the request
    would reach another route (``a/history``: the history of batch ``a``), never this id."""
    from urllib.parse import quote

    if "/" in value:
        raise InvalidMessageError("http", "a path id cannot contain '/'", field=field)

    # "." and ".." are dot segments a URL normalises away: send them encoded.
    return quote(value, safe="") if value.strip(".") else value.replace(".", "%2E")
