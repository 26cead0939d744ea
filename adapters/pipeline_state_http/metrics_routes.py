"""``GET /metrics``: the Prometheus text format of the service's metrics.

The app only serves what a :class:`MetricsSource` renders (``serve`` passes its
:class:`~pipeline_state_kafka.metrics.ServiceMetrics`), so this adapter needs no metrics
library of its own. The route is an operational one: it takes the operations token, like
the other operational routes, unless :attr:`HttpSettings.public_metrics
<pipeline_state_http.settings.HttpSettings.public_metrics>` opens it (for a scraper on a
trusted network that cannot send a bearer token; Prometheus can, with
``authorization: {credentials_file: ...}`` in its scrape configuration).
"""

# No `from __future__ import annotations`: FastAPI must see the closures' real annotations.

from typing import Protocol, runtime_checkable

from fastapi import APIRouter, Response

from .handlers import ApiRoute
from .security import require_scopes
from .settings import HttpSettings, Scope

__all__ = ["MetricsSource", "build_metrics_router"]


@runtime_checkable
class MetricsSource(Protocol):
    """What ``/metrics`` serves: a text exposition and its media type."""

    content_type: str

    async def exposition(self) -> bytes:
        """The metrics in the Prometheus text format."""
        ...


def build_metrics_router(source: MetricsSource, *, settings: HttpSettings) -> APIRouter:
    """``GET /metrics`` for ``source``, behind the operations token unless public."""
    dependencies = [] if settings.public_metrics else require_scopes(settings, Scope.OPS)
    router = APIRouter(route_class=ApiRoute, tags=["operations"], dependencies=dependencies)

    @router.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(await source.exposition(), media_type=source.content_type)

    return router
