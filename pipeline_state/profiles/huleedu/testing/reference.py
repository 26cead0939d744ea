"""A deliberately simple reference model of the contract, for property tests.

:class:`ReferenceModel` restates CONTRACT sections 1-2 and 4 with plain dicts, sets and
lists: no lifecycle machines, no immutable values, no shared code with the engine. It is
fed the same inputs as the engine under test and predicts, for each one, an
:class:`Expectation`: whether the input is applied, ignored, denied (and why) or rejected as
bad input, which phases the accepted run prunes, which phases get dispatched with which
essays, and which runs complete with which ``final_status`` and counts. Its views
(:meth:`ReferenceModel.view`) have the shape of the engine's snapshot, so a harness can
compare the two after every step.

Early facts wait (CONTRACT 4, issue 11): a fact that cannot apply *yet* is kept, in arrival
order, with what it waits for, and re-attempted each time its batch changes (a fact that
applies and changes the batch starts the re-attempts again from the oldest). The rule,
restated from the issue rather than from the engine:

* any fact but a registration, for a batch not registered yet, waits for
  ``batch_registration`` (an outcome naming a phase no pipeline has is bad input instead);
* provisioning, associations and essays-ready wait for ``batch_state:<status>`` while the
  batch is in an earlier status of its readiness path (guest: content, then ready; regular:
  content, students, students done, then ready); later, they are ignored;
* a pipeline request for a known batch waits for ``batch_state:ready_for_pipeline_execution``
  when the batch has no run, can still become ready, and either a readiness fact of the
  batch waits or the request itself was waiting already; otherwise it is admitted or denied;
* an outcome for a batch with no active run waits for ``run_start`` while the batch is
  ready or still on its readiness path, unless its correlation id is an earlier run's;
* an outcome for a phase of the active run that is not dispatched yet waits for
  ``phase_dispatch:<phase>``, unless its correlation id is an earlier run's (stale);
* operator commands and registrations never wait.

A fact that still waits more than ``waiting_window`` seconds after it arrived expires at the
next :meth:`ReferenceModel.sweep_waiting`: a request into its denial, any other fact into a
dead letter naming what it waited for. A fact re-attempted when its batch changed that
turns out never to apply (it raises) stays in the waiting set, marked ``never_applies:``,
is re-attempted no more, and goes to its dead letter at the next sweep, whatever its age.

The pipelines come as the catalog's dict format (declaration order matters: plan order is
"the first declared step whose dependencies are all placed"). Phase statuses and batch
statuses are the wire strings of the contract.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "DEFAULT_PROMPT_PHASES",
    "NEVER_APPLIES",
    "REGISTRATION",
    "Completion",
    "DeadLetter",
    "Dispatch",
    "Expectation",
    "RefBatch",
    "RefPhase",
    "RefRun",
    "ReferenceModel",
    "Refs",
    "Sweep",
    "WaitingRef",
    "plan_order",
]

_IDS = uuid.UUID("6f1c1c2e-9a53-4b8e-8f3c-0d8c43f1b7a1")
"""The namespace of the engine's derived ids (UUID v5 of their parts joined by ``\\x1f``)."""

MAX_REPLAYS = 1_000
"""How many times one fact may be replayed and dead-lettered again (the engine's bound)."""


def replay_id(event_id: str) -> str:
    """The id the replay of a dead-lettered fact ``event_id`` is handled under, as the
    contract derives it (``operator``, ``dlq-reinject`` and the fact's id)."""
    return str(uuid.uuid5(_IDS, "\x1f".join(("operator", "dlq-reinject", event_id))))


Refs = dict[str, str | None]
"""Essays as ``{essay_id: text_storage_id}``."""

DEFAULT_PROMPT_PHASES = frozenset({"nlp", "cj_assessment", "ai_feedback"})

# Batch statuses (CONTRACT 1).
AWAITING_CONTENT = "awaiting_content_validation"
AWAITING_STUDENTS = "awaiting_student_validation"
STUDENTS_DONE = "student_validation_completed"
READY = "ready_for_pipeline_execution"
PROCESSING = "processing_pipelines"
FAILED_CRITICALLY = "failed_critically"

TOPICS = {
    "provision": "huleedu.batch.content.provisioning.completed.v1",
    "associations": "huleedu.class.student.associations.confirmed.v1",
    "essays_ready": "huleedu.els.batch.essays.ready.v1",
    "validation_errors": "huleedu.els.batch.validation.errors.v1",
    "request": "huleedu.commands.batch.pipeline.v1",
    "outcome": "huleedu.els.batch.phase.outcome.v1",
}
"""Inbound topics of the facts that may wait (CONTRACT 3)."""

REGISTRATION = "batch_registration"
"""What a fact for a batch that is not registered yet waits for."""

