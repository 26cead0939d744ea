"""State as immutable value objects: a batch, its active run, its phases and what decisions
keep of its history.

Nothing here changes in place; :mod:`pipeline_state._decide` builds new values with
:func:`attrs.evolve`. Timestamps are timezone-aware UTC datetimes from the injected clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any, TypeVar

import attrs

from ._lifecycle import (
    PHASE_ACTIVE,
    PHASE_DONE,
    PHASE_SKIPPED,
    PHASE_TERMINAL,
    BatchStatus,
    PhaseStatus,
    RunStatus,
)

__all__ = [
    "ALIASES_KEPT",
    "RECORDED_PIPELINE_PREFIX",
    "RUN_KEY_LENGTH",
    "BatchState",
    "ItemRef",
    "Past",
    "PhaseRun",
    "Run",
    "all_terminal",
    "evolve",
    "evolver",
    "run_key",
]

RECORDED_PIPELINE_PREFIX = "manual:"
"""The pipeline name of a run that records a phase an operator reported done outside the
engine begins with this (``manual:<phase>``); no catalog pipeline may."""


@attrs.frozen(slots=True, cache_hash=False)
class ItemRef:
    """An item of a batch and where its (possibly processed) content is stored."""

    item_id: str
    content_ref: str | None = None


@attrs.frozen(slots=True)
class PhaseRun:
    """One phase (step) of a run, with its execution status and real counts."""

    name: str
    depends_on: tuple[str, ...]
    status: PhaseStatus = PhaseStatus.PENDING_DEPENDENCIES
    deadline_seconds: float | None = None
    dispatched_at: datetime | None = None
    deadline_at: datetime | None = None
    finished_at: datetime | None = None
    inputs: tuple[ItemRef, ...] = ()
    outputs: tuple[ItemRef, ...] = ()
    failed_item_ids: tuple[str, ...] = ()
    error: str | None = None
    command_event_id: str | None = None
    """Outbox event id of the command that started the phase (re-sent with the same id)."""
    resends: int = 0
    """How many times the command was re-sent after the phase's deadline passed."""

    @property
    def is_active(self) -> bool:
        return self.status in PHASE_ACTIVE

    @property
    def is_terminal(self) -> bool:
        return self.status in PHASE_TERMINAL

    @property
    def is_done(self) -> bool:
        """Completed successfully or with partial success."""
        return self.status in PHASE_DONE

    @property
    def duration_seconds(self) -> float:
        if self.dispatched_at is None or self.finished_at is None:
            return 0.0
        return max(0.0, (self.finished_at - self.dispatched_at).total_seconds())


def all_terminal(phases: Iterable[PhaseRun]) -> bool:
    """Whether every one of ``phases`` is terminal."""
    for phase in phases:  # noqa: SIM110 (a loop: no generator frame per call)
        if phase.status not in PHASE_TERMINAL:
            return False
    return True


@attrs.frozen(slots=True)
class Run:
    """One accepted pipeline request on one batch; archived into history once finished."""

    run_id: str
    pipeline_name: str
    correlation_id: str
    requested_by: str
    accepted_at: datetime
    final_step: str
    phases: tuple[PhaseRun, ...]
    pruned: tuple[str, ...] = ()
    status: RunStatus = RunStatus.ACTIVE
    completed_at: datetime | None = None
    is_retry: bool = False
    retry_reason: str | None = None
    plan: tuple[str, ...] = ()
    """Every step of the resolved pipeline in plan order, pruned ones included."""

    @property
    def recorded(self) -> bool:
        """Whether this run records a phase an operator reported done outside the engine
        (``RecordPhaseCompletion`` on an idle batch): no pipeline request was accepted."""
        return self.pipeline_name.startswith(RECORDED_PIPELINE_PREFIX)

    def phase(self, name: str) -> PhaseRun | None:
        for phase in self.phases:
            if phase.name == name:
                return phase
        return None

    @property
    def phase_statuses(self) -> Mapping[str, str]:
        return MappingProxyType({p.name: p.status.value for p in self.phases})

    @property
    def completed_phases(self) -> tuple[str, ...]:
        return tuple([p.name for p in self.phases if p.status in PHASE_DONE])

    @property
    def skipped_phases(self) -> tuple[str, ...]:
        """Phases that did not run: pruned ones first, then those skipped after a failure."""
        return self.pruned + tuple([p.name for p in self.phases if p.status in PHASE_SKIPPED])

    @property
    def is_finished(self) -> bool:
        return all_terminal(self.phases)


