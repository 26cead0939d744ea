"""The projection: pure functions from consumed events to the results read model.

The projection consumes (:data:`CONSUMED_TOPICS`) the registrations, completions, phase
commands and pruned-phase notices the engine emits and the phase outcomes the workers send.
Each consumed message becomes one :class:`ResultsFact`; :func:`apply_fact` merges it into a
batch's :class:`~pipeline_state.profiles.huleedu.results.model.BatchResults` by the winner rules listed in
:mod:`pipeline_state.profiles.huleedu.results.model`. The merge is commutative, associative and idempotent,
so :func:`project` gives the same read model for the same facts in any order, as long as a
batch holds at most :data:`MAX_UNDISPATCHED_OUTCOMES` outcomes of phases whose dispatch it
has not seen (past that bound the earliest are kept, and which those are can depend on the
order: an outcome dropped before its dispatch came is not kept after it).

The other functions derive what a unit of work writes besides the batch: the runs whose
results are due to be announced, the class summary deltas and the cache keys to invalidate.
No I/O here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TypeVar

import attrs
from pydantic import ValidationError

from pipeline_state._lifecycle import PhaseStatus
from pipeline_state._profile import CommandSpec, command_fields
from pipeline_state._wire import ID_ADAPTER, EventEnvelope, WireModel, first_error
from pipeline_state.errors import InvalidMessageError, UnknownTopicError
from pipeline_state.profiles.huleedu.events import (
    BatchEssaysRegistered,
    BatchPipelineCompletedV1,
    ELSBatchPhaseOutcomeV1,
    PhaseSkippedV1,
    Topic,
)
from pipeline_state.profiles.huleedu.profile import HULEEDU_PHASE_COMMANDS

from .model import (
    BatchResults,
    ClassDelta,
    Owner,
    PhaseDispatch,
    PhaseOutcome,
    PhasePruned,
    PhaseResultView,
    RunCompletion,
)

__all__ = [
    "ALREADY_COMPLETED",
    "CONSUMED_TOPICS",
    "DISPATCH_TOPICS",
    "OUTCOME_STATUS",
    "ResultsFact",
    "apply_fact",
    "batch_cache_key",
    "cache_keys",
    "class_cache_key",
    "class_deltas",
    "fact_from_message",
    "mark_announced",
    "pending_announcements",
    "project",
    "teacher_cache_key",
]

DISPATCH_TOPICS: Mapping[str, tuple[str, CommandSpec]] = MappingProxyType(
    {spec.topic: (phase, spec) for phase, spec in HULEEDU_PHASE_COMMANDS.items()}
)
"""The topic of each phase command of the HuleEdu profile: the phase and its command."""

CONSUMED_TOPICS: tuple[str, ...] = (
    Topic.PHASE_OUTCOME.value,
    Topic.PIPELINE_COMPLETED.value,
    Topic.ESSAYS_REGISTERED.value,
    *DISPATCH_TOPICS,
    Topic.PHASE_SKIPPED.value,
)
"""The topics the results projection consumes: phase outcomes, completions, registrations,
the phase commands (the engine's dispatches) and pruned-phase notices."""

ALREADY_COMPLETED = "already_completed"
"""The ``skip_reason`` of a phase the engine pruned because it was completed before; a
``PhaseSkippedV1`` with another reason states nothing the read model keeps."""

OUTCOME_STATUS: Mapping[str, str] = {
    "completed_successfully": PhaseStatus.COMPLETED_SUCCESSFULLY.value,
    "completed_with_failures": PhaseStatus.COMPLETED_WITH_PARTIAL_SUCCESS.value,
    "failed_critically": PhaseStatus.FAILED.value,
}
"""``ELSBatchPhaseOutcomeV1.phase_status`` to the phase execution status it records."""

Body = Owner | RunCompletion | PhaseOutcome | PhaseDispatch | PhasePruned


@attrs.frozen
class ResultsFact:
    """One consumed event as a fact about a batch (``body`` ``None``: the event states
    nothing the read model keeps, a phase skipped for another reason than
    :data:`ALREADY_COMPLETED`)."""

    batch_id: str
    event_id: str
    event_type: str
    correlation_id: str
    body: Body | None


def _utc(instant: datetime) -> datetime:
    return instant.replace(tzinfo=UTC) if instant.tzinfo is None else instant.astimezone(UTC)


def _ids(topic: str, **ids: str | None) -> None:
    """Check the ids a fact is keyed and grouped by with the wire's id rule (the models of
    the library's own outbound topics type them as plain text): an id with a control
    character, a lone surrogate or over :data:`~pipeline_state._wire.MAX_ID_LENGTH`
    characters is invalid input here, as it is on the orchestrator's inbound topics, rather
    than something each store keeps or refuses in its own way."""
    for name, value in ids.items():
        if value is None:
            continue
        try:
            ID_ADAPTER.validate_python(value)
        except ValidationError as exc:
            raise first_error(topic, exc, f"data.{name}") from None


MAX_PHASES_LISTED = 256
"""The most phases a completion may list in each of ``completed_phases``, ``skipped_phases``
and ``phase_results``: a pipeline's steps are far fewer, and the announcement each applied
completion makes (``BatchResultsReadyV1``, which repeats them) must stay well within a
producer's 1 MiB message: 14,000 listed phases in a 1 MiB completion made one the relay
could never publish."""


def _names(topic: str, field: str, names: Sequence[str]) -> None:
    """Check the number of phases in the list ``field`` (:data:`MAX_PHASES_LISTED`), then
    each phase name as :func:`_ids` checks an id."""
    if len(names) > MAX_PHASES_LISTED:
        raise InvalidMessageError(
            topic, f"lists {len(names)} phases, more than {MAX_PHASES_LISTED}", field=f"data.{field}"
        )
    _ids(topic, **{f"{field}[{index}]": name for index, name in enumerate(names)})


def _dispatched(topic: str, data: Mapping[str, object], spec: CommandSpec) -> tuple[str, int]:
    """The batch id and the number of items of a phase command, read under the names its
    model declares (:func:`~pipeline_state._profile.command_fields`), as the engine fills it."""
    names = command_fields(spec.model)
    batch_id, items = data.get(names.batch_id), data.get(names.items)
    if not isinstance(batch_id, str):
        raise InvalidMessageError(topic, "the batch id should be text", field=f"data.{names.batch_id}")
    if not isinstance(items, list):
        raise InvalidMessageError(topic, "the items should be a list", field=f"data.{names.items}")
    _ids(topic, **{names.batch_id: batch_id})
    return batch_id, len(items)


def fact_from_message(topic: str, envelope: EventEnvelope, payload: WireModel) -> ResultsFact:
    """The fact a parsed message states. Raises
    :class:`~pipeline_state.errors.UnknownTopicError` for a topic the projection does not
    consume (or a payload of the wrong model)."""
    event_id = str(envelope.event_id)
    correlation_id = str(envelope.correlation_id)
    at = _utc(envelope.event_timestamp)
    body: Body | None
    dispatched = DISPATCH_TOPICS.get(topic)
    if dispatched is not None and isinstance(payload, dispatched[1].model):
        phase, spec = dispatched
        batch_id, items = _dispatched(topic, envelope.data, spec)
        body = PhaseDispatch(correlation_id, phase, items, at, event_id)
    elif topic == Topic.PHASE_SKIPPED.value and isinstance(payload, PhaseSkippedV1):
        batch_id = payload.batch_id
        _ids(topic, batch_id=batch_id, phase_name=payload.phase_name, correlation_id=payload.correlation_id)
        body = None
        if payload.skip_reason == ALREADY_COMPLETED:
            body = PhasePruned(payload.correlation_id, payload.phase_name, at, event_id)
    elif topic == Topic.PHASE_OUTCOME.value and isinstance(payload, ELSBatchPhaseOutcomeV1):
        batch_id = payload.batch_id
        reported = payload.phase_status
        if reported == "completed_successfully" and payload.failed_essay_ids:
            reported = "completed_with_failures"  # as the engine applies it
        body = PhaseOutcome(
            correlation_id=str(payload.correlation_id),
            phase=payload.phase_name,
            status=OUTCOME_STATUS[reported],
            successful=len(payload.processed_essays),
            failed=len(payload.failed_essay_ids),
            observed_at=at,
            event_id=event_id,
        )
    elif topic == Topic.PIPELINE_COMPLETED.value and isinstance(payload, BatchPipelineCompletedV1):
        batch_id = payload.batch_id
        _ids(
            topic,
            batch_id=batch_id,
            run_id=payload.run_id,
            pipeline_name=payload.pipeline_name,
            correlation_id=payload.correlation_id,
        )
        _names(topic, "completed_phases", payload.completed_phases)
        _names(topic, "skipped_phases", payload.skipped_phases)
        _names(topic, "phase_results", list(payload.phase_results))
        body = RunCompletion(
            run_id=payload.run_id,
            correlation_id=payload.correlation_id,
            pipeline_name=payload.pipeline_name,
            final_status=payload.final_status,
            completed_phases=tuple(payload.completed_phases),
            skipped_phases=tuple(payload.skipped_phases),
            processing_duration_seconds=payload.processing_duration_seconds,
            successful_essays=payload.successful_essay_count,
            failed_essays=payload.failed_essay_count,
            phase_results=tuple(
                PhaseResultView(name, r.status, r.successful, r.failed, r.duration_seconds)
                for name, r in payload.phase_results.items()
            ),
            completed_at=_utc(payload.metadata.timestamp),
            event_id=event_id,
        )
    elif topic == Topic.ESSAYS_REGISTERED.value and isinstance(payload, BatchEssaysRegistered):
        batch_id = payload.entity_id
        _ids(topic, entity_id=batch_id, user_id=payload.user_id, class_id=payload.class_id)
        body = Owner(
            user_id=payload.user_id,
            class_id=payload.class_id,
            expected_essays=payload.expected_essay_count,
            observed_at=at,
            event_id=event_id,
        )
    else:
        raise UnknownTopicError(topic)
    return ResultsFact(batch_id, event_id, topic, correlation_id, body)


# -- the merge ----------------------------------------------------------------------------


def _merge_owner(current: Owner | None, new: Owner) -> Owner:
    return new if current is None or new.rank < current.rank else current


def _merge_completion(runs: tuple[RunCompletion, ...], new: RunCompletion) -> tuple[RunCompletion, ...]:
    by_id = {r.run_id: r for r in runs}
    current = by_id.get(new.run_id)
    if current is None or new.rank > current.rank:
        by_id[new.run_id] = new
    return tuple(sorted(by_id.values(), key=lambda r: r.order))


K = TypeVar("K", PhaseDispatch, PhasePruned)


def _merge_earliest(facts: tuple[K, ...], new: K) -> tuple[K, ...]:
    """``facts`` with ``new``: per key, the one of the lowest rank."""
    by_key = {f.key: f for f in facts}
    current = by_key.get(new.key)
    if current is None or new.rank < current.rank:
        by_key[new.key] = new
    return tuple(sorted(by_key.values(), key=lambda f: f.key))


def _merge_outcome(outcomes: tuple[PhaseOutcome, ...], new: PhaseOutcome) -> tuple[PhaseOutcome, ...]:
    """``outcomes`` with ``new``: per key, the earliest outcome and each later one with
    strictly fewer figures (an outcome that an earlier one with as few or fewer figures
    precedes is never the one the engine applies, whatever items the phase was sent)."""
    if new in outcomes:
        return outcomes
    same = sorted([o for o in outcomes if o.key == new.key] + [new], key=lambda o: o.rank)
    kept: list[PhaseOutcome] = []
    for outcome in same:
        if not kept or outcome.total < kept[-1].total:
            kept.append(outcome)
    others = [o for o in outcomes if o.key != new.key]
    return tuple(sorted(others + kept, key=lambda o: (o.key, o.rank)))


MAX_UNDISPATCHED_OUTCOMES = 64
"""How many outcomes a batch keeps of phases whose dispatch it has not seen: an outcome read
before its phase's command, or one the engine ignores (a worker that lost its run's
correlation id, a phase the engine never sent). The earliest are kept, so a worker that
keeps losing its run's id, or a flood on the outcome topic, cannot grow a batch's document
(and the cost of every later fact of the batch) without bound."""


def _bounded(
    outcomes: tuple[PhaseOutcome, ...], dispatches: tuple[PhaseDispatch, ...]
) -> tuple[PhaseOutcome, ...]:
    sent = {d.key for d in dispatches}
    waiting = [o for o in outcomes if o.key not in sent]
    if len(waiting) <= MAX_UNDISPATCHED_OUTCOMES:
        return outcomes
    dropped = set(sorted(waiting, key=lambda o: (o.rank, o.key))[MAX_UNDISPATCHED_OUTCOMES:])
    return tuple(o for o in outcomes if o not in dropped)


def _normal(batch: BatchResults) -> BatchResults:
    """Drop the outcomes and dispatches of completed runs (their completion holds the real
    figures), and the undispatched outcomes past :data:`MAX_UNDISPATCHED_OUTCOMES`."""
    finished = {r.correlation_id for r in batch.completions}
    dispatches = tuple(d for d in batch.dispatches if d.correlation_id not in finished)
    outcomes = _bounded(tuple(o for o in batch.outcomes if o.correlation_id not in finished), dispatches)
    if len(outcomes) == len(batch.outcomes) and len(dispatches) == len(batch.dispatches):
        return batch
    return attrs.evolve(batch, outcomes=outcomes, dispatches=dispatches)


def apply_fact(batch: BatchResults | None, fact: ResultsFact) -> BatchResults:
    """``batch`` with ``fact`` merged in; a fact about an unknown batch (``None``) creates it.

    Raises :class:`ValueError` when ``fact`` is about another batch.
    """
    if batch is None:
        batch = BatchResults(fact.batch_id)
    elif batch.batch_id != fact.batch_id:
        raise ValueError(f"fact about batch {fact.batch_id!r} applied to batch {batch.batch_id!r}")
    body = fact.body
    if body is None:
        return batch
    if isinstance(body, Owner):
        return attrs.evolve(batch, owner=_merge_owner(batch.owner, body))
    if isinstance(body, RunCompletion):
        return _normal(attrs.evolve(batch, completions=_merge_completion(batch.completions, body)))
    if isinstance(body, PhaseDispatch):
        return _normal(attrs.evolve(batch, dispatches=_merge_earliest(batch.dispatches, body)))
    if isinstance(body, PhasePruned):
        return attrs.evolve(batch, pruned=_merge_earliest(batch.pruned, body))
    return _normal(attrs.evolve(batch, outcomes=_merge_outcome(batch.outcomes, body)))


def project(batch_id: str, facts: Iterable[ResultsFact]) -> BatchResults:
    """The read model of ``batch_id`` built from ``facts`` (any order, repeats allowed)."""
    batch = BatchResults(batch_id)
    for fact in facts:
        batch = apply_fact(batch, fact)
    return batch


# -- announcements --------------------------------------------------------------------------


def pending_announcements(batch: BatchResults) -> tuple[RunCompletion, ...]:
    """Completed runs whose results are due to be announced, in run order: every completed
    run not announced yet, once the owner (the teacher to notify) is known."""
    if batch.owner is None:
        return ()
    done = set(batch.announced)
    return tuple(r for r in batch.completions if r.run_id not in done)


def mark_announced(batch: BatchResults, run_ids: Iterable[str]) -> BatchResults:
    """``batch`` with ``run_ids`` recorded as announced."""
    merged = tuple(sorted(set(batch.announced) | set(run_ids)))
    return batch if merged == batch.announced else attrs.evolve(batch, announced=merged)


# -- class summaries ------------------------------------------------------------------------


def class_deltas(before: BatchResults | None, after: BatchResults | None) -> tuple[ClassDelta, ...]:
    """What moving one batch from ``before`` to ``after`` changes in the class summaries:
    its contribution (one batch in its status, its essay counts) leaves the old class and
    enters the new one. Empty deltas are left out; ordered by class id."""
    changes: dict[str, dict[str, int]] = {}
    statuses: dict[str, dict[str, int]] = {}

    def add(batch: BatchResults | None, sign: int) -> None:
        if batch is None or batch.class_id is None:
            return
        sums = changes.setdefault(batch.class_id, {"batches": 0, "ok": 0, "failed": 0})
        sums["batches"] += sign
        sums["ok"] += sign * batch.essays_succeeded
        sums["failed"] += sign * batch.essays_failed
        per_status = statuses.setdefault(batch.class_id, {})
        per_status[batch.status] = per_status.get(batch.status, 0) + sign

    add(before, -1)
    add(after, +1)
    out = []
    for class_id in sorted(changes):
        sums = changes[class_id]
        delta = ClassDelta(
            class_id=class_id,
            batches=sums["batches"],
            by_status=tuple(sorted((s, n) for s, n in statuses[class_id].items() if n)),
            essays_succeeded=sums["ok"],
            essays_failed=sums["failed"],
        )
        if not delta.is_empty:
            out.append(delta)
    return tuple(out)


# -- cache keys -----------------------------------------------------------------------------


def batch_cache_key(batch_id: str) -> str:
    return f"results:batch:{batch_id}"


def class_cache_key(class_id: str) -> str:
    return f"results:class:{class_id}"


def teacher_cache_key(user_id: str) -> str:
    return f"results:teacher:{user_id}"


def cache_keys(before: BatchResults | None, after: BatchResults) -> tuple[str, ...]:
    """The cached views a change of one batch makes stale: the batch, and the class and
    teacher views it was or now is part of. Sorted, without repeats."""
    keys = {batch_cache_key(after.batch_id)}
    for batch in (before, after):
        if batch is None:
            continue
        if batch.class_id is not None:
            keys.add(class_cache_key(batch.class_id))
        if batch.user_id is not None:
            keys.add(teacher_cache_key(batch.user_id))
    return tuple(sorted(keys))
