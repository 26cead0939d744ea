"""The results read model as immutable values: the facts a batch has seen, and views of them.

A batch's read model is not a record that events overwrite: it is a set of *facts*, each
kept under a key with a rule that picks a winner when two facts share the key. Everything a
reader sees (overall status, per-phase results, essay counts) is a property computed from
those facts. Because the winner rules are commutative, associative and idempotent, the
same events give the same read model whatever order they arrive in. One known exception,
which the engine never produces: a run id completed under two correlation ids (a forged or
buggy completion) replaces the first completion, and the dispatches and outcomes of the
first's correlation id, dropped while it was finished, are kept if they arrive afterwards
(``tests/results/test_results_run_under_two_correlations.py``, a strict xfail).

==========================  ============================  ===================================
fact                        key                           winner when two share the key
==========================  ============================  ===================================
:class:`Owner`              the batch (one per batch)     the earliest ``observed_at``
:class:`RunCompletion`      ``run_id``                    the latest ``completed_at``
:class:`PhaseDispatch`      ``(correlation_id, phase)``   the earliest ``observed_at``
:class:`PhaseOutcome`       ``(correlation_id, phase)``   the earliest ``observed_at`` (below)
:class:`PhasePruned`        ``(correlation_id, phase)``   the earliest ``observed_at``
announced run ids           ``run_id``                    set union
==========================  ============================  ===================================

Ties on the timestamp are broken on the fact's content, never on arrival order. A fact's
``event_id`` records where it came from and is left out of equality: the same fact sent
again under a new event id changes nothing.

The engine is the authority on what happened; the read model shows what the engine decided,
from the engine's own messages where it can:

* a *run in progress* is known from the engine's dispatches (:class:`PhaseDispatch`, the
  phase commands it sends), not from the outcomes workers report: the batch is
  ``processing`` while it has a dispatch of a run not completed, stamped at or after its
  latest completion (an older one belongs to a run whose completion has not arrived yet
  while a later run's has: the later run is what the batch shows);
* an outcome is shown (:attr:`BatchResults.in_progress`) only for a dispatched phase, as the
  engine applies it: the *first* outcome of the phase in the run (the engine ignores a
  repeat), among those whose figures (successful + failed) do not exceed the items the
  command sent (the engine refuses an outcome naming items never sent). An outcome whose
  phase has no dispatch (a lost or foreign correlation id, a batch the engine does not know)
  is kept, because the dispatch may arrive later, but not shown. So that the choice never
  depends on arrival order, a key keeps every outcome no earlier outcome with as few or
  fewer figures rules out (the earliest, then each later one with strictly fewer figures):
  whatever the dispatch says, the outcome to show is among them;
* a phase the engine pruned as already completed (:class:`PhasePruned`: done in an earlier
  run, or recorded by an operator) counts as completed from the run that pruned it on, with
  the figures of its latest execution (none are invented).

Normal form: the outcomes and dispatches whose ``correlation_id`` belongs to a completed run
are dropped, because the completion's ``phase_results`` are the authoritative figures of
that run (so a client that reuses a correlation id for a new run sees that run's progress
only once it completes). Event timestamps decide (the producers' clocks), never arrival
order; a dispatch and a completion are both stamped by the engine's clock.

A read model that holds no owner, no completion, no dispatch and no pruned phase (only
worker outcomes) is not a batch the engine is known to have: :attr:`BatchResults.is_known`
is false, and the queries answer it as unknown.

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
    "PhaseDispatch",
    "PhaseOutcome",
    "PhasePruned",
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

    ``registered``: no run has completed or started; ``processing``: the engine dispatched a
    phase of a run not completed (at or after the latest completion). Otherwise the status is
    the latest completed run's ``final_status`` (the other members, or any other value the
    completion carried).
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


class _OfRunPhase:
    """A fact about one phase of one run: keyed by ``(correlation_id, phase)``."""

    __slots__ = ()
    correlation_id: str
    phase: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.correlation_id, self.phase)


@attrs.frozen
class PhaseDispatch(_OfRunPhase):
    """The engine's dispatch of a phase in a run: the phase's initiate command, which the
    engine sends once per phase and run under the run's correlation id (a re-send after a
    deadline keeps its event id)."""

    correlation_id: str
    phase: str
    items: int | None
    """How many items the command sent the phase (``None``: not known, a dispatch inferred
    when a layout-1 document was upgraded)."""
    observed_at: datetime
    event_id: str = attrs.field(eq=False)

    @property
    def rank(self) -> tuple[datetime, bool, int]:
        """The earliest wins; on a tie, a known item count before an unknown one."""
        return (self.observed_at, self.items is None, self.items or 0)

    def admits(self, outcome: PhaseOutcome) -> bool:
        """Whether ``outcome``'s figures fit the items sent (any do when that is unknown)."""
        return self.items is None or outcome.total <= self.items


