"""Bearer-token checks and the request body size limit.

Tokens are compared in constant time (on their SHA-256 digests, so neither content nor
length leaks through timing). The body limit is a small ASGI middleware: it refuses a
declared ``Content-Length`` over the limit at once, and otherwise reads the body up to the
limit before the application sees it, so a chunked upload cannot get past it either.
"""

# No `from __future__ import annotations`: FastAPI must see the closure's real annotation.

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import HTTPException, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .handlers import error_response

__all__ = ["BodyLimitMiddleware", "bearer_guard", "tokens_match"]


def tokens_match(supplied: str, expected: str) -> bool:
    """Whether ``supplied`` equals ``expected``, in time independent of both."""
    a = hashlib.sha256(supplied.encode("utf-8", "surrogatepass")).digest()
    b = hashlib.sha256(expected.encode("utf-8", "surrogatepass")).digest()
    return hmac.compare_digest(a, b)


Guard = Callable[..., Awaitable[None]]


def bearer_guard(token: str | None, *, scheme_name: str, realm: str) -> Guard | None:
    """A dependency that answers 401 unless ``Authorization: Bearer <token>`` is sent;
    ``None`` when ``token`` is ``None`` (no check, and no security scheme in the schema)."""
    if token is None:
        return None
    scheme = HTTPBearer(auto_error=False, scheme_name=scheme_name, description=f"bearer token for {realm}")
    challenge = {"WWW-Authenticate": f'Bearer realm="{realm}"'}

    async def require_token(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(scheme)],
    ) -> None:
        if credentials is None or not tokens_match(credentials.credentials, token):
            raise HTTPException(401, "missing or wrong bearer token", headers=challenge)

    return require_token


class BodyLimitMiddleware:
    """Answers 413 to requests under ``prefixes`` whose body is larger than ``max_bytes``."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, prefixes: tuple[str, ...] = ("/",)) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.prefixes = prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith(self.prefixes):
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
        while True:
            message = await receive()
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
    await response(scope, receive, send)
