"""Which events a profile's :class:`~pipeline_state._outbound.Outbound` emits, found by asking it.

An ``Outbound`` is code, not a table: it turns each thing the engine announces into events
(topic, key, model, values). To describe a profile's wire without running it,
:func:`announced_events` calls every method of the profile's outbound with sample facts (a
registered batch, a run that finished with and without failures, a denial) and collects
the topic, payload model and key of each event it returns. The key is recognised by value:
the samples give the batch and its owner distinct ids, so a key equal to one of them is
"the batch id" or "the owner's id", and the payload field holding the same value is where a
consumer finds it.

An outbound must be pure and must not raise (see the protocol); one that raises on the
samples, or that puts two models on one topic, raises
:class:`~pipeline_state.errors.DefinitionError` naming the profile.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Literal

import attrs

from ._guards import Denial
from ._lifecycle import BatchStatus, PhaseStatus, RunStatus
from ._model import BatchState, ItemRef, Past, PhaseRun, Run
from ._outbound import Notice, Outbound, Outgoing, RunSummary
from ._wire import WireModel
from .errors import DefinitionError

__all__ = ["Announced", "KeyKind", "announced_events"]

KeyKind = Literal["batch", "owner", "other", "none"]
"""What an event's Kafka key is: the batch id, the batch owner's id, something else, or no key."""

_BATCH, _OWNER = "sample-batch-id", "sample-owner-id"
_AT = datetime(2024, 1, 1, tzinfo=UTC)


@attrs.frozen
class Announced:
    """One topic an outbound writes to: its payload model, its key and what emits it."""

    topic: str
    model: type[WireModel]
    key: KeyKind
    key_field: str | None
    """The payload field that holds the key (``None`` when no field does)."""
    announces: tuple[str, ...]
    """The announcements that emit it (``registered``, ``notify:run_finished``, ...), sorted."""


def _samples() -> tuple[BatchState, Run, Sequence[RunSummary]]:
    """A registered batch, its finished run, and the run's summaries (clean and with failures)."""
    items = (ItemRef("sample-item-1", "sample-text-1"), ItemRef("sample-item-2", "sample-text-2"))
    phase = PhaseRun(
        "sample-phase",
        (),
        status=PhaseStatus.COMPLETED_SUCCESSFULLY,
        dispatched_at=_AT,
        finished_at=_AT,
        inputs=items,
        outputs=items,
    )
    run = Run(
        run_id="sample-run-id",
        pipeline_name="sample-pipeline",
        correlation_id="00000000-0000-4000-8000-000000000000",
        requested_by=_OWNER,
        accepted_at=_AT,
        final_step=phase.name,
        phases=(phase,),
        status=RunStatus.COMPLETED_SUCCESSFULLY,
        completed_at=_AT,
        plan=(phase.name,),
    )
    state = BatchState(
        batch_id=_BATCH,
        status=BatchStatus.READY_FOR_PIPELINE_EXECUTION,
        version=1,
        owner=_OWNER,
        category="SAMPLE",
        expected_items=len(items),
        item_ids=tuple(e.item_id for e in items),
        created_at=_AT,
        updated_at=_AT,
        org_id="sample-org-id",
        group_id="sample-class-id",
        items=items,
        history=(run,),
        past=Past.of((run,)),
    )
    failed = attrs.evolve(run, status=RunStatus.COMPLETED_WITH_FAILURES)
    summaries = (
        RunSummary(run, len(items), 0, 1.0, _AT),
        RunSummary(failed, len(items) - 1, 1, 1.0, _AT),
    )
    return state, run, summaries


def _calls(outbound: Outbound) -> Iterable[tuple[str, Callable[[], Sequence[Outgoing]]]]:
    """Every announcement with the call that asks ``outbound`` for its events."""
    state, run, summaries = _samples()
    denial = Denial("sample_reason", "a sample denial")
    corr = run.correlation_id
    yield "registered", partial(outbound.registered, state)
    yield "phase_skipped", partial(outbound.phase_skipped, state, run, "sample-phase", "already_completed")
    yield "denied", partial(outbound.denied, state, _OWNER, "sample-pipeline", denial)
    for summary in summaries:
        yield "completed", partial(outbound.completed, state, summary)
    notices = [
        Notice("run_started", state, corr, run=run, phases=("sample-phase",)),
        *(Notice("run_finished", state, corr, run=s.run, summary=s) for s in summaries),
        Notice("request_denied", state, corr, requested="sample-pipeline", denial=denial),
    ]
    for notice in notices:
        yield f"notify:{notice.kind}", partial(outbound.notify, notice)


def _key_kind(key: str | None) -> KeyKind:
    if key is None:
        return "none"
    return "batch" if key == _BATCH else "owner" if key == _OWNER else "other"


def _key_field(event: Outgoing) -> str | None:
    """The first field of the event's model whose sample value is the key."""
    if event.key is None:
        return None
    values: Mapping[str, object] = event.data
    return next((name for name in event.model.model_fields if values.get(name) == event.key), None)


def announced_events(profile_name: str, outbound: Outbound) -> tuple[Announced, ...]:
    """The topics ``outbound`` (a profile's :class:`~pipeline_state._outbound.Outbound`) writes
    to, sorted by topic (see the module)."""
    found: dict[str, Announced] = {}
    for announcement, call in _calls(outbound):
        try:
            events = tuple(call())
        except Exception as exc:
            raise DefinitionError(
                profile_name,
                f"outbound.{announcement.split(':')[0]} raised {type(exc).__name__}: {exc} "
                "when asked with sample facts (an Outbound must be pure and must not raise)",
            ) from exc
        for event in events:
            seen = found.get(event.topic)
            entry = Announced(
                event.topic, event.model, _key_kind(event.key), _key_field(event), (announcement,)
            )
            if seen is None:
                found[event.topic] = entry
                continue
            if (seen.model, seen.key, seen.key_field) != (entry.model, entry.key, entry.key_field):
                raise DefinitionError(
                    profile_name,
                    f"the outbound writes two kinds of message to {event.topic!r} "
                    f"({seen.model.__name__} keyed by {seen.key}, and {entry.model.__name__} keyed "
                    f"by {entry.key} for {announcement}): one topic carries one model and one key",
                )
            found[event.topic] = attrs.evolve(seen, announces=tuple(sorted({*seen.announces, announcement})))
    return tuple(found[topic] for topic in sorted(found))
