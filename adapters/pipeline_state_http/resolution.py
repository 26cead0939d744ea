"""Questions answered without changing anything: preflight and the conductor's define call.

Both run the core's own :func:`~pipeline_state._decide.decide` on the loaded state with a
throw-away command and read the :class:`~pipeline_state._decide.Decision` without
committing it, so they apply exactly the admission checks, guards, resolution and pruning
a real request would get at this moment.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from pipeline_state._commands import Command
from pipeline_state._decide import Decision, decide
from pipeline_state._model import BatchState
from pipeline_state._service import PipelineService
from pipeline_state.errors import BatchNotFoundError
from pipeline_state.profiles.huleedu import HULEEDU_INBOUND
from pipeline_state.profiles.huleedu.events import ClientBatchPipelineRequestV1, parse_payload

from .errors import PipelineDeniedError
from .replay import decided_run
from .schemas import (
    AdmissionView,
    AnalysisSummary,
    DefineRequest,
    DefineResponse,
    PreflightBody,
    PreflightResult,
)

__all__ = ["define_pipeline", "dry_run", "preflight"]


def dry_run(
    service: PipelineService,
    state: BatchState | None,
    batch_id: str,
    pipeline: str,
    *,
    user_id: str | None,
    prompt_payload: Mapping[str, Any] | None,
    correlation_id: str,
) -> Decision:
    """What a request for ``pipeline`` would decide now; nothing is committed."""
    user = user_id or (state.owner if state is not None else "anonymous")
    data = {
        "batch_id": batch_id,
        "requested_pipeline": pipeline,
        "client_correlation_id": correlation_id,
        "user_id": user,
        "prompt_payload": None if prompt_payload is None else dict(prompt_payload),
    }
    payload = parse_payload("http", data, model=ClientBatchPipelineRequestV1)
    # Read as the engine's input (as Operations does), so any profile's service answers.
    command = Command(HULEEDU_INBOUND.decode(payload), str(uuid.uuid4()), correlation_id)
    return decide(state, command, profile=service.profile, now=service.clock.now())


async def preflight(
    service: PipelineService, batch_id: str, pipeline: str, body: PreflightBody, correlation_id: str
) -> PreflightResult:
    """The plan a request would get, or the denial it would get (raised)."""
    state = await service.store.load(batch_id)
    decision = dry_run(
        service,
        state,
        batch_id,
        pipeline,
        user_id=body.user_id,
        prompt_payload=body.prompt_payload,
        correlation_id=correlation_id,
    )
    if decision.denial is not None:
        raise PipelineDeniedError(decision.denial.reason, decision.denial.detail, batch_id=batch_id)
    run = decided_run(decision)
    assert run is not None, "an accepted request always starts a run"
    return PreflightResult(resolved_pipeline=[p.name for p in run.phases], skipped_phases=list(run.pruned))


async def define_pipeline(service: PipelineService, request: DefineRequest) -> DefineResponse:
    """Resolve ``requested_pipeline`` for the batch: the steps to run after pruning those an
    earlier run completed, like the original conductor service did, plus what admission
    would say now. Unknown batch: 404; unknown pipeline: the ``unknown_pipeline`` denial."""
    state = await service.store.load(request.batch_id)
    if state is None:
        raise BatchNotFoundError(request.batch_id)
    catalog = service.profile.catalog
    if request.requested_pipeline not in catalog:
        detail = f"no pipeline named {request.requested_pipeline!r}"
        raise PipelineDeniedError("unknown_pipeline", detail, batch_id=request.batch_id)
    recorded = state.past.recorded_outputs()
    plan = catalog.plan(request.requested_pipeline, recorded.keys())
    metadata = request.batch_metadata or {}
    prompt = metadata.get("prompt_payload")
    correlation = str(request.correlation_id)
    decision = dry_run(
        service,
        state,
        request.batch_id,
        request.requested_pipeline,
        user_id=metadata.get("user_id") if isinstance(metadata.get("user_id"), str) else None,
        prompt_payload=prompt if isinstance(prompt, dict) else None,
        correlation_id=correlation,
    )
    denial = decision.denial
    admission = AdmissionView(
        allowed=denial is None,
        denial_reason=None if denial is None else denial.reason,
        detail=None if denial is None else denial.detail,
    )
    summary = AnalysisSummary(
        requested_pipeline=request.requested_pipeline,
        pipeline_steps=list(plan.pipeline.step_names),
        pruned_phases=list(plan.pruned),
        completed_phases=[phase for phase in catalog.phases if phase in recorded],
        batch_status=service.profile.state_names.show(state.status.value),
        active_run_id=None if state.active_run is None else state.active_run.run_id,
        admission=admission,
        correlation_id=correlation,
    )
    return DefineResponse(
        batch_id=request.batch_id, final_pipeline=list(plan.to_run_names), analysis_summary=summary
    )
