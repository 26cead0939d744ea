"""A deliberately simple reference model of the contract, for property tests.

:class:`ReferenceModel` restates CONTRACT sections 1-2 and 4 with plain dicts, sets and
lists: no lifecycle machines, no immutable values, no shared code with the engine. It is
fed the same inputs as the engine under test and predicts, for each one, an
:class:`Expectation`: whether the input is applied, ignored, denied (and why) or rejected as
bad input, which phases the accepted run prunes, which phases get dispatched with which
essays, and which runs complete with which ``final_status`` and counts. Its views
(:meth:`ReferenceModel.view`) have the shape of the engine's snapshot, so a harness can
compare the two after every step.

The pipelines come as the catalog's dict format (declaration order matters: plan order is
"the first declared step whose dependencies are all placed"). Phase statuses and batch
statuses are the wire strings of the contract.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "DEFAULT_PROMPT_PHASES",
    "Completion",
    "Dispatch",
    "Expectation",
    "RefBatch",
    "RefPhase",
    "RefRun",
    "ReferenceModel",
    "Refs",
    "plan_order",
]

Refs = dict[str, str | None]
"""Essays as ``{essay_id: text_storage_id}``."""

DEFAULT_PROMPT_PHASES = frozenset({"nlp", "cj_assessment", "ai_feedback"})

# Batch statuses (CONTRACT 1).
AWAITING_CONTENT = "awaiting_content_validation"
AWAITING_STUDENTS = "awaiting_student_validation"
STUDENTS_DONE = "student_validation_completed"
READY = "ready_for_pipeline_execution"
PROCESSING = "processing_pipelines"

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

Kind = Literal["applied", "ignored", "denied", "raised"]


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
    ) -> None:
        self.pipelines: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
        self.deadlines: dict[str, float | None] = {}
        self.depends_on: dict[str, tuple[str, ...]] = {}
        for name, pipeline in catalog["pipelines"].items():
            steps = []
            for step in pipeline["steps"]:
                deps = tuple(step.get("depends_on") or ())
                steps.append((step["name"], deps))
                if step["name"] not in self.depends_on:
                    self.depends_on[step["name"]] = deps
                    self.deadlines[step["name"]] = step.get("deadline_seconds")
            self.pipelines[name] = steps
        self.max_parallel = max_parallel
        self.prompt_phases = prompt_phases
        self.max_resends = max_resends
        self.strict_correlation = strict_correlation
        self.batches: dict[str, RefBatch] = {}
        self.seen: set[str] = set()
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
        return self._done(event_id, Expectation("applied"))

    def provision(self, event_id: str, batch_id: str, essays: Refs) -> Expectation:
        return self._readiness(event_id, batch_id, AWAITING_CONTENT, essays, provisioning=True)

    def confirm_associations(self, event_id: str, batch_id: str) -> Expectation:
        return self._readiness(event_id, batch_id, AWAITING_STUDENTS, None)

    def essays_ready(self, event_id: str, batch_id: str, essays: Refs) -> Expectation:
        return self._readiness(event_id, batch_id, STUDENTS_DONE, essays)

    def _readiness(
        self, event_id: str, batch_id: str, expected: str, essays: Refs | None, *, provisioning: bool = False
    ) -> Expectation:
        if not self._first_time(event_id):
            return Expectation("ignored", duplicate=True)
        batch = self.batches.get(batch_id)
        if batch is None:
            return Expectation("raised")
        if batch.status != expected:
            return self._done(event_id, Expectation("ignored"))
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
        return self._done(event_id, Expectation("applied"))

    def request(
        self, event_id: str, batch_id: str, pipeline: str, correlation_id: str, *, prompt: bool
    ) -> Expectation:
        """A pipeline request; ``prompt`` says whether it carries a prompt payload."""
        if not self._first_time(event_id):
            return Expectation("ignored", duplicate=True)
        batch = self.batches.get(batch_id)
        denial = self._admission(batch)
        if denial is None and pipeline not in self.pipelines:
            denial = "unknown_pipeline"
        if denial is not None or batch is None:
            return self._done(event_id, Expectation("denied", denial=denial or "batch_not_found"))
        steps = self.pipelines[pipeline]
        order = plan_order(steps)
        pruned = [name for name in order if name in batch.recorded]
        to_run = [name for name in order if name not in batch.recorded]
        if not (batch.prompt or prompt) and any(name in self.prompt_phases for name in to_run):
            return self._done(event_id, Expectation("denied", denial="prompt_not_attached"))
        if prompt:
            batch.prompt = True
        deps = dict(steps)
        run = RefRun(
            correlation_id=correlation_id,
            pipeline=pipeline,
            order=order,
            final_step=order[-1],
            phases={name: RefPhase(name, deps[name], self.deadlines.get(name)) for name in to_run},
            pruned=pruned,
            accepted_at=self.now,
        )
        return self._done(event_id, self._start(batch, run))

    def retry(self, event_id: str, batch_id: str, phase: str, correlation_id: str) -> Expectation:
        """Run one phase again in a new run (``RetryPhase``)."""
        if not self._first_time(event_id):
            return Expectation("ignored", duplicate=True)
        batch = self.batches.get(batch_id)
        if batch is None:
            return Expectation("raised")
        denial = self._admission(batch)
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
        return self._done(event_id, self._start(batch, run))

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
        if not self._first_time(event_id):
            return Expectation("ignored", duplicate=True)
        batch = self.batches.get(batch_id)
        if batch is None or phase not in self.phases:
            return Expectation("raised")
        run = batch.active
        if run is None or phase not in run.phases:
            return self._done(event_id, Expectation("ignored"))
        if run.correlation_id != correlation_id:
            # An earlier run's id is stale; an id of no run of the batch is applied to the
            # active run (workers lose correlation ids), unless the profile is strict.
            earlier = {old.correlation_id for old in batch.history}
            if self.strict_correlation or correlation_id in earlier:
                return self._done(event_id, Expectation("ignored"))
        target = run.phases[phase]
        if target.status != DISPATCHED:
            return self._done(event_id, Expectation("ignored"))
        sent = set(target.inputs or {})
        named = [*processed, *failed]
        if len(set(failed)) != len(failed) or not set(named) <= sent or set(processed) & set(failed):
            return Expectation("raised")  # items not sent to the phase, or processed and failed
        target.status = _OUTCOME_STATUS[phase_status]
        target.outputs = dict(processed)
        target.failed = len(failed)
        target.finished_at = self.now
        expectation = Expectation("applied")
        self._advance(batch, expectation)
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
        return self._done(event_id, expectation)

    def advance_clock(self, seconds: float) -> None:
        self.now += seconds

    def expire(self) -> Expectation:
        """The sweeper at the current time: every overdue dispatched phase has its command
        sent again (with a new deadline) up to ``max_resends`` times, then fails."""
        expectation = Expectation("ignored")
        for _, batch in sorted(self.batches.items()):
            run = batch.active
            if run is None:
                continue
            overdue = [p for p in run.phases.values() if p.status == DISPATCHED and p.deadline_at is not None]
            overdue = [p for p in overdue if p.deadline_at is not None and p.deadline_at <= self.now]
            if not overdue:
                continue
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
            if phase.depends_on and not inputs:
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

    def _close(self, batch: RefBatch, expectation: Expectation) -> None:
        run = batch.active
        assert run is not None
        statuses = [p.status for p in run.phases.values()]
        final = run.phases.get(run.final_step)
        if CANCELLED in statuses:
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
                batch.recorded[name] = dict(phase.outputs)
        batch.history.append(run)
        batch.active = None
        batch.status = READY
