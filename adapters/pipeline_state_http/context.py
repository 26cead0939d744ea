"""Per-request identity: the correlation id and the idempotent event id.

Every mutating route depends on :func:`request_context`. Its event id is the inbox key the
core deduplicates on: with an ``Idempotency-Key`` header it is derived from the method, the
path, the key and the SHA-256 of the body, so the same key and body reach the same inbox
entry (no second effect); without one it is a fresh UUID. The correlation id comes from
``X-Correlation-ID`` (a UUID), else is derived from the event id when a key is given (so
a replay answers with the same id), else is a new UUID; it is echoed in the answer's
``X-Correlation-ID`` header.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Annotated

import attrs
from fastapi import Header
from starlette.requests import Request

from pipeline_state._decide import derive_id

from .security import route_path

__all__ = ["RequestContext", "correlation_only", "event_id_for", "request_context"]


@attrs.frozen
class RequestContext:
    """Identity of one mutating request."""

    event_id: str
    correlation_id: str
    idempotency_key: str | None
    correlation_supplied: bool


def event_id_for(method: str, path: str, key: str, body: bytes) -> str:
    """The deterministic event id of an idempotent request."""
    return derive_id("http", method.upper(), path, key, hashlib.sha256(body).hexdigest())


CorrelationHeader = Annotated[
    uuid.UUID | None,
    Header(alias="X-Correlation-ID", description="a UUID; a new one is made when absent"),
]
IdempotencyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="the same key and body give the same answer without a second effect",
    ),
]


async def request_context(
    request: Request, x_correlation_id: CorrelationHeader = None, idempotency_key: IdempotencyHeader = None
) -> RequestContext:
    """The event id and correlation id of a mutating request."""
    if idempotency_key is not None:
        body = await request.body()
        # The path the routes match: the same resource gets the same id under any root path.
        event_id = event_id_for(request.method, route_path(request.scope), idempotency_key, body)
    else:
        event_id = str(uuid.uuid4())
    if x_correlation_id is not None:
        correlation = str(x_correlation_id)
    elif idempotency_key is not None:
        correlation = derive_id(event_id, "correlation")
    else:
        correlation = str(uuid.uuid4())
    request.state.correlation_id = correlation
    return RequestContext(event_id, correlation, idempotency_key, x_correlation_id is not None)


async def correlation_only(request: Request, x_correlation_id: CorrelationHeader = None) -> str:
    """The correlation id of a read-only request (echoed, or new)."""
    correlation = str(x_correlation_id or uuid.uuid4())
    request.state.correlation_id = correlation
    return correlation
