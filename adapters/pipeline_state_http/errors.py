"""Errors of the HTTP adapter and the one table that maps denial reasons to status codes.

The adapter adds four errors to the library's tree (see :mod:`pipeline_state.errors`)::

    PipelineStateError
    ├── BadCommandError
    │   └── PipelineDeniedError      a pipeline or retry request was refused (reason, detail)
    ├── HttpApiError                 an HTTP answer the client has no library error for
    │   └── UnauthorizedError            401: a missing or wrong bearer token
    ├── RefusedBeforeError           an operator request repeated (same Idempotency-Key)
    │                                after the first was refused: answered as that refusal
    └── HttpSettingsError            a setting is unusable (also a ValueError)

On the server, :class:`PipelineDeniedError` is raised by the routes and turned into the
status of :data:`DENIAL_STATUS`; on the client, every error answer is turned back into the
library error it came from (:class:`~pipeline_state.errors.BatchNotFoundError` and so on).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from pipeline_state.errors import BadCommandError, PipelineStateError

__all__ = [
    "DEFAULT_DENIAL_STATUS",
    "DENIAL_STATUS",
    "HttpApiError",
    "HttpSettingsError",
    "PipelineDeniedError",
    "RefusedBeforeError",
    "UnauthorizedError",
    "denial_status",
]

DENIAL_STATUS: Mapping[str, int] = MappingProxyType(
    {
        "batch_not_found": 404,
        "batch_not_ready": 409,
        "pipeline_already_active": 409,
        "correlation_reused": 409,
        "unknown_pipeline": 400,
        "prompt_not_attached": 400,
        "insufficient_credits": 402,
        "rate_limit_exceeded": 429,
    }
)
"""HTTP status of each admission denial reason; any other reason gets :data:`DEFAULT_DENIAL_STATUS`."""

DEFAULT_DENIAL_STATUS = 409


def denial_status(reason: str) -> int:
    """The HTTP status a denial with ``reason`` is answered with."""
    return DENIAL_STATUS.get(reason, DEFAULT_DENIAL_STATUS)


class PipelineDeniedError(BadCommandError):
    """A pipeline (or phase retry) request was refused by admission; no state changed.
    ``correlation_id``: the one the request was decided (and its denial published) under,
    which the answer echoes; ``None``: the request's own."""

    def __init__(
        self, reason: str, detail: str, *, batch_id: str | None = None, correlation_id: str | None = None
    ) -> None:
        self.reason = reason
        self.detail = detail
        self.correlation_id = correlation_id
        super().__init__(f"request denied: {reason} ({detail})", batch_id=batch_id)

    @property
    def status_code(self) -> int:
        return denial_status(self.reason)


class HttpApiError(PipelineStateError):
    """An error answer that maps to no library error (the raw status and body are kept)."""

    def __init__(self, status_code: int, error: str, detail: str, *, field: str | None = None) -> None:
        self.status_code = status_code
        self.error = error
        self.detail = detail
        self.field = field
        at = f" at {field!r}" if field else ""
        super().__init__(f"HTTP {status_code} {error}{at}: {detail}")


class UnauthorizedError(HttpApiError):
    """The bearer token was missing or wrong."""


class RefusedBeforeError(PipelineStateError):
    """An operator request repeated with the Idempotency-Key of one the batch's state refused:
    the core recorded the refusal (``rejected:<error>``) and does not decide the repeat, so
    it is answered with the first answer's status and code (of the library error named
    ``original``) and what that error said was refused (``context``: an illegal
    transition's lifecycle, state and trigger, say), never applied to a state the first
    request did not see."""

    def __init__(
        self, original: str, *, batch_id: str | None = None, context: Mapping[str, str] | None = None
    ) -> None:
        self.original = original
        self.batch_id = batch_id
        self.context = dict(context or {})
        super().__init__(
            f"this request was refused when first made ({original}); send a new key to try again"
        )


class HttpSettingsError(PipelineStateError, ValueError):
    """A setting of the HTTP adapter (a ``PIPELINE_STATE_HTTP_*`` variable, a token file, or
    a value given to :class:`~pipeline_state_http.settings.HttpSettings`) is unusable; the
    message names it."""
