"""Read-only views of the store: one batch in full, and the runs that stopped moving."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

import attrs

from pipeline_state._model import BatchState, PhaseRun, Run
from pipeline_state._profile import Profile
from pipeline_state._snapshot import ViewNames, snapshot
from pipeline_state.ports import MAX_STALLED_AGE_SECONDS, StalledRun, TransitionRecord
from pipeline_state.profiles import default_profile

from .exits import MAX_LIMIT, ExitCode, in_range
from .output import emit
from .session import open_service, store_call

__all__ = ["show_batch", "stalled_runs"]


def _phase(phase: PhaseRun) -> dict[str, Any]:
    return {
        "name": phase.name,
        "status": phase.status.value,
        "dispatched_at": phase.dispatched_at,
        "deadline_at": phase.deadline_at,
        "finished_at": phase.finished_at,
        "inputs": len(phase.inputs),
        "outputs": len(phase.outputs),
        "failed": len(phase.failed_item_ids),
        "resends": phase.resends,
        "error": phase.error,
    }


def _with_details(view: dict[str, Any], run: Run) -> dict[str, Any]:
    """A run of :func:`~pipeline_state._snapshot.snapshot`, plus who started it and each
    phase's figures."""
    return view | {
        "requested_by": run.requested_by,
        "is_retry": run.is_retry,
        "retry_reason": run.retry_reason,
        "phase_details": [_phase(p) for p in run.phases],
    }


def _transition(record: TransitionRecord) -> dict[str, Any]:
    row = attrs.asdict(record)
    row.pop("batch_id")
    return row


def batch_document(
    state: BatchState, log: list[TransitionRecord], profile: Profile | None = None, *, cut: bool = False
) -> dict[str, Any]:
    """What ``batch show`` prints: the batch as the HTTP API shows it under ``profile``
    (default: the default profile; :func:`~pipeline_state._snapshot.snapshot` with its view
    keys and state names), with the expected item count (``expected_<items key>``), who
    started each run (and why, for a retry), each phase's figures, and the transition log
    (``log``, its newest rows; ``cut``: older rows were left out)."""
    profile = profile or default_profile()
    names = profile.view_names
    doc = snapshot(state, names, profile.state_names)
    if state.active_run is not None:
        doc["active_run"] = _with_details(doc["active_run"], state.active_run)
    doc["history"] = [_with_details(v, r) for v, r in zip(doc["history"], state.history, strict=True)]
    return doc | {
        f"expected_{names.items}": state.expected_items,
        "created_at": state.created_at,
        "updated_at": state.updated_at,
        "transitions": [_transition(t) for t in log],
        "transitions_cut": cut,
    }


def _batch_lines(doc: dict[str, Any], names: ViewNames) -> list[str]:
    """The text of ``batch show``. The stored values in it (who asked, notes, ids) are
    escaped when :func:`~pipeline_state_service.ops.output.emit` prints the lines, so a
    name a store already holds cannot forge a line of the transition log."""
    owner, items = doc[names.owner], doc[names.items]
    lines = [
        f"batch {doc['batch_id']}  {doc['status']}  version {doc['version']}  owner {owner}",
        f"  {names.items_word} {items}/{doc[f'expected_{names.items}']}  created {_at(doc['created_at'])}"
        f"  last change {_at(doc['updated_at'])}",
    ]
    active = doc["active_run"]
    lines.append("active run: -" if active is None else f"active run: {_run_line(active)}")
    if active is not None:
        lines += [f"    {name}: {status}" for name, status in active["phases"].items()]
    lines.append(f"history: {len(doc['history'])} run(s)")
    lines += [f"  {_run_line(r)}" for r in doc["history"]]
    cut = ", the newest (older rows left out: --log-limit)" if doc["transitions_cut"] else ""
    lines.append(f"transition log: {len(doc['transitions'])} row(s){cut}")
    for t in doc["transitions"]:
        by = f"  by {t['requested_by']}" if t["requested_by"] else ""
        note = f"  [{t['note']}]" if t["note"] else ""
        source = t["source"] or "-"
        lines.append(
            f"  {_at(t['at'])}  {t['entity']} {t['name']}: {source} -{t['trigger']}-> {t['dest']}{by}{note}"
        )
    return lines


def _run_line(run: dict[str, Any]) -> str:
    status = run.get("final_status", "active")
    ended = f" -> {run['completed_at']}" if run.get("completed_at") else ""
    started = f"by {run['requested_by']}  {run['accepted_at']}{ended}"
    why = f"  [retry: {run['retry_reason']}]" if run.get("retry_reason") else ""
    return f"{run['run_id']}  {run['pipeline_name']}  {status}  {started}{why}"


def _at(value: datetime | None) -> str:
    return "-" if value is None else value.isoformat(timespec="seconds")


async def show_batch(args: argparse.Namespace) -> int:
    """``batch show BATCH``: state, active run, history and transition log."""
    in_range("--log-limit", args.log_limit, 0, MAX_LIMIT)
    async with open_service(args) as service:
        state = await service.get_batch(args.batch_id)
        # The newest rows, one more than shown: whether older ones are left out.
        read = store_call(service.store, "transitions")
        log = await read(args.batch_id, limit=args.log_limit + 1, newest=True)
        cut = len(log) > args.log_limit
    doc = batch_document(state, log[len(log) - args.log_limit :] if cut else log, service.profile, cut=cut)
    emit(doc, as_json=args.json, text=lambda: _batch_lines(doc, service.profile.view_names))
    return ExitCode.OK


def _stalled(run: StalledRun) -> dict[str, Any]:
    return {
        "batch_id": run.batch_id,
        "run_id": run.run_id,
        "pipeline": run.pipeline_name,
        "accepted_at": run.accepted_at,
        "last_change_at": run.last_change_at,
        "active_phases": list(run.active_phases),
        "parked": [
            {"event_id": p.message.event_id, "topic": p.message.topic, "last_error": p.last_error}
            for p in run.parked
        ],
    }


def _stalled_line(run: StalledRun) -> str:
    parked = f", {len(run.parked)} parked outbox row(s)" if run.parked else ""
    return (
        f"{run.batch_id}  run {run.run_id}  {run.pipeline_name}  last change {run.last_change_at.isoformat()}"
        f"  open: {', '.join(run.active_phases) or '-'}{parked}"
    )


async def stalled_runs(args: argparse.Namespace) -> int:
    """``runs stalled`` (alias ``stalled``): active runs without progress, oldest first."""
    in_range("--older-than", args.older_than, 0, MAX_STALLED_AGE_SECONDS)
    in_range("--limit", args.limit, 1, MAX_LIMIT)
    async with open_service(args) as service:
        runs = await service.store.stalled_runs(datetime.now(UTC), args.older_than, limit=args.limit)

    def text() -> list[str]:
        if not runs:
            return [f"no run without progress for more than {args.older_than:g}s"]
        return [_stalled_line(r) for r in runs]

    emit([_stalled(r) for r in runs], as_json=args.json, text=text)
    return ExitCode.OK
