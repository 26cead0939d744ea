"""Actions on a batch through the engine: cancel its run, retry a phase, archive it.

Each is an operator command handled by :class:`~pipeline_state._service.PipelineService`:
the inbox dedupes it, :func:`~pipeline_state._decide.decide` decides it and the transition
log records it with who asked. Its event id is derived from the action and what it acts on,
so running the same command again is a duplicate (answered with what the first did); a key
given with ``--event-id`` is scoped to the action, the batch and the phase or ``--run`` it
names, so the same key given for another batch or action is another action.
With ``--api URL``, ``run cancel`` and ``phase retry`` go through a running service's HTTP
API instead (:mod:`~pipeline_state_service.ops.remote`), keyed the same way:

* ``run cancel``: the batch and the run cancelled (the active run, or ``--run``);
* ``phase retry``: the batch, the phase and the last finished run before the retry (a
  retry after the retried run finished is a new action), and the batch's status while it
  is not yet ready (or ended): a retry denied before the batch was ready is a new action
  once it is;
* ``batch archive``: the batch (archiving is terminal).

``--reason`` is bounded as the HTTP API bounds it
(:data:`~pipeline_state_service.ops.session.MAX_REASON_LENGTH`).
"""

from __future__ import annotations

import argparse

from pipeline_state._commands import ArchiveBatch, CancelRun, RetryPhase
from pipeline_state._model import BatchState, Run

from . import remote
from .exits import ExitCode, OperatorError
from .keys import cancel_key, cancel_target, check_active, retry_key, retry_stage
from .output import emit
from .results import ActionOutcome, outcome_of
from .session import action_event_id, open_service, operator_name, reason_text, run_command

__all__ = ["archive_batch", "cancel_run", "retry_phase"]


def _latest_run(state: BatchState) -> Run | None:
    """The active run, else the last archived one."""
    if state.active_run is not None:
        return state.active_run
    return state.history[-1] if state.history else None


async def cancel_run(args: argparse.Namespace) -> int:
    """``run cancel BATCH [--run RUN] [--reason TEXT]``."""
    actor = operator_name(args.actor)
    reason = reason_text(args.reason)
    if args.api:
        return _print(await remote.cancel_via_api(args, actor), args)
    async with open_service(args) as service:
        state = await service.get_batch(args.batch_id)
        target = cancel_target(args.batch_id, args.run, _run_id(_latest_run(state)))
        event_id = cancel_key(args.event_id, args.batch_id, args.run, target)
        active = state.active_run
        if not await service.store.is_processed(event_id):
            check_active(args.batch_id, target, _run_id(active))
        correlation = active.correlation_id if active is not None else None
        payload = CancelRun(args.batch_id, actor, reason, run_id=target)  # only the run named
        result = await run_command(
            service, payload, event_id=event_id, actor=actor, correlation_id=correlation
        )
        outcome = await outcome_of(service, "run cancel", result, actor=actor, run_id=target)
    return _print(outcome, args)


def _print(outcome: ActionOutcome, args: argparse.Namespace) -> int:
    emit(outcome.as_dict(), as_json=args.json, text=lambda: [outcome.line()])
    return outcome.exit_code


def _run_id(run: Run | None) -> str | None:
    return None if run is None else run.run_id


async def retry_phase(args: argparse.Namespace) -> int:
    """``phase retry BATCH PHASE [--reason TEXT]``."""
    actor = operator_name(args.actor)
    reason = reason_text(args.reason)
    if args.api:
        return _print(await remote.retry_via_api(args, actor), args)
    async with open_service(args) as service:
        state = await service.get_batch(args.batch_id)
        if not service.profile.is_phase(args.phase):
            raise OperatorError(ExitCode.USAGE, f"the profile has no phase named {args.phase!r}")
        finished = state.history[-1].run_id if state.history else None
        stage = retry_stage(state.status.value)
        event_id = retry_key(args.event_id, args.batch_id, args.phase, finished, stage)
        # refused if a run is archived before it commits: the key names the last run seen
        payload = RetryPhase(args.batch_id, args.phase, actor, reason, after_runs=len(state.history))
        result = await run_command(service, payload, event_id=event_id, actor=actor, correlation_id=None)
        outcome = await outcome_of(service, "phase retry", result, actor=actor)
    return _print(outcome, args)


async def archive_batch(args: argparse.Namespace) -> int:
    """``batch archive BATCH``."""
    actor = operator_name(args.actor)
    async with open_service(args) as service:
        await service.get_batch(args.batch_id)
        event_id = action_event_id(args.event_id, "batch-archive", (args.batch_id,))
        payload = ArchiveBatch(args.batch_id)
        result = await run_command(service, payload, event_id=event_id, actor=actor, correlation_id=None)
        outcome = await outcome_of(service, "batch archive", result, actor=actor)
    return _print(outcome, args)