NEVER_APPLIES = "never_applies:"
"""The prefix of what a fact found never to apply "waits for" (the engine adds the error)."""

_GUEST_PATH = (AWAITING_CONTENT, READY)
_REGULAR_PATH = (AWAITING_CONTENT, AWAITING_STUDENTS, STUDENTS_DONE, READY)
_READINESS = ("provision", "associations", "essays_ready", "validation_errors")
"""The kinds of fact that make a batch ready (or fail it): a request waits with them."""

# Phase statuses (CONTRACT 2).
PENDING = "pending_dependencies"
DISPATCHED = "dispatch_initiated"
SUCCEEDED = "completed_successfully"
PARTIAL = "completed_with_partial_success"
FAILED = "failed"
SKIPPED = "skipped_due_to_dependency_failure"
CANCELLED = "cancelled"
DONE = frozenset({SUCCEEDED, PARTIAL})
NOT_DONE_TERMINAL = frozenset({FAILED, SKIPPED, CANCELLED})
TERMINAL = DONE | NOT_DONE_TERMINAL

_OUTCOME_STATUS = {
    "completed_successfully": SUCCEEDED,
    "completed_with_failures": PARTIAL,
    "failed_critically": FAILED,
}

Kind = Literal["applied", "ignored", "denied", "raised", "waiting"]


@dataclass
class RefPhase:
    """One phase of a reference run."""

    name: str
    depends_on: tuple[str, ...]
    deadline: float | None
    status: str = PENDING
    inputs: Refs | None = None
    outputs: Refs = field(default_factory=dict)
    failed: int = 0
    dispatched_at: float | None = None
    finished_at: float | None = None
    deadline_at: float | None = None
    resends: int = 0
    skip_origin: str | None = None
    """Why it was skipped: ``"failure"`` (a dependency failed) or ``"no_essays"`` (its
    dependencies completed but left no essay in common)."""


@dataclass
class RefRun:
    """One accepted request. ``order`` is the plan order of every step, pruned included."""

    correlation_id: str
    pipeline: str
    order: list[str]
    final_step: str
    phases: dict[str, RefPhase]
    pruned: list[str]
    accepted_at: float = 0.0
    final_status: str | None = None
    answered: set[str] = field(default_factory=set)
    """Correlation ids of no run that outcomes applied to this run carried (a worker that
    lost the run's id): once the run is archived, they are as stale as its own. (The engine
    keeps the latest 16 such ids of a batch; no story here comes near that bound.)"""

    def phase_statuses(self) -> dict[str, str]:
        return {name: phase.status for name, phase in self.phases.items()}

    def completed_phases(self) -> list[str]:
        return [name for name, phase in self.phases.items() if phase.status in DONE]

    def skipped_phases(self) -> list[str]:
        return self.pruned + [name for name, phase in self.phases.items() if phase.status == SKIPPED]


@dataclass
class RefBatch:
    """One batch: registration data, status, essays, prompt flag, active run and history."""

    batch_id: str
    registration: dict[str, Any]
    status: str
    guest: bool
    prompt: bool
    essays: Refs = field(default_factory=dict)
    active: RefRun | None = None
    history: list[RefRun] = field(default_factory=list)
    recorded: dict[str, Refs] = field(default_factory=dict)
    """Outputs of the last successful execution of each phase, in archived runs."""

    def earlier_correlations(self) -> set[str]:
        """The correlation ids of the archived runs, and those their outcomes came under."""
        return {c for old in self.history for c in (old.correlation_id, *old.answered)}


@dataclass
class Dispatch:
    """A phase command the engine should emit."""

    batch_id: str
    phase: str
    correlation_id: str
    essays: Refs


@dataclass
class Completion:
    """A ``BatchPipelineCompletedV1`` the engine should emit."""

    batch_id: str
    correlation_id: str
    pipeline: str
    final_status: str
    completed_phases: list[str]
    skipped_phases: list[str]
    successful: int
    failed: int
    duration: float
    phase_results: dict[str, tuple[str, int, int, float]]
    """``{phase: (status, successful, failed, duration_seconds)}``."""


@dataclass
class Expectation:
    """What one input should do."""

    kind: Kind = "applied"
    denial: str | None = None
    started: str | None = None
    """Correlation id of the run this input started."""
    pruned: list[str] = field(default_factory=list)
    dispatched: list[Dispatch] = field(default_factory=list)
    completed: list[Completion] = field(default_factory=list)
    duplicate: bool = False
    resent: list[tuple[str, str]] = field(default_factory=list)
    """``(batch_id, phase)`` of every overdue phase whose command is sent again."""
    waits_for: str | None = None
    """What the input waits for (kind ``waiting``)."""
    event_id: str | None = None
    batch_id: str | None = None
    resumed: list[Expectation] = field(default_factory=list)
    """What the waiting facts this input let apply (or found never to apply) did, in the
    order they were re-attempted."""

    def steps(self) -> list[Expectation]:
        """This expectation, then those of the waiting facts it resumed."""
        return [self, *self.resumed]

    def all_started(self) -> list[tuple[str, list[str]]]:
        """``(correlation id, pruned phases)`` of every run started, resumed facts included."""
        return [(e.started, e.pruned) for e in self.steps() if e.started is not None]

    def all_dispatched(self) -> list[Dispatch]:
        return [d for e in self.steps() for d in e.dispatched]

    def all_completed(self) -> list[Completion]:
        return [c for e in self.steps() for c in e.completed]


