"""Operational listings (operations token): facts waiting for their batch, stalled runs.

* ``GET /v1/ops/waiting[?batch_id=&limit=]``: the early facts kept until their batch gets
  where they apply (issue 11), in arrival order, with their total count;
* ``GET /v1/ops/stalled-runs[?older_than=&limit=]``: active runs whose batch has not changed
  for more than ``older_than`` seconds (default 3600), least recently changed first, with
  the parked outbox rows of the batch.
"""

# No `from __future__ import annotations`: FastAPI must see the closures' real annotations.

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AfterValidator, BaseModel

from pipeline_state._service import PipelineService
from pipeline_state._wire import MAX_ID_LENGTH, is_id_text
from pipeline_state.ports import MAX_STALLED_AGE_SECONDS

from .handlers import COMMON_ERRORS, ApiRoute, documented
from .security import require_scopes
from .settings import HttpSettings, Scope

__all__ = [
    "ParkedRowView",
    "StalledRunView",
    "StalledRuns",
    "WaitingFactView",
    "WaitingFacts",
    "build_ops_router",
]


class WaitingFactView(BaseModel):
    event_id: str
    topic: str
    batch_id: str
    waits_for: str
    arrived_at: datetime
    seq: int
    size_bytes: int


class WaitingFacts(BaseModel):
    count: int
    facts: list[WaitingFactView]


class ParkedRowView(BaseModel):
    event_id: str
    topic: str
    attempts: int
    last_error: str | None


class StalledRunView(BaseModel):
    batch_id: str
    run_id: str
    pipeline: str
    accepted_at: datetime
    last_change_at: datetime
    active_phases: list[str]
    parked: list[ParkedRowView]


class StalledRuns(BaseModel):
    older_than_seconds: float
    runs: list[StalledRunView]


def _filter_id(value: str | None) -> str | None:
    """A batch id filter by the wire's id rule (:func:`~pipeline_state._wire.is_id_text`), as a
    path id is checked (:mod:`.ids`): a 422 before the store is asked, not an answer that
    depends on which store refuses what (NUL, control characters, separators, bidi marks)."""
    if value is not None and not is_id_text(value):
        raise ValueError(
            f"a batch id is 1 to {MAX_ID_LENGTH} characters without control, separator or bidi characters"
        )
    return value


_BatchIdFilter = Annotated[str | None, Query(max_length=MAX_ID_LENGTH), AfterValidator(_filter_id)]
"""The optional ``batch_id`` query filter."""


def build_ops_router(service: PipelineService, *, settings: HttpSettings) -> APIRouter:
    """The operational listings of ``service``'s store, behind the operations token."""
    router = APIRouter(
        route_class=ApiRoute, tags=["operations"], dependencies=require_scopes(settings, Scope.OPS)
    )

    @router.get(
        "/v1/ops/waiting",
        response_model=WaitingFacts,
        responses=documented(*COMMON_ERRORS),
        summary="Facts waiting for their batch",
    )
    async def waiting(
        batch_id: _BatchIdFilter = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> WaitingFacts:
        facts = await service.store.list_waiting(batch_id, limit=limit)
        return WaitingFacts(
            count=await service.store.count_waiting(),
            facts=[
                WaitingFactView(
                    event_id=f.event_id,
                    topic=f.topic,
                    batch_id=f.batch_id,
                    waits_for=f.waits_for,
                    arrived_at=f.arrived_at,
                    seq=f.seq,
                    size_bytes=len(f.raw),
                )
                for f in facts
            ],
        )

    @router.get(
        "/v1/ops/stalled-runs",
        response_model=StalledRuns,
        responses=documented(*COMMON_ERRORS),
        summary="Active runs without progress, oldest first",
    )
    async def stalled_runs(
        older_than: Annotated[float, Query(ge=0, le=MAX_STALLED_AGE_SECONDS)] = 3600.0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> StalledRuns:
        runs = await service.store.stalled_runs(service.clock.now(), older_than, limit=limit)
        return StalledRuns(
            older_than_seconds=older_than,
            runs=[
                StalledRunView(
                    batch_id=r.batch_id,
                    run_id=r.run_id,
                    pipeline=r.pipeline_name,
                    accepted_at=r.accepted_at,
                    last_change_at=r.last_change_at,
                    active_phases=list(r.active_phases),
                    parked=[
                        ParkedRowView(
                            event_id=p.message.event_id,
                            topic=p.message.topic,
                            attempts=p.attempts,
                            last_error=p.last_error,
                        )
                        for p in r.parked
                    ],
                )
                for r in runs
            ],
        )

    return router
