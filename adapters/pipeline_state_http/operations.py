"""The mutating requests, mapped onto the core's commands through :class:`PipelineService`.

Each method runs one command with the request's event id and correlation id and turns the
:class:`~pipeline_state._service.HandleResult` into the answer model. A denial raises
:class:`~pipeline_state_http.errors.PipelineDeniedError`; library errors propagate to the
error handler. A duplicate result (same Idempotency-Key and body) is answered from the
stored facts, see :mod:`pipeline_state_http.replay`.
"""

from __future__ import annotations

from pipeline_state._commands import CancelRun, Command, RecordPhaseCompletion, RetryPhase
from pipeline_state._lifecycle import BATCH_LIFECYCLE
from pipeline_state._refusal import read_refusal
from pipeline_state._service import HandleResult, PipelineService
from pipeline_state.errors import DuplicateEventError, InvalidMessageError
from pipeline_state.ports import InboxEntry
from pipeline_state.profiles.huleedu import HULEEDU_INBOUND
from pipeline_state.profiles.huleedu.events import (
    BatchRegistrationRequestV1,
    ClientBatchPipelineRequestV1,
    parse_payload,
)

from .context import RequestContext
from .errors import PipelineDeniedError, RefusedBeforeError
from .replay import (
    decided_run,
    denial_of,
    logged_correlation,
    logged_run,
    logged_run_id,
    run_of_cancellation,
    run_of_event,
)
from .schemas import (
    CancelAccepted,
    CancelBody,
    PhaseCompletionBody,
    PhaseRecorded,
    PipelineAccepted,
    PipelineRequestBody,
    RegisterAccepted,
    RetryPhaseBody,
)

__all__ = ["Operations"]

_Payload = (
    BatchRegistrationRequestV1 | ClientBatchPipelineRequestV1 | CancelRun | RetryPhase | RecordPhaseCompletion
)
"""What a mutating route runs: a message of the inbound wire or an operator command."""