@dataclass
class WaitingRef:
    """A fact kept waiting: ``args`` are what :class:`ReferenceModel` needs to decide it."""

    event_id: str
    batch_id: str
    kind: str
    """``provision``, ``associations``, ``essays_ready``, ``validation_errors``, ``request``
    or ``outcome``."""
    topic: str
    waits_for: str
    arrived_at: float
    args: dict[str, Any]

    @property
    def never_applies(self) -> bool:
        """Found never to apply: kept only for its dead letter."""
        return self.waits_for.startswith(NEVER_APPLIES)


@dataclass
class DeadLetter:
    """An expired fact handed to the dead letter queue, with what it waited for."""

    event_id: str
    batch_id: str
    topic: str
    waits_for: str


@dataclass
class Sweep:
    """What one sweep of the waiting set should do: re-attempts (nothing, normally: facts
    are re-attempted whenever their batch changes), expired requests denied
    (``(event_id, reason)``) and other expired facts dead-lettered, oldest first."""

    resumed: list[Expectation] = field(default_factory=list)
    denied: list[tuple[str, str]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)


def plan_order(steps: Sequence[tuple[str, tuple[str, ...]]]) -> list[str]:
    """Plan order: repeatedly take the first declared step whose dependencies are placed."""
    placed: list[str] = []
    left = list(steps)
    while left:
        for position, (name, deps) in enumerate(left):
            if all(dep in placed for dep in deps):
                placed.append(name)
                del left[position]
                break
        else:  # pragma: no cover - catalogs given to the model are valid DAGs
            raise ValueError("dependency cycle")
    return placed