@attrs.frozen
class PhaseOutcome(_OfRunPhase):
    """One phase outcome reported while a run is in progress (``ELSBatchPhaseOutcomeV1``)."""

    correlation_id: str
    phase: str
    status: str
    successful: int
    failed: int
    observed_at: datetime
    event_id: str = attrs.field(eq=False)

    @property
    def rank(self) -> tuple[datetime, str, int, int]:
        return (self.observed_at, self.status, self.successful, self.failed)

    @property
    def total(self) -> int:
        """The items the outcome names: successful and failed."""
        return self.successful + self.failed

    def view(self) -> PhaseResultView:
        return PhaseResultView(self.phase, self.status, self.successful, self.failed, None)


@attrs.frozen
class PhasePruned(_OfRunPhase):
    """A phase the engine pruned from a run because it was completed before, by an earlier
    run or recorded by an operator (``PhaseSkippedV1`` with ``skip_reason="already_completed"``)."""

    correlation_id: str
    phase: str
    observed_at: datetime
    event_id: str = attrs.field(eq=False)

    @property
    def rank(self) -> tuple[datetime]:
        return (self.observed_at,)


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
    """Outcomes of runs not (yet) completed, ordered by ``(correlation_id, phase)`` then
    rank: per key the earliest, then each later one with strictly fewer figures."""
    dispatches: tuple[PhaseDispatch, ...] = ()
    """The engine's dispatches of runs not (yet) completed, one per ``(correlation_id,
    phase)``, ordered by it."""
    pruned: tuple[PhasePruned, ...] = ()
    """Phases the engine pruned as already completed, one per ``(correlation_id, phase)``,
    ordered by it."""
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
    def running(self) -> tuple[PhaseDispatch, ...]:
        """The dispatches of a run in progress, oldest first: of a correlation id no
        completion has, stamped at or after the latest completion (an older one is of a run
        whose completion has not arrived yet while a later run's has). A dispatch inferred
        from a layout-1 outcome (its item count unknown) must be stamped after it, as layout 1
        showed an outcome in progress only then."""
        finished = {r.correlation_id for r in self.completions}
        latest = self.latest
        found = [
            d
            for d in self.dispatches
            if d.correlation_id not in finished
            and (
                latest is None
                or d.observed_at > latest.completed_at
                or (d.items is not None and d.observed_at == latest.completed_at)
            )
        ]
        return tuple(sorted(found, key=lambda d: d.rank))

    @property
    def in_progress(self) -> tuple[PhaseOutcome, ...]:
        """The outcomes of a run in progress the engine applies, oldest first: for each
        phase :attr:`running`, its earliest outcome whose figures fit the items the phase
        was sent. Outcomes of a phase never dispatched are not shown."""
        running = {d.key: d for d in self.running}
        shown: dict[tuple[str, str], PhaseOutcome] = {}
        for outcome in sorted(self.outcomes, key=lambda o: o.rank):
            dispatch = running.get(outcome.key)
            if dispatch is not None and outcome.key not in shown and dispatch.admits(outcome):
                shown[outcome.key] = outcome
        return tuple(shown.values())

    @property
    def status(self) -> str:
        """The overall status (a :class:`ResultsStatus` value or a completion's final status)."""
        if self.running:
            return ResultsStatus.PROCESSING.value
        latest = self.latest
        if latest is not None:
            return latest.final_status
        return ResultsStatus.REGISTERED.value

    @property
    def is_completed(self) -> bool:
        """Whether a run has completed and no newer run is in progress."""
        return self.latest is not None and not self.running

    @property
    def is_known(self) -> bool:
        """Whether the engine is known to have this batch: its registration, a completed run,
        a dispatch or a pruned phase was seen. A read model of worker outcomes alone (a batch
        the engine never registered, a lost correlation id) is not answered as a batch."""
        return self.owner is not None or bool(self.completions or self.dispatches or self.pruned)

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
        """Phases whose latest result is a success (full or partial), in the order of
        :attr:`phases`; a phase the engine pruned as already completed counts as completed
        from the run that pruned it on (a run in progress comes after the completed ones)."""
        pruned: dict[str, list[str]] = {}
        for fact in self.pruned:
            pruned.setdefault(fact.correlation_id, []).append(fact.phase)
        done: dict[str, bool] = {p.name: False for p in self.phases}
        for run in self.completions:
            for phase in run.phase_results:
                done[phase.name] = phase.is_done
            for name in pruned.pop(run.correlation_id, ()):
                done[name] = True
        for names in pruned.values():
            for name in names:
                done[name] = True
        for outcome in self.in_progress:
            done[outcome.phase] = outcome.view().is_done
        return tuple(name for name, ok in done.items() if ok)

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
        stamps += [d.observed_at for d in self.dispatches] + [p.observed_at for p in self.pruned]
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
