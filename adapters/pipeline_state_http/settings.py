"""Settings of the HTTP adapter: tokens, limits, timeouts and the status page's behaviour.

:class:`HttpSettings` is what an app is built with (:func:`~pipeline_state_http.app.create_app`),
given in code. :class:`Settings` is the pydantic-settings model of the adapter's
``PIPELINE_STATE_HTTP_*`` variables (the tokens, each also from a ``_FILE``, and the limits);
:meth:`Settings.http_settings` turns it into :class:`HttpSettings`, and
:meth:`HttpSettings.from_environ` does both. The package README's table of variables is
generated from :class:`Settings`.
"""

from __future__ import annotations

import enum
import ipaddress
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar

import attrs
from pydantic import BeforeValidator, Field, model_validator

from pipeline_state._flags import parse_flag
from pipeline_state._settings import EnvironmentSettings

from .errors import HttpSettingsError

__all__ = [
    "ENVIRONMENT",
    "TOKEN_VARIABLES",
    "HttpSettings",
    "Scope",
    "Settings",
    "is_bearer_token",
    "is_loopback",
    "read_token_file",
]


class Scope(enum.StrEnum):
    """Who a route is for; each scope has its own bearer token."""

    API = "api"
    """The public API: ``/v1/*``, and the OpenAPI schema and docs pages."""
    INTERNAL = "internal"
    """Calls from other services of the platform: ``/internal/*``."""
    OPS = "ops"
    """Operators and monitoring: the operational views and listings."""


TOKEN_VARIABLES: Mapping[Scope, str] = {
    Scope.API: "PIPELINE_STATE_HTTP_API_TOKEN",
    Scope.INTERNAL: "PIPELINE_STATE_HTTP_INTERNAL_TOKEN",
    Scope.OPS: "PIPELINE_STATE_HTTP_OPS_TOKEN",
}
"""The environment variable of each scope's token; ``<variable>_FILE`` names a file holding it."""

ENVIRONMENT: Mapping[str, str] = {  # the same names as the fields of Settings, upper-cased
    "PIPELINE_STATE_HTTP_HEADER_TIMEOUT_SECONDS": "header_timeout_seconds",
    "PIPELINE_STATE_HTTP_BODY_TIMEOUT_SECONDS": "body_timeout_seconds",
    "PIPELINE_STATE_HTTP_MAX_BODY_BYTES": "max_body_bytes",
    "PIPELINE_STATE_HTTP_PUBLIC_METRICS": "public_metrics",
}
"""The environment variables of :meth:`HttpSettings.from_environ` besides the tokens."""


MAX_REFRESH_SECONDS = 2_147_483
"""The longest refresh period of the status page: a browser's timer holds at most 2**31 - 1 ms,
and a longer one fires at once (the page would reload itself in a loop)."""

_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
"""RFC 6750 ``b64token``: the characters a bearer token may carry in an HTTP header."""

BEARER_TOKEN_RULE = "ASCII letters, digits and - . _ ~ + /, then = padding (RFC 6750)"
"""The characters :func:`is_bearer_token` takes, said for error messages."""


def is_bearer_token(value: str) -> bool:
    """Whether ``value`` can travel as ``Authorization: Bearer <value>`` (RFC 6750
    ``b64token``: no spaces, control characters or non-ASCII letters)."""
    return _TOKEN.fullmatch(value) is not None


def _positive(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    # ``not value > 0`` also refuses NaN (``nan <= 0`` is False: a NaN timeout fired at
    # once); an infinite limit or timeout is no limit. Compared, not ``math.isfinite``,
    # which raises on an int too large for a float.
    if not value > 0 or value == math.inf:
        raise ValueError(f"{attribute.name} must be positive and finite, got {value}")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address, or ``localhost``) only accepts local connections."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def _token(_: object, attribute: attrs.Attribute[str | None], value: str | None) -> None:
    if value is not None and (not value or value != value.strip()):
        raise ValueError(f"{attribute.name} must be a non-empty string without surrounding spaces")
    if value is not None and not is_bearer_token(value):
        raise ValueError(
            f"{attribute.name} must be made of the characters a bearer token can carry in a header "
            f"({BEARER_TOKEN_RULE})"
        )


MAX_TOKEN_FILE_BYTES = 65_536
"""The largest token file read; a bearer token is a few hundred bytes at most."""


def read_token_file(path: str | os.PathLike[str], *, variable: str = "token file") -> str:
    """The token stored in the file at ``path`` (one trailing newline removed); raises
    :class:`ValueError` when the file cannot be read or holds no token."""
    try:
        with Path(path).open("rb") as file:
            data = file.read(MAX_TOKEN_FILE_BYTES + 1)  # a path to a device or log never ends
        if len(data) > MAX_TOKEN_FILE_BYTES:
            raise ValueError(
                f"{variable}: {str(path)!r} holds more than {MAX_TOKEN_FILE_BYTES} bytes: not a token"
            )
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{variable}: cannot read {str(path)!r}: {exc}") from exc
    token = text.removesuffix("\n").removesuffix("\r")
    if not token.strip():
        raise ValueError(f"{variable}: {str(path)!r} is empty")
    if token != token.strip():
        raise ValueError(f"{variable}: the token in {str(path)!r} has surrounding spaces")
    return token