class ReferenceModel:
    """The contract in plain Python; see the module docstring.

    ``pipelines`` is the catalog's dict format (``{"pipelines": {...}}``), read in
    declaration order. Time is kept as seconds since the start (``advance_clock``).
    """

    def __init__(
        self,
        catalog: Mapping[str, Any],
        *,
        max_parallel: int | None = None,
        prompt_phases: frozenset[str] = DEFAULT_PROMPT_PHASES,
        max_resends: int = 0,
        strict_correlation: bool = False,
        waiting_window: float = 900.0,
    ) -> None:
        self.pipelines: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
        self.deadlines: dict[str, float | None] = {}
        """Each phase's deadline in the pipeline that declares it first (a retry's, as the
        engine's retry pipeline takes that step)."""
        self.step_deadlines: dict[tuple[str, str], float | None] = {}
        """``(pipeline, phase)`` -> the deadline of the phase in that pipeline's run."""
        self.depends_on: dict[str, tuple[str, ...]] = {}
        for name, pipeline in catalog["pipelines"].items():
            steps = []
            for step in pipeline["steps"]:
                deps = tuple(step.get("depends_on") or ())
                steps.append((step["name"], deps))
                self.step_deadlines[(name, step["name"])] = step.get("deadline_seconds")
                if step["name"] not in self.depends_on:
                    self.depends_on[step["name"]] = deps
                    self.deadlines[step["name"]] = step.get("deadline_seconds")
            self.pipelines[name] = steps
        self.max_parallel = max_parallel
        self.prompt_phases = prompt_phases
        self.max_resends = max_resends
        self.strict_correlation = strict_correlation
        self.waiting_window = waiting_window
        self.waiting: list[WaitingRef] = []
        """Waiting facts of every batch, in arrival order."""
        self.batches: dict[str, RefBatch] = {}
        self.seen: set[str] = set()
        self.dead_lettered: set[str] = set()
        """Event ids of facts the waiting sweep dead-lettered: a replay of one is handled
        under a derived id (``pipeline_state._replay``)."""
        self.now = 0.0

    # -- views ----------------------------------------------------------------------------
    @property
    def phases(self) -> set[str]:
        return set(self.depends_on)

    def view(self, batch_id: str) -> dict[str, Any]:
        """The batch in the shape of the engine's snapshot (the fields the model knows)."""
        batch = self.batches[batch_id]
        active = None
        if batch.active is not None:
            run = batch.active
            active = {
                "correlation_id": run.correlation_id,
                "pipeline_name": run.pipeline,
                "phases": run.phase_statuses(),
                "skipped_phases": list(run.pruned),
            }
        history = [
            {
                "correlation_id": run.correlation_id,
                "pipeline_name": run.pipeline,
                "final_status": run.final_status,
                "completed_phases": run.completed_phases(),
                "skipped_phases": run.skipped_phases(),
                "phases": run.phase_statuses(),
            }
            for run in batch.history
        ]
        return {"status": batch.status, "active_run": active, "history": history}

    def active_phases(self) -> list[tuple[str, str]]:
        """``(batch_id, phase)`` of every dispatched, unanswered phase."""
        return [
            (batch_id, name)
            for batch_id, batch in sorted(self.batches.items())
            if batch.active is not None
            for name, phase in batch.active.phases.items()
            if phase.status == DISPATCHED
        ]

    # -- inputs ---------------------------------------------------------------------------
    def _first_time(self, event_id: str) -> bool:
        return event_id not in self.seen

    def _unprocessed(self, event_id: str) -> str | None:
        """The id a fact arriving as ``event_id`` is handled under: its own when new; when
        the waiting sweep dead-lettered it, the id its replay derives (again while that one
        was dead-lettered too); ``None`` for a duplicate."""
        for _ in range(MAX_REPLAYS):
            if event_id not in self.seen:
                return event_id
            if event_id not in self.dead_lettered:
                return None
            event_id = replay_id(event_id)
        return None

    def _done(self, event_id: str, expectation: Expectation) -> Expectation:
        if expectation.kind != "raised":
            self.seen.add(event_id)
        return expectation

    def register(self, event_id: str, data: Mapping[str, Any]) -> Expectation:
        if not self._first_time(event_id):
            return Expectation("ignored", duplicate=True)
        batch_id = data["batch_id"]
        existing = self.batches.get(batch_id)
        if existing is not None:
            keys = ("user_id", "course_code", "expected_essay_count", "org_id", "class_id")
            same = all(existing.registration.get(k) == data.get(k) for k in keys)
            if data.get("essay_ids") is not None:
                same = same and existing.registration.get("essay_ids") == data.get("essay_ids")
            return self._done(event_id, Expectation("ignored" if same else "raised"))
        self.batches[batch_id] = RefBatch(
            batch_id=batch_id,
            registration=dict(data),
            status=AWAITING_CONTENT,
            guest=data.get("class_id") is None,
            prompt=data.get("student_prompt_ref") is not None,
        )
        expectation = Expectation("applied")
        expectation.resumed = self._resume(batch_id)
        return self._done(event_id, expectation)

    def provision(self, event_id: str, batch_id: str, essays: Refs) -> Expectation:
        return self._arrive(event_id, batch_id, "provision", TOPICS["provision"], {"essays": essays})

    def confirm_associations(self, event_id: str, batch_id: str) -> Expectation:
        return self._arrive(event_id, batch_id, "associations", TOPICS["associations"], {})

    def essays_ready(self, event_id: str, batch_id: str, essays: Refs) -> Expectation:
        return self._arrive(event_id, batch_id, "essays_ready", TOPICS["essays_ready"], {"essays": essays})

    def validation_errors(self, event_id: str, batch_id: str, *, critical: bool) -> Expectation:
        """``BatchValidationErrorsV1``: a critical failure fails an open batch, and its active
        run (open phases cancelled, the run completed ``failed_critically``)."""
        args = {"critical": critical}
        return self._arrive(event_id, batch_id, "validation_errors", TOPICS["validation_errors"], args)

    def request(
        self, event_id: str, batch_id: str, pipeline: str, correlation_id: str, *, prompt: bool
    ) -> Expectation:
        """A pipeline request; ``prompt`` says whether it carries a prompt payload."""
        args = {"pipeline": pipeline, "correlation_id": correlation_id, "prompt": prompt}
        return self._arrive(event_id, batch_id, "request", TOPICS["request"], args)

    def outcome(
        self,
        event_id: str,
        batch_id: str,
        phase: str,
        correlation_id: str,
        phase_status: str,
        processed: Refs,
        failed: Sequence[str] = (),
    ) -> Expectation:
        args = {
            "phase": phase,
            "correlation_id": correlation_id,
            "phase_status": phase_status,
            "processed": dict(processed),
            "failed": list(failed),
        }
        return self._arrive(event_id, batch_id, "outcome", TOPICS["outcome"], args)

    def retry(self, event_id: str, batch_id: str, phase: str, correlation_id: str) -> Expectation:
        """Run one phase again in a new run (``RetryPhase``). Operator commands never wait."""
        if not self._first_time(event_id):
            return Expectation("ignored", duplicate=True)
        batch = self.batches.get(batch_id)
        if batch is None:
            return Expectation("raised")
        denial = self._admission(batch)
        if denial is None and correlation_id in batch.earlier_correlations():
            denial = "correlation_reused"
        if denial is None and phase not in self.phases:
            denial = "unknown_pipeline"
        if denial is None and any(dep not in batch.recorded for dep in self.depends_on[phase]):
            denial = "dependencies_not_completed"
        if denial is None and phase in self.prompt_phases and not batch.prompt:
            denial = "prompt_not_attached"
        if denial is not None:
            return self._done(event_id, Expectation("denied", denial=denial))
        run = RefRun(
            correlation_id=correlation_id,
            pipeline=phase,
            order=self._retry_order(phase),
            final_step=phase,
            phases={phase: RefPhase(phase, self.depends_on[phase], self.deadlines.get(phase))},
            pruned=[],
            accepted_at=self.now,
        )
        expectation = self._start(batch, run)
        expectation.resumed = self._resume(batch_id)
        return self._done(event_id, expectation)

    def cancel(self, event_id: str, batch_id: str) -> Expectation:
        """``CancelRun``: bad input without an active run."""
        if not self._first_time(event_id):
            return Expectation("ignored", duplicate=True)
        batch = self.batches.get(batch_id)
        if batch is None or batch.active is None:
            return Expectation("raised")
        for phase in batch.active.phases.values():
            if phase.status not in TERMINAL:
                phase.status = CANCELLED
                phase.finished_at = self.now
        expectation = Expectation("applied")
        self._close(batch, expectation)
        expectation.resumed = self._resume(batch_id)
        return self._done(event_id, expectation)

    def advance_clock(self, seconds: float) -> None:
        self.now += seconds

    def expire(self) -> Expectation:
        """The sweeper at the current time: every overdue dispatched phase has its command
        sent again (with a new deadline) up to ``max_resends`` times, then fails. Batches go
        the most overdue first (earliest deadline, then batch id). A batch it changed has its
        waiting facts re-attempted."""
        expectation = Expectation("ignored")
        due: list[tuple[float, str, RefBatch]] = []
        for batch_id, batch in self.batches.items():
            run = batch.active
            if run is None:
                continue
            deadlines = [
                p.deadline_at
                for p in run.phases.values()
                if p.status == DISPATCHED and p.deadline_at is not None
            ]
            if deadlines and min(deadlines) <= self.now:
                due.append((min(deadlines), batch_id, batch))
        for _, _, batch in sorted(due, key=lambda d: (d[0], d[1])):
            run = batch.active
            assert run is not None
            overdue = [
                p
                for p in run.phases.values()
                if p.status == DISPATCHED and p.deadline_at is not None and p.deadline_at <= self.now
            ]
            expectation.kind = "applied"
            for phase in overdue:
                if phase.resends < self.max_resends:
                    phase.resends += 1
                    assert phase.deadline is not None
                    phase.deadline_at = self.now + phase.deadline
                    expectation.resent.append((batch.batch_id, phase.name))
                    continue
                phase.status = FAILED
                phase.finished_at = self.now
                phase.failed = len(phase.inputs or {})  # no outcome came: all its essays failed
            self._advance(batch, expectation)
            expectation.resumed.extend(self._resume(batch.batch_id))
        return expectation

    # -- waiting facts --------------------------------------------------------------------
    def waiting_view(self) -> list[tuple[str, str, str]]:
        """``(event_id, batch_id, waits_for)`` of every waiting fact, in arrival order."""
        return [(w.event_id, w.batch_id, w.waits_for) for w in self.waiting]

    def sweep_waiting(self) -> Sweep:
        """One sweep at the current time: re-attempt the batches that have waiting facts,
        then expire every fact that has waited longer than ``waiting_window``."""
        sweep = Sweep()
        for batch_id in dict.fromkeys(w.batch_id for w in self.waiting):
            sweep.resumed.extend(self._resume(batch_id))
        for fact in list(self.waiting):
            if self.now - fact.arrived_at <= self.waiting_window and not fact.never_applies:
                continue
            self.waiting.remove(fact)
            if fact.kind == "request" and not fact.never_applies:
                denial = self._admission(self.batches.get(fact.batch_id))
                assert denial in ("batch_not_found", "batch_not_ready"), denial
                sweep.denied.append((fact.event_id, denial))
            else:
                self.dead_lettered.add(fact.event_id)
                sweep.dead_letters.append(
                    DeadLetter(fact.event_id, fact.batch_id, fact.topic, fact.waits_for)
                )
        return sweep

    def _arrive(
        self, event_id: str, batch_id: str, kind: str, topic: str, args: dict[str, Any]
    ) -> Expectation:
        """A fact that may wait: a duplicate, kept waiting, or decided now (and then, if it
        changed its batch, the batch's waiting facts are re-attempted)."""
        replayed = self._unprocessed(event_id)
        if replayed is None:
            return Expectation("ignored", duplicate=True)
        event_id = replayed
        fact = WaitingRef(event_id, batch_id, kind, topic, "", self.now, args)
        reason = self._waits(fact, fresh=True)
        if reason is not None:
            fact.waits_for = reason
            self.waiting.append(fact)
            return self._done(event_id, Expectation("waiting", waits_for=reason))
        expectation = self._decide(fact)
        if expectation.kind == "applied":
            expectation.resumed = self._resume(batch_id)
        return self._done(event_id, expectation)

    def _waits(self, fact: WaitingRef, *, fresh: bool) -> str | None:
        """What ``fact`` waits for now, or ``None`` when it can be decided (applied,
        ignored, denied or raised). ``fresh``: it has just arrived (not re-attempted)."""
        args = fact.args
        if fact.kind == "outcome" and args["phase"] not in self.phases:
            return None  # bad input, whatever the batch
        batch = self.batches.get(fact.batch_id)
        if batch is None:
            return REGISTRATION
        if fact.kind == "request":
            can_become_ready = batch.active is None and batch.status in _REGULAR_PATH[:-1]
            if not can_become_ready:
                return None
            readiness_waits = any(
                w.batch_id == fact.batch_id and w.kind in _READINESS for w in self.waiting if w is not fact
            )
            return f"batch_state:{READY}" if readiness_waits or not fresh else None
        if fact.kind == "outcome":
            run = batch.active
            stale = args["correlation_id"] in batch.earlier_correlations()
            if run is None:
                path = _GUEST_PATH if batch.guest else _REGULAR_PATH
                return "run_start" if not stale and batch.status in path else None
            if args["phase"] not in run.phases:
                return None
            if stale:
                return None  # an earlier run's outcome: stale
            if run.phases[args["phase"]].status != PENDING:
                return None
            return f"phase_dispatch:{args['phase']}"
        if fact.kind == "validation_errors":
            return None  # a critical failure applies to any open batch; the rest is ignored
        needed = {
            "provision": AWAITING_CONTENT,
            "associations": AWAITING_STUDENTS,
            "essays_ready": STUDENTS_DONE,
        }[fact.kind]
        path = _GUEST_PATH if batch.guest else _REGULAR_PATH
        if batch.status not in path or needed not in path:
            return None
        if path.index(needed) > path.index(batch.status):
            return f"batch_state:{needed}"
        return None

    def _resume(self, batch_id: str) -> list[Expectation]:
        """Re-attempt ``batch_id``'s waiting facts in arrival order: each that no longer
        waits is decided and leaves the waiting set; after one changes the batch, start
        again from the oldest. The others now wait for what they wait for now."""
        out: list[Expectation] = []
        moved = True
        while moved:
            moved = False
            for fact in [w for w in self.waiting if w.batch_id == batch_id and not w.never_applies]:
                reason = self._waits(fact, fresh=False)
                if reason is not None:
                    fact.waits_for = reason
                    continue
                place = self.waiting.index(fact)
                self.waiting.remove(fact)
                expectation = self._decide(fact)
                expectation.event_id = fact.event_id
                expectation.batch_id = batch_id
                out.append(expectation)
                if expectation.kind == "raised":  # kept, in its place, for its dead letter
                    fact.waits_for = NEVER_APPLIES
                    self.waiting.insert(place, fact)
                    continue
                if expectation.kind == "applied":
                    moved = True
                    break
        return out

    def _decide(self, fact: WaitingRef) -> Expectation:
        """Decide a fact that does not wait (on the current state)."""
        args = fact.args
        if fact.kind == "provision":
            return self._readiness(fact.batch_id, AWAITING_CONTENT, args["essays"])
        if fact.kind == "associations":
            return self._readiness(fact.batch_id, AWAITING_STUDENTS, None)
        if fact.kind == "essays_ready":
            return self._readiness(fact.batch_id, STUDENTS_DONE, args["essays"])
        if fact.kind == "validation_errors":
            return self._validation_errors(fact.batch_id, args["critical"])
        if fact.kind == "request":
            return self._request(
                fact.batch_id, args["pipeline"], args["correlation_id"], prompt=args["prompt"]
            )
        return self._outcome(
            fact.batch_id,
            args["phase"],
            args["correlation_id"],
            args["phase_status"],
            args["processed"],
            args["failed"],
        )

    # -- deciding, restated ---------------------------------------------------------------
    def _readiness(self, batch_id: str, expected: str, essays: Refs | None) -> Expectation:
        batch = self.batches.get(batch_id)
        if batch is None:  # pragma: no cover - such a fact waits for the registration
            return Expectation("raised")
        if batch.status != expected:
            return Expectation("ignored")
        if essays is not None:
            # Only registered items: no more than registered, and the registration's ids
            # when it named them (a dict cannot name an essay twice).
            named = batch.registration.get("essay_ids")
            if len(essays) > batch.registration["expected_essay_count"]:
                return Expectation("raised")
            if named is not None and not set(essays) <= set(named):
                return Expectation("raised")
            batch.essays = dict(essays)
        if expected == AWAITING_CONTENT:
            batch.status = READY if batch.guest else AWAITING_STUDENTS
        elif expected == AWAITING_STUDENTS:
            batch.status = STUDENTS_DONE
        else:
            batch.status = READY
        return Expectation("applied")

    def _validation_errors(self, batch_id: str, critical: bool) -> Expectation:
        batch = self.batches.get(batch_id)
        if batch is None:  # pragma: no cover - such a fact waits for the registration
            return Expectation("raised")
        if not critical or batch.status not in (*_REGULAR_PATH, PROCESSING):
            return Expectation("ignored")  # non-critical, or the batch has ended already
        expectation = Expectation("applied")
        if batch.active is not None:  # the run ends with its batch
            for phase in batch.active.phases.values():
                if phase.status not in TERMINAL:
                    phase.status = CANCELLED
                    phase.finished_at = self.now
            self._close(batch, expectation, final_status="failed_critically")
        batch.status = FAILED_CRITICALLY
        return expectation

    def _request(self, batch_id: str, pipeline: str, correlation_id: str, *, prompt: bool) -> Expectation:
        batch = self.batches.get(batch_id)
        denial = self._admission(batch)
        if denial is None and batch is not None and correlation_id in batch.earlier_correlations():
            denial = "correlation_reused"
        if denial is None and pipeline not in self.pipelines:
            denial = "unknown_pipeline"
        if denial is not None or batch is None:
            return Expectation("denied", denial=denial or "batch_not_found")
        steps = self.pipelines[pipeline]
        order = plan_order(steps)
        pruned = [name for name in order if name in batch.recorded]
        to_run = [name for name in order if name not in batch.recorded]
        if not (batch.prompt or prompt) and any(name in self.prompt_phases for name in to_run):
            return Expectation("denied", denial="prompt_not_attached")
        if prompt:
            batch.prompt = True
        deps = dict(steps)
        run = RefRun(
            correlation_id=correlation_id,
            pipeline=pipeline,
            order=order,
            final_step=order[-1],
            phases={
                name: RefPhase(name, deps[name], self.step_deadlines.get((pipeline, name))) for name in to_run
            },
            pruned=pruned,
            accepted_at=self.now,
        )
        return self._start(batch, run)

    def _outcome(
        self,
        batch_id: str,
        phase: str,
        correlation_id: str,
        phase_status: str,
        processed: Refs,
        failed: Sequence[str],
    ) -> Expectation:
        batch = self.batches.get(batch_id)
        if batch is None or phase not in self.phases:
            return Expectation("raised")
        run = batch.active
        if run is None or phase not in run.phases:
            return Expectation("ignored")
        # An earlier run's id (or one an earlier run's outcome came under) is stale; an id of
        # no run of the batch is applied to the active run (workers lose correlation ids),
        # unless the profile is strict.
        foreign = run.correlation_id != correlation_id
        if foreign and (self.strict_correlation or correlation_id in batch.earlier_correlations()):
            return Expectation("ignored")
        target = run.phases[phase]
        if target.status != DISPATCHED:
            return Expectation("ignored")
        sent = set(target.inputs or {})
        named = [*processed, *failed]
        if len(set(failed)) != len(failed) or not set(named) <= sent or set(processed) & set(failed):
            return Expectation("raised")  # items not sent to the phase, or processed and failed
        if foreign:
            run.answered.add(correlation_id)
        target.status = _OUTCOME_STATUS[phase_status]
        if target.status == SUCCEEDED and failed:
            target.status = _OUTCOME_STATUS["completed_with_failures"]  # a success naming failures
        if target.status == FAILED:  # nothing goes on: every item it was given failed
            target.outputs = {}
            target.failed = len(target.inputs or {})
        else:
            target.outputs = dict(processed)
            target.failed = len(failed)
        target.finished_at = self.now
        expectation = Expectation("applied")
        self._advance(batch, expectation)
        return expectation

    # -- the engine, restated -------------------------------------------------------------
    @staticmethod
    def _admission(batch: RefBatch | None) -> str | None:
        if batch is None:
            return "batch_not_found"
        if batch.active is not None or batch.status == PROCESSING:
            return "pipeline_already_active"
        if batch.status != READY:
            return "batch_not_ready"
        return None

    def _retry_order(self, phase: str) -> list[str]:
        """A retried phase and its dependencies, in the plan order of the first declared
        pipeline that contains it (the order that decides whose essay refs it gets)."""
        wanted = {phase, *self.depends_on[phase]}
        for steps in self.pipelines.values():
            order = plan_order(steps)
            if phase in order:
                return [name for name in order if name in wanted]
        return [*self.depends_on[phase], phase]  # pragma: no cover - phases come from pipelines

    def _start(self, batch: RefBatch, run: RefRun) -> Expectation:
        expectation = Expectation("applied", started=run.correlation_id, pruned=list(run.pruned))
        batch.status = PROCESSING
        batch.active = run
        self._advance(batch, expectation)
        return expectation

    def _inputs(self, batch: RefBatch, run: RefRun, phase: RefPhase) -> Refs | None:
        """Essays a phase would receive; ``None`` while a dependency is unfinished."""
        if not phase.depends_on:
            return dict(batch.essays)
        position = {name: i for i, name in enumerate(run.order)}
        outputs: list[Refs] = []
        for dep in sorted(phase.depends_on, key=lambda d: position.get(d, -1)):
            mine = run.phases.get(dep)
            if mine is None:
                outputs.append(batch.recorded.get(dep, {}))
            elif mine.status in DONE:
                outputs.append(mine.outputs)
            elif mine.status in TERMINAL:
                outputs.append({})
            else:
                return None
        common = set(outputs[0]).intersection(*outputs[1:])
        return {essay: ref for essay, ref in outputs[-1].items() if essay in common}

    def _advance(self, batch: RefBatch, expectation: Expectation) -> None:
        """Skip what cannot run, dispatch what can (within ``max_parallel``), then close the
        run if every phase is terminal."""
        run = batch.active
        assert run is not None
        running = sum(1 for p in run.phases.values() if p.status == DISPATCHED)
        for name in run.order:
            phase = run.phases.get(name)
            if phase is None or phase.status != PENDING:
                continue
            blocked = [run.phases[d] for d in phase.depends_on if d in run.phases]
            blocked = [d for d in blocked if d.status in NOT_DONE_TERMINAL]
            if blocked:
                phase.status = SKIPPED
                phase.finished_at = self.now
                origins = {d.skip_origin if d.status == SKIPPED else "failure" for d in blocked}
                phase.skip_origin = "failure" if "failure" in origins else "no_essays"
                continue
            inputs = self._inputs(batch, run, phase)
            if inputs is None:
                continue
            if not inputs:
                phase.status = SKIPPED
                phase.finished_at = self.now
                phase.skip_origin = "no_essays"
                continue
            if self.max_parallel is not None and running >= self.max_parallel:
                continue
            phase.status = DISPATCHED
            phase.inputs = inputs
            phase.dispatched_at = self.now
            phase.deadline_at = None if phase.deadline is None else self.now + phase.deadline
            running += 1
            expectation.dispatched.append(Dispatch(batch.batch_id, name, run.correlation_id, dict(inputs)))
        if all(p.status in TERMINAL for p in run.phases.values()):
            self._close(batch, expectation)

    def _close(self, batch: RefBatch, expectation: Expectation, *, final_status: str | None = None) -> None:
        """Archive the active run with its final status (``final_status``, else from its
        phases: the contract's rule) and its completion; the batch is ready again."""
        run = batch.active
        assert run is not None
        statuses = [p.status for p in run.phases.values()]
        final = run.phases.get(run.final_step)
        if final_status is not None:
            run.final_status = final_status
        elif CANCELLED in statuses:
            run.final_status = "cancelled"
        elif all(s == SUCCEEDED for s in statuses):
            run.final_status = "completed_successfully"
        elif final is not None and final.status not in DONE:
            run.final_status = "failed_critically"
        else:
            run.final_status = "completed_with_failures"
        if final is None:
            successful = set(batch.recorded.get(run.final_step, {}))
        else:
            successful = set(final.outputs) if final.status in DONE else set()
        entered = set(successful)
        for phase in run.phases.values():
            entered.update(phase.inputs or {})
        expectation.completed.append(
            Completion(
                batch_id=batch.batch_id,
                correlation_id=run.correlation_id,
                pipeline=run.pipeline,
                final_status=run.final_status,
                completed_phases=run.completed_phases(),
                skipped_phases=run.skipped_phases(),
                successful=len(successful),
                failed=len(entered - successful),
                duration=self.now - run.accepted_at,
                phase_results={
                    name: (
                        phase.status,
                        len(phase.outputs),
                        phase.failed,
                        0.0
                        if phase.dispatched_at is None or phase.finished_at is None
                        else phase.finished_at - phase.dispatched_at,
                    )
                    for name, phase in run.phases.items()
                },
            )
        )
        for name, phase in run.phases.items():
            if phase.status in DONE:
                if phase.outputs:
                    batch.recorded[name] = dict(phase.outputs)
                else:  # done without outputs: not pruned later
                    batch.recorded.pop(name, None)
        batch.history.append(run)
        batch.active = None
        batch.status = READY
