"""HTTP adapter: an ASGI (FastAPI) router, a typed httpx client and a live status page.

Shaped like the other adapters: :class:`Settings` (the ``PIPELINE_STATE_HTTP_*`` variables),
:func:`open` (the app served while an ``async with`` block runs), the errors of
:mod:`~pipeline_state_http.errors`, and this curated ``__all__``.

>>> from pipeline_state import InMemoryStore, PipelineService
>>> from pipeline_state_http import HttpSettings, create_app
>>> app = create_app(PipelineService(InMemoryStore()), settings=HttpSettings())
>>> sorted(r.path for r in app.routes if r.path.startswith("/internal"))
['/internal/v1/phases/complete', '/internal/v1/pipelines/define']
"""

from __future__ import annotations

# Re-exported for existing code (``name as name``), outside the curated list below.
from .app import create_app, install
from .client import PipelineStateClient
from .client import error_from_response as error_from_response
from .errors import DEFAULT_DENIAL_STATUS as DEFAULT_DENIAL_STATUS
from .errors import DENIAL_STATUS as DENIAL_STATUS
from .errors import (
    HttpApiError,
    HttpSettingsError,
    PipelineDeniedError,
    UnauthorizedError,
)
from .errors import denial_status as denial_status
from .resources import open
from .routes import build_router as build_router
from .schemas import BatchSnapshot as BatchSnapshot
from .schemas import CancelAccepted as CancelAccepted
from .schemas import DefineResponse as DefineResponse
from .schemas import DenialBody as DenialBody
from .schemas import ErrorBody as ErrorBody
from .schemas import Health as Health
from .schemas import HistoryPage as HistoryPage
from .schemas import PhaseRecorded as PhaseRecorded
from .schemas import PipelineAccepted as PipelineAccepted
from .schemas import PreflightResult as PreflightResult
from .schemas import RegisterAccepted as RegisterAccepted
from .server import HttpServer
from .settings import HttpSettings, Settings

# What a user of the adapter imports (the README's "Public names" lists the same).
__all__ = [
    "HttpApiError",
    "HttpServer",
    "HttpSettings",
    "HttpSettingsError",
    "PipelineDeniedError",
    "PipelineStateClient",
    "Settings",
    "UnauthorizedError",
    "create_app",
    "install",
    "open",
]
