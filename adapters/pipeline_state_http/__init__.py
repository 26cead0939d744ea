"""HTTP adapter: an ASGI (FastAPI) router, a typed httpx client and a live status page.

>>> from pipeline_state import InMemoryStore, PipelineService
>>> from pipeline_state_http import HttpSettings, create_app
>>> app = create_app(PipelineService(InMemoryStore()), settings=HttpSettings())
>>> sorted(r.path for r in app.routes if r.path.startswith("/internal"))
['/internal/v1/phases/complete', '/internal/v1/pipelines/define']
"""

from __future__ import annotations

from .app import create_app, install
from .client import PipelineStateClient, error_from_response
from .errors import (
    DEFAULT_DENIAL_STATUS,
    DENIAL_STATUS,
    HttpApiError,
    PipelineDeniedError,
    UnauthorizedError,
    denial_status,
)
from .routes import build_router
from .schemas import (
    BatchSnapshot,
    CancelAccepted,
    DefineResponse,
    DenialBody,
    ErrorBody,
    Health,
    HistoryPage,
    PhaseRecorded,
    PipelineAccepted,
    PreflightResult,
    RegisterAccepted,
)
from .settings import HttpSettings

__all__ = [
    "DEFAULT_DENIAL_STATUS",
    "DENIAL_STATUS",
    "BatchSnapshot",
    "CancelAccepted",
    "DefineResponse",
    "DenialBody",
    "ErrorBody",
    "Health",
    "HistoryPage",
    "HttpApiError",
    "HttpSettings",
    "PhaseRecorded",
    "PipelineAccepted",
    "PipelineDeniedError",
    "PipelineStateClient",
    "PreflightResult",
    "RegisterAccepted",
    "UnauthorizedError",
    "build_router",
    "create_app",
    "denial_status",
    "error_from_response",
    "install",
]
