"""Bearer-token scopes, and the request body's size and time limits.

Every route but ``/healthz`` belongs to one or more :class:`~pipeline_state_http.settings.Scope`
and depends on :func:`require_scopes`: the request must carry ``Authorization: Bearer
<token>`` with the token of one of them. A scope without a configured token is closed (every
request answers 401) unless the settings ask for insecure mode, which opens it. Tokens are
compared in constant time with :func:`hmac.compare_digest` (on their SHA-256 digests, so
neither content nor length leaks through timing), against every accepted token in turn.

To put a router's routes in a scope::

    router = APIRouter(route_class=ApiRoute, dependencies=require_scopes(settings, Scope.OPS))

The check runs before the request's body is read: :class:`~pipeline_state_http.handlers.ApiRoute`
calls the route's guards (:func:`route_guards`) first, since FastAPI parses a JSON body before
it solves a route's dependencies (a malformed body would answer 422 to anyone, token or not).

The body limit is a small ASGI middleware: it refuses a declared ``Content-Length`` over the
limit at once, otherwise reads the body up to the limit before the application sees it (so a
chunked upload cannot get past it either), and answers 408 when the body is not complete
within the body timeout.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fastapi import HTTPException, Security, params
from fastapi.security import HTTPBearer
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .handlers import error_response
from .settings import HttpSettings
from .settings import Scope as AccessScope

__all__ = [
    "SCHEMES",
    "BodyLimitMiddleware",
    "Guard",
    "guard_scopes",
    "require_scopes",
    "route_guards",
    "route_path",
    "route_table",
    "scope_guard",
    "tokens_match",
]

log = logging.getLogger("pipeline_state_http")

SCHEMES: dict[AccessScope, str] = {
    AccessScope.API: "apiToken",
    AccessScope.INTERNAL: "internalToken",
    AccessScope.OPS: "opsToken",
}
"""The OpenAPI security scheme of each scope."""


def tokens_match(supplied: str, expected: str) -> bool:
    """Whether ``supplied`` equals ``expected``, in time independent of both."""
    a = hashlib.sha256(supplied.encode("utf-8", "surrogatepass")).digest()
    b = hashlib.sha256(expected.encode("utf-8", "surrogatepass")).digest()
    return hmac.compare_digest(a, b)


Guard = Callable[..., Awaitable[None]]


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, credentials = header.partition(" ")
    credentials = credentials.strip()
    return credentials if scheme.lower() == "bearer" and credentials else None


def _refusing_guard(tokens: Sequence[str], realm: str, *, closed: bool) -> Guard:
    challenge = {"WWW-Authenticate": f'Bearer realm="{realm}"'}
    detail = "no token is configured for this route" if closed else "missing or wrong bearer token"

    async def require_token(request: Request) -> None:
        supplied = _bearer(request.headers.get("authorization"))
        matched = False
        for token in tokens:  # every token is compared, whichever matches
            matched |= supplied is not None and tokens_match(supplied, token)
        if not matched:
            raise HTTPException(401, detail, headers=challenge)

    return require_token


def scope_guard(settings: HttpSettings, *scopes: AccessScope) -> Guard | None:
    """The dependency that lets a request through with the token of any of ``scopes``;
    ``None`` when one of them is open (insecure mode without its token): no check at all."""
    if not scopes:
        raise ValueError("a guard needs at least one scope")
    if any(scope in settings.open_scopes() for scope in scopes):
        return None
    tokens = [token for token in (settings.token(scope) for scope in scopes) if token is not None]
    realm = "pipeline-state " + " or ".join(scope.value for scope in scopes)
    guard = _refusing_guard(tokens, realm, closed=not tokens)
    guard.scopes = tuple(scopes)  # type: ignore[attr-defined]  # read by guard_scopes()
    return guard


def require_scopes(settings: HttpSettings, *scopes: AccessScope) -> list[params.Depends]:
    """The ``dependencies=`` of a route or router in ``scopes``: the token check, plus the
    scopes' bearer schemes in the OpenAPI schema (any one of them is enough). Empty when
    the route is open (insecure mode)."""
    guard = scope_guard(settings, *scopes)
    if guard is None:
        return []
    schemes = [
        Security(HTTPBearer(auto_error=False, scheme_name=SCHEMES[s], description=f"the {s.value} token"))
        for s in scopes
    ]
    return [params.Depends(guard), *schemes]


def route_table(app: Any) -> list[tuple[str, str, frozenset[AccessScope]]]:
    """Every ``(method, path, scopes)`` that ``app`` (a FastAPI app or router) serves, the
    routes of included routers too; ``scopes`` is empty for an open route."""
    routes: Any = app.routes
    try:
        from fastapi.routing import iter_route_contexts  # FastAPI >= 0.140 includes lazily

        routes = list(iter_route_contexts(routes))
    except ImportError:  # pragma: no cover - older FastAPI: app.routes is already flat
        pass
    return sorted(
        (method, str(route.path), guard_scopes(getattr(route, "dependencies", ())))
        for route in routes
        for method in sorted(getattr(route, "methods", None) or ())
    )


def route_guards(dependencies: Sequence[Any]) -> list[Guard]:
    """The token checks (made by :func:`scope_guard`) among a route's ``dependencies`` (its
    ``route.dependencies``); empty for an unguarded route."""
    guards = (getattr(dependency, "dependency", None) for dependency in dependencies)
    return [guard for guard in guards if guard is not None and hasattr(guard, "scopes")]


def guard_scopes(dependencies: Sequence[Any]) -> frozenset[AccessScope]:
    """The scopes whose tokens open a route with these ``dependencies`` (its
    ``route.dependencies``); empty for an unguarded route."""
    found: set[AccessScope] = set()
    for guard in route_guards(dependencies):
        found.update(getattr(guard, "scopes", ()))
    return frozenset(found)


class BodyLimitMiddleware:
    """Answers 413 to requests under ``prefixes`` whose body is larger than ``max_bytes``,
    and 408 to those whose body is not complete ``timeout`` seconds after it began."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        prefixes: tuple[str, ...] = ("/",),
        timeout: float | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.prefixes = prefixes
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not route_path(scope).startswith(self.prefixes):
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared == -1:
            await _refuse(scope, receive, send, 400, "invalid Content-Length header")
            return
        if declared is not None and declared > self.max_bytes:
            await _refuse(scope, receive, send, 413, f"request body over {self.max_bytes} bytes")
            return
        chunks: list[bytes] = []
        total = 0
        deadline = None if self.timeout is None else asyncio.get_running_loop().time() + self.timeout
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                log.info("request body not complete after %ss: answered 408", self.timeout)
                await _refuse(scope, receive, send, 408, f"request body not received within {self.timeout} s")
                return
            if message["type"] != "http.request":
                return  # the client went away before sending its body
            body = message.get("body", b"")
            total += len(body)
            if total > self.max_bytes:
                await _refuse(scope, receive, send, 413, f"request body over {self.max_bytes} bytes")
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        whole = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": whole, "more_body": False}

        await self.app(scope, replay, send)


def route_path(scope: Scope) -> str:
    """The path the app's routes match: ``scope["path"]`` without the ``root_path`` an ASGI
    server (``uvicorn --root-path``) or a parent app's mount put before it."""
    path = str(scope.get("path", ""))
    root = str(scope.get("root_path", ""))
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("/", ""):
        return path[len(root) :]
    return path


def _content_length(scope: Scope) -> int | None:
    """The declared length; ``None`` when absent and ``-1`` when unreadable."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return -1
            return length if length >= 0 else -1
    return None


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, detail: str) -> None:
    response = error_response(HTTPException(status, detail))
    response.headers["Connection"] = "close"
    response.headers["X-Content-Type-Options"] = "nosniff"
    await response(scope, receive, send)