@attrs.frozen
class HttpSettings:
    """How the API is exposed.

    Access control: every route but ``/healthz`` needs ``Authorization: Bearer <token>`` with
    the token of its :class:`Scope`: ``api_token`` for ``/v1/*`` and the OpenAPI schema and
    docs pages, ``internal_token`` for ``/internal/*``, ``ops_token`` for the operational
    routes (the diagram and status views also take the API token). A scope whose token is
    ``None`` is **closed**: its routes answer 401 to everyone. ``insecure_no_auth=True``
    opens the scopes that have no token instead (local development and tests only).
    ``public_status_page`` lets browsers load ``GET /v1/batches/{id}/status`` without a token
    (a browser cannot send one on navigation); the page shows batch data, so only enable it
    on a trusted network. ``public_metrics`` serves ``GET /metrics`` without a token (it
    takes the operations token otherwise), for a scraper that cannot send one.

    Limits: ``max_body_bytes`` bounds request bodies (413 beyond); a body still incomplete
    ``body_timeout_seconds`` after its headers answers 408; a connection that has not sent a
    complete request head ``header_timeout_seconds`` after it opened (or after the previous
    answer) is closed (applied by the server, see :mod:`pipeline_state_http.server`).
    ``max_page_size`` bounds the ``limit`` of paginated routes; ``status_refresh_seconds``
    is how often the status page refreshes itself in the browser (``0``: never).
    """

    api_token: str | None = attrs.field(default=None, validator=_token, repr=False)
    internal_token: str | None = attrs.field(default=None, validator=_token, repr=False)
    ops_token: str | None = attrs.field(default=None, validator=_token, repr=False)
    insecure_no_auth: bool = False
    max_body_bytes: int = attrs.field(default=256 * 1024, validator=_positive)
    header_timeout_seconds: float = attrs.field(default=10.0, validator=_positive)
    body_timeout_seconds: float = attrs.field(default=30.0, validator=_positive)
    max_page_size: int = attrs.field(default=100, validator=_positive)
    default_page_size: int = attrs.field(default=20, validator=_positive)
    public_status_page: bool = False
    public_metrics: bool = False
    status_refresh_seconds: int = attrs.field(
        default=5, validator=[attrs.validators.ge(0), attrs.validators.le(MAX_REFRESH_SECONDS)]
    )
    title: str = "pipeline-state"

    def __attrs_post_init__(self) -> None:
        if self.default_page_size > self.max_page_size:
            raise ValueError("default_page_size must not exceed max_page_size")

    def token(self, scope: Scope) -> str | None:
        """The token of ``scope`` (``None``: not configured)."""
        return {Scope.API: self.api_token, Scope.INTERNAL: self.internal_token, Scope.OPS: self.ops_token}[
            scope
        ]

    def shared_tokens(self) -> tuple[tuple[Scope, ...], ...]:
        """The groups of scopes configured with one token between them: each of those scopes'
        routes opens to the holder of any of the others' (the public API token would record
        phase completions on ``/internal/*``, say)."""
        by_token: dict[str, list[Scope]] = {}
        for scope in Scope:
            token = self.token(scope)
            if token is not None:
                by_token.setdefault(token, []).append(scope)
        return tuple(tuple(scopes) for scopes in by_token.values() if len(scopes) > 1)

    def open_scopes(self) -> tuple[Scope, ...]:
        """The scopes anyone may use: those without a token, in insecure mode only."""
        if not self.insecure_no_auth:
            return ()
        return tuple(scope for scope in Scope if self.token(scope) is None)

    def check_host(self, host: str) -> None:
        """Refuse to serve these settings on ``host`` when a scope is open (insecure mode
        without its token) and ``host`` is not a loopback address: the scope's routes, writes
        included, would be open to the network. Raises
        :class:`~pipeline_state_http.errors.HttpSettingsError` (a :class:`ValueError`)."""
        opened = self.open_scopes()
        if opened and not is_loopback(host):
            names = ", ".join(scope.value for scope in opened)
            raise HttpSettingsError(
                f"insecure_no_auth is refused on {host!r}: the {names} routes would be open to anyone, "
                "so only on a loopback address (127.0.0.1, ::1, localhost); set the tokens to serve "
                "on other addresses"
            )

    def closed_scopes(self) -> tuple[Scope, ...]:
        """The scopes no one may use: those without a token, outside insecure mode."""
        if self.insecure_no_auth:
            return ()
        return tuple(scope for scope in Scope if self.token(scope) is None)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> HttpSettings:
        """Settings from ``PIPELINE_STATE_HTTP_*`` variables (default: ``os.environ``, read by
        :class:`Settings`), then ``overrides``. Each token comes from its variable of
        :data:`TOKEN_VARIABLES` or from the file named by ``<variable>_FILE``; raises
        :class:`~pipeline_state_http.errors.HttpSettingsError` (a :class:`ValueError`) on an
        unreadable or empty file, on both forms set at once, or on a value that does not
        parse."""
        return Settings.from_environ(environ).http_settings(**overrides)