RUN_KEY_LENGTH = 16
"""Characters of a run id a batch's summary keeps (:func:`run_key`)."""


ALIASES_KEPT = 16
"""How many of the latest ids :attr:`Past.answered` and :attr:`Past.reported` each keep."""

_E = TypeVar("_E")


def run_key(run_id: str) -> str:
    """What :attr:`Past.runs` keeps of ``run_id``: its first :data:`RUN_KEY_LENGTH`
    characters without dashes (60 bits of a derived id's hash). The summary is rewritten
    with every event of its batch, so it keeps less than the id: two run ids of one batch
    share a key only by a 1 in 2**60 chance per pair, and a request would then be taken
    for the one that started the other run."""
    return run_id.replace("-", "")[:RUN_KEY_LENGTH]


def _latest(entries: tuple[_E, ...], entry: _E) -> tuple[_E, ...]:
    """``entries`` with ``entry`` last (moved there if it was already in), the latest
    :data:`ALIASES_KEPT` kept."""
    return (*(e for e in entries if e != entry), entry)[-ALIASES_KEPT:]


@attrs.frozen(slots=True)
class Past:
    """What decisions need of a batch's archived runs, without the runs themselves.

    The runs are kept by the store (one row each in the SQL store's ``runs`` table) and read
    only to show them; a decision reads this summary, whose size does not grow with the
    batch's history but for the ids a store may leave out:

    * ``count``: how many runs the batch has archived;
    * ``accepted``: when the latest archived runs were accepted, oldest first: as many as
      the profile's rate limits can count (:attr:`~pipeline_state._profile.Profile.runs_remembered`),
      all of them when the summary was derived from a full history;
    * ``recorded``: per phase completed (fully or partially) in an earlier run, the processed
      items of its latest successful execution, the latest last: what pruning and forwarding
      read;
    * ``correlations`` and ``runs``: the archived runs' correlation ids and keys
      (:func:`run_key`), oldest first, *when known* (:attr:`known`). An outcome carrying an
      archived run's correlation id is stale; a run-starting command whose derived run id
      has its key here was handled already, its inbox entry purged since. The memory store
      keeps them; the SQL store does not write them (an event would rewrite every archived
      run's ids) and the service looks them up in the store's history for the rare input
      whose decision asks about them (:func:`~pipeline_state._decide.asks_archived_ids`).
      They are what this copy of the summary knows of the store's history, not part of the
      batch's state: two summaries are equal when they count the same runs with the same
      acceptance times and outputs, whatever ids each lists;
    * ``answered``: ``(run key, correlation id)`` of each outcome applied to a run under a
      correlation id that was not the run's (``correlation_mismatch``: a worker that lost
      the run's id; only ids by the wire's rule), the latest :data:`ALIASES_KEPT`. Once
      that run is no longer active, an outcome carrying such an id is stale, as one
      carrying the run's own id is: the same
      answer again (a worker's retry under a fresh event id, a redelivery after the inbox
      purge) neither waits for nor moves a later run;
    * ``reported``: the keys of the run ids derived from operator reports of a phase done
      (``RecordPhaseCompletion``) that were applied to an active run's phase, the latest
      :data:`ALIASES_KEPT`: the same report again, its inbox entry purged, was handled
      already (on an idle batch a report starts a run named after it, which ``runs``
      lists).

    The last two are stored with the summary (they are few: at most one per phase of a
    run, only for these rare inputs, :data:`ALIASES_KEPT` in all) and are part of the
    batch's state.
    """

    count: int = 0
    accepted: tuple[datetime, ...] = ()
    recorded: tuple[tuple[str, tuple[ItemRef, ...]], ...] = ()
    correlations: tuple[str, ...] = attrs.field(default=(), eq=False)
    runs: tuple[str, ...] = attrs.field(default=(), eq=False)
    answered: tuple[tuple[str, str], ...] = ()
    reported: tuple[str, ...] = ()

    @property
    def known(self) -> bool:
        """Whether the summary lists every archived run's correlation id and key."""
        return len(self.correlations) == self.count and len(self.runs) == self.count

    def knowing(self, archived: Iterable[tuple[str, str]]) -> Past:
        """This summary listing the ids of the archived runs ``archived`` (``(run id,
        correlation id)`` pairs, oldest first, as the store keeps them), followed by the ids
        it lists already that ``archived`` lacks (runs archived since the store was read)."""
        pairs = list(archived)
        keys = [run_key(run_id) for run_id, _ in pairs]
        correlations = [correlation for _, correlation in pairs]
        stored = set(keys)
        for key, correlation in zip(self.runs, self.correlations, strict=False):
            if key not in stored:
                keys.append(key)
                correlations.append(correlation)
        return attrs.evolve(self, correlations=tuple(correlations), runs=tuple(keys))

    def recorded_outputs(self) -> dict[str, tuple[ItemRef, ...]]:
        """The outputs of the latest completion of each step that let an item through (a
        state stored before such steps were left out may still list one without)."""
        return {name: refs for name, refs in self.recorded if refs}

    def is_archived(self, correlation_id: str, active_run_id: str | None = None) -> bool:
        """Whether ``correlation_id`` is the correlation id of an archived run (of those
        listed: see :attr:`known`), or one an outcome applied to a run other than
        ``active_run_id`` carried instead of that run's (:attr:`answered`)."""
        if correlation_id in self.correlations:
            return True
        if not self.answered:
            return False
        active = None if active_run_id is None else run_key(active_run_id)
        return any(key != active and correlation == correlation_id for key, correlation in self.answered)

    def answering(self, run_id: str, correlation_id: str) -> Past:
        """This summary remembering that an outcome carrying ``correlation_id`` was applied
        to run ``run_id``, whose own correlation id is another (:attr:`answered`; an entry
        seen again moves last, the latest kept)."""
        return attrs.evolve(self, answered=_latest(self.answered, (run_key(run_id), correlation_id)))

    def reporting(self, report_run_id: str) -> Past:
        """This summary remembering that the report whose derived run id is
        ``report_run_id`` was applied to the active run (:attr:`reported`; as
        :meth:`answering`)."""
        return attrs.evolve(self, reported=_latest(self.reported, run_key(report_run_id)))

    def reported_as(self, run_id: str) -> bool:
        """Whether ``run_id`` is (its key is that of) the derived run id of a report applied
        to a run's phase (:attr:`reported`): that report was handled, and started no run."""
        return run_key(run_id) in self.reported

    def after(self, run: Run, *, remember: int | None = None) -> Past:
        """This summary with ``run`` archived too, keeping the acceptance times of the latest
        ``remember`` archived runs (``None``: all)."""
        recorded = dict(self.recorded)
        for phase in run.phases:
            if phase.status in PHASE_DONE:
                recorded.pop(phase.name, None)  # re-inserted: the order says which came last
                if phase.outputs:
                    # A step done without outputs (every item failed) gave the later steps
                    # nothing: it is not pruned, but runs again when a pipeline needs it.
                    recorded[phase.name] = phase.outputs
        # A recorded run was no request: rate limits, which read these times, leave it out.
        accepted = self.accepted if run.recorded else (*self.accepted, run.accepted_at)
        if remember is not None:
            accepted = accepted[len(accepted) - remember :] if remember > 0 else ()
        return Past(
            count=self.count + 1,
            accepted=accepted,
            recorded=tuple(recorded.items()),
            correlations=(*self.correlations, run.correlation_id),
            runs=(*self.runs, run_key(run.run_id)),
            answered=self.answered,
            reported=self.reported,
        )

    def started(self, run_id: str) -> bool:
        """Whether ``run_id`` is (its key is that of) the id of an archived run (of those
        listed: see :attr:`known`)."""
        return run_key(run_id) in self.runs

    @classmethod
    def of(cls, history: tuple[Run, ...], *, remember: int | None = None) -> Past:
        """The summary of ``history`` (archived runs, oldest first), keeping the acceptance
        times of the latest ``remember`` runs (``None``: all)."""
        past = cls()
        for run in history:
            past = past.after(run, remember=remember)
        return past