class Operations:
    """Registration, pipeline requests, cancellation, retries and recorded completions."""

    def __init__(self, service: PipelineService) -> None:
        self.service = service

    async def register(self, payload: BatchRegistrationRequestV1, ctx: RequestContext) -> RegisterAccepted:
        result = await self._run(payload, ctx, ctx.correlation_id)
        correlation = ctx.correlation_id
        if result.duplicate:
            applied = (await self._entry(ctx.event_id)).result == "applied"
            # The first answer's correlation id, as the log recorded it: a replay may carry
            # another X-Correlation-ID (or none), which no event of this batch carries.
            store = self.service.store
            correlation = await logged_correlation(store, payload.batch_id, ctx.event_id, correlation)
        else:
            applied = result.ignored is None
        if applied:
            status = self.service.profile.state_names.show(BATCH_LIFECYCLE.initial)
        else:
            state = await self.service.get_batch(payload.batch_id)
            status = self.service.profile.state_names.show(state.status.value)
        return RegisterAccepted(batch_id=payload.batch_id, correlation_id=correlation, status=status)

    async def request_pipeline(
        self, batch_id: str, body: PipelineRequestBody, ctx: RequestContext
    ) -> PipelineAccepted:
        if body.batch_id is not None and body.batch_id != batch_id:
            raise InvalidMessageError("http", "does not match the batch in the path", field="body.batch_id")
        correlation = ctx.correlation_id
        if not ctx.correlation_supplied and body.client_correlation_id is not None:
            correlation = str(body.client_correlation_id)
        # The fields as parsed, not ``model_dump``: its serializer has a depth limit of its own
        # and raised on a deep ``prompt_payload`` (a 500) before the wire model's check (a 422).
        data = dict(body) | {"batch_id": batch_id, "client_correlation_id": correlation}
        payload = parse_payload("http", data, model=ClientBatchPipelineRequestV1)
        assert isinstance(payload, ClientBatchPipelineRequestV1)
        result = await self._run(payload, ctx, correlation)
        return await self._accepted(result, batch_id, ctx, correlation)

    async def retry_phase(self, batch_id: str, body: RetryPhaseBody, ctx: RequestContext) -> PipelineAccepted:
        command = RetryPhase(
            batch_id, body.phase_name, body.user_id, body.retry_reason, after_runs=body.after_runs
        )
        result = await self._run(command, ctx, ctx.correlation_id, requested_by=body.user_id)
        return await self._accepted(result, batch_id, ctx, ctx.correlation_id)

    async def cancel(self, batch_id: str, body: CancelBody, ctx: RequestContext) -> CancelAccepted:
        payload = CancelRun(batch_id, body.user_id, body.reason, body.run_id)
        result = await self._run(payload, ctx, ctx.correlation_id, requested_by=body.user_id or None)
        correlation = ctx.correlation_id
        if result.duplicate:
            # The first answer's run and correlation id, as the log recorded them.
            run_id, correlation = await logged_run(self.service.store, batch_id, ctx.event_id, correlation)
            if run_id is None:
                entry = await self._entry(ctx.event_id)
                run = run_of_cancellation(await self.service.shown_batch(batch_id), entry.processed_at)
                run_id = None if run is None else run.run_id
        else:
            run_id = None if result.decision is None else result.decision.run_id
        if run_id is None:
            raise DuplicateEventError(ctx.event_id)
        return CancelAccepted(run_id=run_id, correlation_id=correlation)

    async def record_completion(
        self, body: PhaseCompletionBody, ctx: RequestContext
    ) -> tuple[PhaseRecorded, str]:
        """The answer, and the correlation id the completion was recorded under (a replay: the
        first answer's, which the log recorded)."""
        command = RecordPhaseCompletion(body.batch_id, body.phase_name, body.success)
        result = await self._run(command, ctx, ctx.correlation_id)
        correlation = ctx.correlation_id
        if result.duplicate:
            outcome = (await self._entry(ctx.event_id)).result
            store = self.service.store
            correlation = await logged_correlation(store, body.batch_id, ctx.event_id, correlation)
            run_id = await logged_run_id(store, body.batch_id, ctx.event_id)
            if run_id is None:
                run = run_of_event(await self.service.shown_batch(body.batch_id), ctx.event_id)
                run_id = None if run is None else run.run_id
        else:
            outcome = "applied" if result.ignored is None else f"ignored:{result.ignored}"
            run_id = None if result.decision is None else result.decision.run_id
        return PhaseRecorded(outcome=outcome, run_id=run_id), correlation

    # -- helpers --------------------------------------------------------------------------
    async def _run(
        self,
        payload: _Payload,
        ctx: RequestContext,
        correlation: str,
        *,
        requested_by: str | None = None,
    ) -> HandleResult:
        """Run ``payload`` with the request's event id; an operator command that names its
        user is recorded on the transition log as asked by them. A keyed cancel or retry the
        state refuses is recorded under its key, and a repeat of it raises
        :class:`RefusedBeforeError`."""
        # Only an operator's keyed cancel or retry records a refusal: its intent is bound to
        # the state the operator saw. A worker's or client's keyed request refused now (an
        # early completion, a registration not arrived yet) may apply when repeated later.
        record = ctx.idempotency_key is not None and isinstance(payload, CancelRun | RetryPhase)
        if requested_by is not None and isinstance(payload, CancelRun | RetryPhase):
            asked = Command(payload, ctx.event_id, correlation, requested_by=requested_by)
            topic = f"operator.{type(payload).__name__}"
            result = await self.service.handle(asked, topic=topic, record_refusal=record)
        else:
            result = await self._execute(payload, ctx, correlation, record)
        if result.duplicate:
            entry = await self.service.store.inbox_entry(ctx.event_id)
            refusal = None if entry is None else read_refusal(entry.result)
            if entry is not None and refusal is not None:
                raise RefusedBeforeError(refusal.error, batch_id=entry.batch_id, context=refusal.context)
        return result

    async def _execute(
        self,
        payload: _Payload,
        ctx: RequestContext,
        correlation: str,
        record_refusal: bool,
    ) -> HandleResult:
        """Run ``payload`` through :meth:`PipelineService.execute`."""
        # The HTTP bodies have the shape of HuleEdu's messages; they are read as engine
        # inputs here, so the API serves whatever profile the service runs.
        command = (
            HULEEDU_INBOUND.decode(payload)
            if isinstance(payload, BatchRegistrationRequestV1 | ClientBatchPipelineRequestV1)
            else payload
        )
        return await self.service.execute(
            command, event_id=ctx.event_id, correlation_id=correlation, record_refusal=record_refusal
        )

    async def _entry(self, event_id: str) -> InboxEntry:
        entry = await self.service.store.inbox_entry(event_id)
        if entry is None:  # a store that reports a duplicate must keep its entry
            raise DuplicateEventError(event_id)
        return entry

    async def _accepted(
        self, result: HandleResult, batch_id: str, ctx: RequestContext, correlation: str
    ) -> PipelineAccepted:
        """The answer of a run-starting request decided under ``correlation``: its run, or its
        denial (which names ``correlation``, the id the denial was published under)."""
        if result.duplicate:
            entry = await self._entry(ctx.event_id)
            denial = denial_of(entry)
            if denial is not None:
                raise denial
            run = run_of_event(await self.service.shown_batch(batch_id), ctx.event_id)
        else:
            decision = result.decision
            assert decision is not None
            denied = decision.denial
            if denied is not None:
                raise PipelineDeniedError(
                    denied.reason, denied.detail, batch_id=batch_id, correlation_id=correlation
                )
            run = decided_run(decision)
        if run is None:
            raise DuplicateEventError(ctx.event_id)
        return PipelineAccepted(
            run_id=run.run_id,
            resolved_pipeline=[phase.name for phase in run.phases],
            skipped_phases=list(run.pruned),
            correlation_id=run.correlation_id,
        )