def token_from_environ(environ: Mapping[str, str], variable: str) -> str | None:
    """The token in ``variable``, or in the file named by ``<variable>_FILE``; ``None`` when
    neither is set. Raises :class:`ValueError` as :meth:`HttpSettings.from_environ` does."""
    value = environ.get(variable, "")
    path = environ.get(f"{variable}_FILE", "")
    if value and path:
        raise ValueError(f"set {variable} or {variable}_FILE, not both")
    if path:
        return _header_token(read_token_file(path, variable=f"{variable}_FILE"), f"{variable}_FILE")
    if value:
        if value != value.strip():
            raise ValueError(f"{variable}: the token has surrounding spaces")
        return _header_token(value, variable)
    return None


def _header_token(token: str, source: str) -> str:
    """``token`` if a header can carry it (see :func:`_token`), else a ``ValueError`` naming
    ``source``, the variable or file variable it came from, never the token itself."""
    if _TOKEN.fullmatch(token) is None:
        raise ValueError(
            f"{source}: the token must be made of the characters a bearer token can carry in a "
            "header (RFC 6750: ASCII letters, digits and - . _ ~ + /, then = padding)"
        )
    return token


def _flag(value: Any) -> Any:
    return parse_flag(value) if isinstance(value, str) else value


def _token_field(scope: Scope, meaning: str) -> Any:
    return Field(
        default=None, repr=False, description=f"bearer token of {meaning}; unset: the scope is closed"
    )


def _file_field(scope: Scope) -> Any:
    return Field(
        default=None,
        description=f"a file holding the `{scope.value}` token instead (one trailing newline removed; an "
        "unreadable or empty file, or a token set both ways, is refused)",
    )


class Settings(EnvironmentSettings):
    """The HTTP adapter's ``PIPELINE_STATE_HTTP_*`` variables (see :class:`HttpSettings` for
    what each setting does, and :meth:`http_settings`)."""

    error: ClassVar[type[Exception]] = HttpSettingsError

    http_api_token: str | None = _token_field(Scope.API, "the public API: `/v1/*`, `/openapi.json`, `/docs`")
    http_api_token_file: str | None = _file_field(Scope.API)
    http_internal_token: str | None = _token_field(
        Scope.INTERNAL, "`/internal/*` (calls from other services)"
    )
    http_internal_token_file: str | None = _file_field(Scope.INTERNAL)
    http_ops_token: str | None = _token_field(
        Scope.OPS, "the operations routes (the diagram and status views also take the API token)"
    )
    http_ops_token_file: str | None = _file_field(Scope.OPS)
    http_header_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        allow_inf_nan=False,
        description="a connection whose request head is not complete this long after it opened (or "
        "after the previous answer) is closed",
    )
    http_body_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        allow_inf_nan=False,
        description="a request body not complete this long after its head answers 408",
    )
    http_max_body_bytes: int = Field(default=256 * 1024, gt=0, description="larger request bodies answer 413")
    http_public_metrics: Annotated[bool, BeforeValidator(_flag)] = Field(
        default=False,
        description="`1` serves `/metrics` without a token (otherwise it takes the operations token)",
    )

    @model_validator(mode="after")
    def _tokens_usable(self) -> Settings:
        for scope in Scope:
            self._token(scope)  # a token with spaces, both forms, an unreadable file: refused here
        return self

    def _token(self, scope: Scope) -> str | None:
        variable = TOKEN_VARIABLES[scope]
        value: str | None = getattr(self, f"http_{scope.value}_token")
        path: str | None = getattr(self, f"http_{scope.value}_token_file")
        return token_from_environ({variable: value or "", f"{variable}_FILE": path or ""}, variable)

    def http_settings(self, **overrides: Any) -> HttpSettings:
        """The :class:`HttpSettings` of these variables, with ``overrides`` (its field names)."""
        values: dict[str, Any] = {
            "header_timeout_seconds": self.http_header_timeout_seconds,
            "body_timeout_seconds": self.http_body_timeout_seconds,
            "max_body_bytes": self.http_max_body_bytes,
            "public_metrics": self.http_public_metrics,
        }
        for scope in Scope:
            token = self._token(scope)
            if token is not None:
                values[f"{scope.value}_token"] = token
        try:
            return HttpSettings(**(values | overrides))
        except ValueError as exc:
            raise HttpSettingsError(str(exc)) from exc