@attrs.frozen(slots=True)
class BatchState:
    """The whole state of one batch: registration data, lifecycle status, active run and
    what decisions keep of its archived runs (``past``).

    ``history`` holds the archived runs themselves, oldest first, only in a state read to be
    shown (:meth:`~pipeline_state._service.PipelineService.get_batch`); a state loaded for a
    decision carries ``()``, stores never write it, and decisions never read it.
    """

    batch_id: str
    status: BatchStatus
    version: int
    owner: str
    category: str
    """A short code the profile's commands carry (a course, a catalogue section...)."""
    expected_items: int
    item_ids: tuple[str, ...]
    created_at: datetime
    updated_at: datetime
    org_id: str | None = None
    group_id: str | None = None
    language: str = "en"
    prompt_ref: str | None = None
    items: tuple[ItemRef, ...] = ()
    active_run: Run | None = None
    history: tuple[Run, ...] = ()
    past: Past = Past()

    @property
    def has_group(self) -> bool:
        """Whether the batch was registered with a group (its items belong to its members)."""
        return self.group_id is not None

    def runs(self) -> Iterator[Run]:
        """Archived runs (``history``: only in a state read to be shown), then the active run."""
        yield from self.history
        if self.active_run is not None:
            yield self.active_run


_T = TypeVar("_T")
_UNSET: Any = object()
_EVOLVERS: dict[type, Any] = {}


