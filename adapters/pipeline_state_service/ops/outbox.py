"""Parked outbox rows: list them, and deliver them again through the engine.

A row is parked when the relay gave up publishing it. ``outbox republish`` runs a
:class:`~pipeline_state._commands.RepublishOutbox` command per batch: ``decide`` records it on
the batch's transition log (with who asked) and the store re-queues the rows, unparked, with
their own event ids, for the running relay to publish. Its event id is derived from the
batch, its version and the rows, so the same command run twice at once is one action; run
again later, the rows are no longer parked and nothing is done.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from pipeline_state._commands import RepublishOutbox
from pipeline_state.ports import OutboxRow, Store

from .exits import MAX_LIMIT, ExitCode, OperatorError, in_range
from .output import emit
from .results import ActionOutcome, outcome_of
from .session import action_event_id, open_service, operator_name, run_command, store_call

__all__ = ["batch_of", "list_parked", "republish"]


async def batch_of(store: Store, row: OutboxRow) -> str | None:
    """The batch an outbox row belongs to: the batch of the command that wrote it (its
    envelope's ``metadata.causation_id`` in the inbox), else its payload's batch id."""
    value = row.message.value
    metadata = value.get("metadata")
    if isinstance(metadata, Mapping):
        cause = metadata.get("causation_id")
        if isinstance(cause, str) and cause:
            entry = await store.inbox_entry(cause)
            if entry is not None:
                return entry.batch_id
    data = value.get("data")
    if isinstance(data, Mapping):
        for field in ("batch_id", "entity_id"):
            found = data.get(field)
            if isinstance(found, str) and found:
                return found
    return None


async def _row(store: Store, row: OutboxRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "event_id": row.message.event_id,
        "topic": row.message.topic,
        "key": row.message.key,
        "batch_id": await batch_of(store, row),
        "created_at": row.created_at,
        "attempts": row.attempts,
        "last_error": row.last_error,
    }


async def list_parked(args: argparse.Namespace) -> int:
    """``outbox parked [--limit N]``: parked rows, oldest first."""
    in_range("--limit", args.limit, 1, MAX_LIMIT)
    async with open_service(args) as service:
        store = service.store
        rows = [await _row(store, r) for r in await store_call(store, "parked")(limit=args.limit)]

    def text() -> list[str]:
        if not rows:
            return ["no parked outbox row"]
        return [
            f"{r['event_id']}  {r['topic']}  batch {r['batch_id'] or '-'}  {r['attempts']} attempt(s)"
            f"  {r['last_error'] or ''}".rstrip()
            for r in rows
        ]

    emit(rows, as_json=args.json, text=text)
    return ExitCode.OK


async def republish(args: argparse.Namespace) -> int:
    """``outbox republish EVENT_ID...``: re-queue parked rows through the engine."""
    actor = operator_name(args.actor)
    wanted = list(dict.fromkeys(args.event_ids))
    if len(wanted) > MAX_LIMIT:  # as many as one `outbox parked --limit` lists at most
        raise OperatorError(
            ExitCode.USAGE, f"at most {MAX_LIMIT} event ids at a time, got {len(wanted)}: split them"
        )
    async with open_service(args) as service:
        store = service.store
        rows = {r.message.event_id: r for r in await store_call(store, "outbox_rows")(wanted)}
        missing = [i for i in wanted if i not in rows]
        if missing:
            raise OperatorError(ExitCode.NOT_FOUND, f"no outbox row with event id {', '.join(missing)}")
        not_parked = [i for i in wanted if not rows[i].parked]
        by_batch: dict[str, list[str]] = {}
        for event_id in wanted:
            if rows[event_id].parked:
                batch_id = await batch_of(store, rows[event_id])
                if batch_id is None:
                    raise OperatorError(
                        ExitCode.REFUSED, f"outbox row {event_id} belongs to no batch this store knows"
                    )
                by_batch.setdefault(batch_id, []).append(event_id)
        if args.event_id is not None and len(by_batch) > 1:
            raise OperatorError(ExitCode.USAGE, "--event-id names one action: give rows of one batch")
        outcomes: list[ActionOutcome] = []
        for batch_id, ids in by_batch.items():
            state = await service.get_batch(batch_id)
            rows_named = sorted(ids)  # a given key: scoped to the batch and its rows
            derived = (batch_id, str(state.version), *rows_named)
            event_id = action_event_id(args.event_id, "outbox-republish", (batch_id, *rows_named), derived)
            payload = RepublishOutbox(batch_id, tuple(ids))
            result = await run_command(service, payload, event_id=event_id, actor=actor, correlation_id=None)
            outcomes.append(await outcome_of(service, "outbox republish", result, actor=actor))
    doc = {"republished": [o.as_dict() for o in outcomes], "not_parked": not_parked}

    def text() -> list[str]:
        lines = [o.line() for o in outcomes]
        lines += [f"{i}: not parked (pending or published), nothing to do" for i in not_parked]
        return lines

    emit(doc, as_json=args.json, text=text)
    return max((o.exit_code for o in outcomes), default=ExitCode.OK)
