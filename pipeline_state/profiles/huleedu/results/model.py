"""The results read model as immutable values: the facts a batch has seen, and views of them.

A batch's read model is not a record that events overwrite: it is a set of *facts*, each
kept under a key with a rule that picks a winner when two facts share the key. Everything a
reader sees (overall status, per-phase results, essay counts) is a property computed from
those facts. Because the winner rules are commutative, associative and idempotent, the
same events give the same read model whatever order they arrive in.

==========================  ============================  ===================================
fact                        key                           winner when two share the key
==========================  ============================  ===================================
:class:`Owner`              the batch (one per batch)     the earliest ``observed_at``
:class:`RunCompletion`      ``run_id``                    the latest ``completed_at``
:class:`PhaseOutcome`       ``(correlation_id, phase)``   the latest ``observed_at``
announced run ids           ``run_id``                    set union
==========================  ============================  ===================================

Ties on the timestamp are broken on the fact's content, never on arrival order. A fact's
``event_id`` records where it came from and is left out of equality: the same fact sent
again under a new event id changes nothing.

Normal form: an outcome whose ``correlation_id`` belongs to a completed run is dropped,
because the completion's ``phase_results`` are the authoritative figures of that run (so a
client that reuses a correlation id for a new run sees that run's progress only once it
completes). A batch is ``processing`` while it has outcomes newer than its latest completion.
Event timestamps decide (the producers' clocks), never arrival order.

Where the owner comes from: ``BatchPipelineCompletedV1`` and ``ELSBatchPhaseOutcomeV1`` carry
the batch id only. The owner (teacher ``user_id``) and ``class_id`` come from the batch
registration fact (``BatchEssaysRegistered`` on ``huleedu.batch.essays.registered.v1``) or
from an :class:`~pipeline_state.profiles.huleedu.results.ports.OwnerLookup`; they fill in whenever known, in
any order with the other events.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum

import attrs

from pipeline_state._lifecycle import PHASE_DONE

__all__ = [
    "BatchResults",
    "ClassDelta",
    "ClassResults",
    "Owner",
    "PhaseOutcome",
    "PhaseResultView",
    "ResultsStatus",
    "RunCompletion",
]

_DONE = frozenset(s.value for s in PHASE_DONE)


def _content(attribute: attrs.Attribute[object], value: object) -> bool:
    """Fields that say what a fact states (its provenance, ``event_id``, left out)."""
    return attribute.name != "event_id"


class ResultsStatus(StrEnum):
    """Overall status of a batch in the read model (wire values).

    ``registered``: only the owner is known; ``processing``: phase outcomes newer than the
    latest completion exist. Otherwise the status is the latest completed run's
    ``final_status`` (the other members, or any other value the completion carried).
    """

    REGISTERED = "registered"
    PROCESSING = "processing"
    COMPLETED_SUCCESSFULLY = "completed_successfully"
    COMPLETED_WITH_FAILURES = "completed_with_failures"
    FAILED_CRITICALLY = "failed_critically"
    CANCELLED = "cancelled"


@attrs.frozen
class Owner:
    """Who owns a batch and which class it belongs to (``None`` for a guest batch)."""

    user_id: str
    class_id: str | None
    expected_essays: int | None
    observed_at: datetime
    event_id: str = attrs.field(eq=False)

    @property
    def rank(self) -> tuple[datetime, str, str, int]:
        return (self.observed_at, self.user_id, self.class_id or "", self.expected_essays or 0)


@attrs.frozen
class PhaseResultView:
    """One phase's figures: status (a phase execution status value), essay counts and the
    duration (``None`` while only an outcome, which has no duration, is known)."""

    name: str
    status: str
    successful: int
    failed: int
    duration_seconds: float | None

    @property
    def is_done(self) -> bool:
        """Completed successfully or with partial success."""
        return self.status in _DONE


@attrs.frozen
class PhaseOutcome:
    """One phase outcome reported while a run is in progress (``ELSBatchPhaseOutcomeV1``)."""

    correlation_id: str
    phase: str
    status: str
    successful: int
    failed: int
    observed_at: datetime
    event_id: str = attrs.field(eq=False)

    @property
    def key(self) -> tuple[str, str]:
        return (self.correlation_id, self.phase)

    @property
    def rank(self) -> tuple[datetime, str, int, int]:
        return (self.observed_at, self.status, self.successful, self.failed)

    def view(self) -> PhaseResultView:
        return PhaseResultView(self.phase, self.status, self.successful, self.failed, None)


@attrs.frozen
class RunCompletion:
    """One finished run (``BatchPipelineCompletedV1``): its final status and real figures.

    ``phase_results`` keeps the order of the completion event (the run's plan order).
    """

    run_id: str
    correlation_id: str
    pipeline_name: str
    final_status: str
    completed_phases: tuple[str, ...]
    skipped_phases: tuple[str, ...]
    processing_duration_seconds: float
    successful_essays: int
    failed_essays: int
    phase_results: tuple[PhaseResultView, ...]
    completed_at: datetime
    event_id: str = attrs.field(eq=False)

    @property
    def rank(self) -> tuple[datetime, str]:
        return (self.completed_at, repr(attrs.astuple(self, filter=_content)))

    @property
    def order(self) -> tuple[datetime, str]:
        """Run order: by completion time, then run id."""
        return (self.completed_at, self.run_id)

    @property
    def total_essays(self) -> int:
        """Essays that entered the run."""
        return self.successful_essays + self.failed_essays


@attrs.frozen
class BatchResults:
    """The read model of one batch: its facts, and the views readers use.

    ``version`` (compare-and-set) and ``updated_at`` are bookkeeping of the store: they are
    left out of equality, so two read models are equal when they hold the same facts.
    """

    batch_id: str
    owner: Owner | None = None
    completions: tuple[RunCompletion, ...] = ()
    """Completed runs in run order (:attr:`RunCompletion.order`), one per run id."""
    outcomes: tuple[PhaseOutcome, ...] = ()
    """Outcomes of runs not (yet) completed, ordered by ``(correlation_id, phase)``."""
    announced: tuple[str, ...] = ()
    """Run ids whose results were announced (``BatchResultsReadyV1``), sorted."""
    version: int = attrs.field(default=0, eq=False)
    updated_at: datetime | None = attrs.field(default=None, eq=False)

    # -- owner ----------------------------------------------------------------------------
    @property
    def user_id(self) -> str | None:
        return None if self.owner is None else self.owner.user_id

    @property
    def class_id(self) -> str | None:
        return None if self.owner is None else self.owner.class_id

    # -- runs -----------------------------------------------------------------------------
    @property
    def latest(self) -> RunCompletion | None:
        """The latest completed run: the one the batch's results show."""
        return self.completions[-1] if self.completions else None

    def completion(self, run_id: str) -> RunCompletion | None:
        for run in self.completions:
            if run.run_id == run_id:
                return run
        return None

    @property
    def in_progress(self) -> tuple[PhaseOutcome, ...]:
        """Outcomes newer than the latest completion, oldest first: a run in progress."""
        latest = self.latest
        newer = [o for o in self.outcomes if latest is None or o.observed_at > latest.completed_at]
        return tuple(sorted(newer, key=lambda o: o.rank))

    @property
    def status(self) -> str:
        """The overall status (a :class:`ResultsStatus` value or a completion's final status)."""
        if self.in_progress:
            return ResultsStatus.PROCESSING.value
        latest = self.latest
        if latest is not None:
            return latest.final_status
        return ResultsStatus.REGISTERED.value

    @property
    def is_completed(self) -> bool:
        """Whether a run has completed and no newer run is in progress."""
        return self.latest is not None and not self.in_progress

    # -- figures --------------------------------------------------------------------------
    @property
    def phases(self) -> tuple[PhaseResultView, ...]:
        """Each phase's latest figures: from the completions, oldest to newest (a phase a
        newer run pruned keeps its earlier result), then the outcomes of a run in progress.
        Ordered by first appearance."""
        found: dict[str, PhaseResultView] = {}
        for run in self.completions:
            for phase in run.phase_results:
                found[phase.name] = phase
        for outcome in self.in_progress:
            found[outcome.phase] = outcome.view()
        return tuple(found.values())

    @property
    def completed_phases(self) -> tuple[str, ...]:
        """Phases whose latest result is a success (full or partial)."""
        return tuple(p.name for p in self.phases if p.is_done)

    @property
    def essays_succeeded(self) -> int:
        latest = self.latest
        return 0 if latest is None else latest.successful_essays

    @property
    def essays_failed(self) -> int:
        latest = self.latest
        return 0 if latest is None else latest.failed_essays

    @property
    def last_activity_at(self) -> datetime | None:
        stamps = [r.completed_at for r in self.completions] + [o.observed_at for o in self.outcomes]
        if self.owner is not None:
            stamps.append(self.owner.observed_at)
        return max(stamps) if stamps else None


@attrs.frozen
class ClassDelta:
    """A change to one class's summary: added to it in the unit of work that changes a batch.

    A batch entering a class adds ``batches=1`` and ``+1`` to its status; leaving a status
    subtracts one; essay counts move by the difference.
    """

    class_id: str
    batches: int = 0
    by_status: tuple[tuple[str, int], ...] = ()
    essays_succeeded: int = 0
    essays_failed: int = 0

    @property
    def is_empty(self) -> bool:
        return not (self.batches or self.by_status or self.essays_succeeded or self.essays_failed)


@attrs.frozen
class ClassResults:
    """The read model of one class: its batches by overall status and the essays that
    succeeded or failed in their latest completed runs."""

    class_id: str
    batch_count: int = 0
    by_status: tuple[tuple[str, int], ...] = ()
    """``(status, number of batches)`` pairs, sorted by status, zero counts left out."""
    essays_succeeded: int = 0
    essays_failed: int = 0

    @property
    def batches_by_status(self) -> Mapping[str, int]:
        return dict(self.by_status)

    def apply(self, delta: ClassDelta) -> ClassResults:
        """This summary with ``delta`` added."""
        counts = dict(self.by_status)
        for status, change in delta.by_status:
            counts[status] = counts.get(status, 0) + change
        return ClassResults(
            class_id=self.class_id,
            batch_count=self.batch_count + delta.batches,
            by_status=tuple(sorted((s, n) for s, n in counts.items() if n)),
            essays_succeeded=self.essays_succeeded + delta.essays_succeeded,
            essays_failed=self.essays_failed + delta.essays_failed,
        )
