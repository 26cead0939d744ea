"""Settings of the HTTP adapter: tokens, limits and the status page's behaviour."""

from __future__ import annotations

import attrs

__all__ = ["HttpSettings"]


def _positive(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 1:
        raise ValueError(f"{attribute.name} must be at least 1, got {value}")


def _token(_: object, attribute: attrs.Attribute[str | None], value: str | None) -> None:
    if value is not None and (not value or value != value.strip()):
        raise ValueError(f"{attribute.name} must be a non-empty string without surrounding spaces")


@attrs.frozen
class HttpSettings:
    """How the API is exposed.

    ``api_token`` guards every ``/v1/*`` route and ``internal_token`` every ``/internal/*``
    route as ``Authorization: Bearer <token>``; ``None`` turns that check off (the in-memory
    demo default). ``/healthz`` is never guarded. ``public_status_page`` lets browsers load
    ``GET /v1/batches/{id}/status`` without a token (a browser cannot send one on
    navigation); the page shows batch data, so only enable it on a trusted network.

    ``max_body_bytes`` bounds request bodies (413 beyond); ``max_page_size`` bounds the
    ``limit`` of paginated routes; ``status_refresh_seconds`` is how often the status page
    refreshes itself in the browser (``0``: never).
    """

    api_token: str | None = attrs.field(default=None, validator=_token, repr=False)
    internal_token: str | None = attrs.field(default=None, validator=_token, repr=False)
    max_body_bytes: int = attrs.field(default=256 * 1024, validator=_positive)
    max_page_size: int = attrs.field(default=100, validator=_positive)
    default_page_size: int = attrs.field(default=20, validator=_positive)
    public_status_page: bool = False
    status_refresh_seconds: int = attrs.field(default=5, validator=attrs.validators.ge(0))
    title: str = "pipeline-state"

    def __attrs_post_init__(self) -> None:
        if self.default_page_size > self.max_page_size:
            raise ValueError("default_page_size must not exceed max_page_size")