def _compile_evolver(cls: type) -> Any:
    """Compile ``evolve`` for one attrs class of this module: a new instance whose slots are
    set straight from the old one's, with the changes (no ``__init__``, whose frozen-class
    ``setattr`` costs twice as much; attrs.evolve also looks the fields up and builds a
    kwargs dict on every call). Only for classes without validators, converters or
    ``__attrs_post_init__``: the values were checked when the instance was first built."""
    fields = attrs.fields(cls)
    if any(not f.init or f.alias != f.name or f.validator or f.converter for f in fields):
        raise TypeError(f"{cls.__name__}: use attrs.evolve")
    if hasattr(cls, "__attrs_post_init__") or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__}: use attrs.evolve")
    params = ", ".join(f"{f.name}=_UNSET" for f in fields)
    body = "".join(
        f"    set_{f.name}(new, inst.{f.name} if {f.name} is _UNSET else {f.name})\n" for f in fields
    )
    namespace: dict[str, Any] = {"_UNSET": _UNSET, "make": object.__new__, "cls": cls}
    namespace.update({f"set_{f.name}": cls.__dict__[f.name].__set__ for f in fields})
    exec(f"def evolve(inst, *, {params}):\n    new = make(cls)\n{body}    return new\n", namespace)
    _EVOLVERS[cls] = namespace["evolve"]
    return namespace["evolve"]


def evolver(cls: type[_T]) -> Callable[..., _T]:
    """The compiled :func:`evolve` of ``cls`` (a value class of this module), to call as
    ``evolver(cls)(inst, **changes)``: for a hot path that knows the class, one call less."""
    fn: Callable[..., _T] = _EVOLVERS.get(cls) or _compile_evolver(cls)
    return fn


def evolve(inst: _T, **changes: Any) -> _T:
    """:func:`attrs.evolve` for the value objects of this module, about twice as fast.
    An unknown field name raises ``TypeError`` as attrs.evolve does."""
    fn = _EVOLVERS.get(type(inst)) or _compile_evolver(type(inst))
    result: _T = fn(inst, **changes)
    return result
