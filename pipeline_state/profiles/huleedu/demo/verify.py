"""The demo double-checks its own story.

:class:`Checks` collects named expectations and the violations among them. The check
functions below compare what the runtime emitted and stored with what an independent,
hard-coded reading of the contract expects (which phases run, which are pruned, which essay
refs each service receives, the completion's counts and statuses). The demo exits non-zero
when any of them fails.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from pipeline_state.profiles.huleedu.events import Topic

from .platform import Delivery, Job, Message

__all__ = [
    "PHASE_OF_COMMAND",
    "Checks",
    "RunExpectation",
    "check_denial",
    "check_ignored",
    "check_results",
    "check_run",
    "check_setup",
    "completions",
    "emitted",
]

PHASE_OF_COMMAND: Mapping[str, str] = {
    Topic.SPELLCHECK.value: "spellcheck",
    Topic.CJ_ASSESSMENT.value: "cj_assessment",
    Topic.NLP.value: "nlp",
    Topic.AI_FEEDBACK.value: "ai_feedback",
}

Refs = tuple[tuple[str, str | None], ...]


@attrs.define
class Checks:
    """Expectations made so far and the ones that did not hold."""

    passed: int = 0
    violations: list[str] = attrs.field(factory=list)

    def expect(self, condition: bool, what: str) -> bool:
        if condition:
            self.passed += 1
        else:
            self.violations.append(what)
        return condition

    def equal(self, actual: object, expected: object, what: str) -> bool:
        return self.expect(actual == expected, f"{what}: expected {expected!r}, got {actual!r}")

    @property
    def ok(self) -> bool:
        return not self.violations


@attrs.frozen
class RunExpectation:
    """What one run must do, worked out by the story without asking the library."""

    batch_id: str
    pipeline: str
    correlation_id: str
    dispatched: tuple[str, ...]
    pruned: tuple[str, ...]
    inputs: Mapping[str, Refs]
    history_before: int


def emitted(deliveries: Sequence[Delivery], topic: str, correlation_id: str | None = None) -> list[Message]:
    """Messages emitted on ``topic`` (carrying ``correlation_id`` when given), in order."""
    return [
        m
        for d in deliveries
        for m in d.emitted
        if m.topic == topic and (correlation_id is None or m.correlation_id == correlation_id)
    ]


def completions(deliveries: Sequence[Delivery]) -> list[Message]:
    return emitted(deliveries, Topic.PIPELINE_COMPLETED.value)


def check_setup(
    checks: Checks,
    batch_id: str,
    class_id: str | None,
    deliveries: Sequence[Delivery],
    snap: Mapping[str, Any],
) -> None:
    """Registration and readiness: the guest path skips matching, the regular one runs it."""
    label = f"{batch_id} setup"
    registered = emitted(deliveries, Topic.ESSAYS_REGISTERED.value)
    checks.equal(len(registered), 1, f"{label}: BatchEssaysRegistered events")
    matching = emitted(deliveries, Topic.STUDENT_MATCHING.value)
    checks.equal(len(matching), 0 if class_id is None else 1, f"{label}: student matching commands")
    if class_id is not None and matching:
        checks.equal(matching[0].data.get("class_id"), class_id, f"{label}: matching class_id")
    checks.equal(snap["status"], "ready_for_pipeline_execution", f"{label}: status")
    checks.equal(snap["active_run"], None, f"{label}: active run")


def check_denial(
    checks: Checks, delivery: Delivery, reason: str, requester: str, teacher: str, batch_id: str
) -> None:
    """A denial is never silent and changes nothing."""
    label = f"{batch_id} denial"
    topics = [m.topic for m in delivery.emitted]
    checks.equal(
        topics, [Topic.PIPELINE_DENIED.value, Topic.TEACHER_NOTIFICATION.value], f"{label}: emitted topics"
    )
    if topics and topics[0] == Topic.PIPELINE_DENIED.value:
        denied = delivery.emitted[0].data
        checks.equal(denied["denial_reason"], reason, f"{label}: reason")
        checks.equal(denied["user_id"], requester, f"{label}: user_id")
    if len(topics) == 2:
        note = delivery.emitted[1]
        checks.equal(note.key, teacher, f"{label}: notification key")
        checks.equal(note.data["notification_type"], "pipeline_denied", f"{label}: notification type")
    checks.expect(not delivery.changed, f"{label}: the batch version moved on a denial")


def check_ignored(checks: Checks, delivery: Delivery, what: str) -> None:
    """A redelivered or duplicate message emits nothing and changes nothing."""
    checks.equal([m.topic for m in delivery.emitted], [], f"{what}: emitted")
    checks.expect(not delivery.changed, f"{what}: the batch version moved")


def _final_status(jobs: Sequence[Job]) -> str:
    if all(j.status == "completed_successfully" for j in jobs):
        return "completed_successfully"
    return "completed_with_failures"


def check_run(
    checks: Checks,
    expect: RunExpectation,
    deliveries: Sequence[Delivery],
    jobs: Sequence[Job],
    snap: Mapping[str, Any],
) -> Mapping[str, Any] | None:
    """One accepted run: dispatch, pruning, forwarding, completion and archiving."""
    label = f"{expect.batch_id} {expect.pipeline}"
    corr = expect.correlation_id
    done = emitted(deliveries, Topic.PIPELINE_COMPLETED.value, corr)
    checks.equal(len(done), 1, f"{label}: completion events")
    commands = [
        PHASE_OF_COMMAND[m.topic] for d in deliveries for m in d.emitted if m.topic in PHASE_OF_COMMAND
    ]
    checks.equal(tuple(commands), expect.dispatched, f"{label}: dispatched phases")
    skipped = [
        (m.data["phase_name"], m.data["skip_reason"]) for m in emitted(deliveries, Topic.PHASE_SKIPPED.value)
    ]
    checks.equal(skipped, [(p, "already_completed") for p in expect.pruned], f"{label}: PhaseSkippedV1")
    run_jobs = [j for j in jobs if j.correlation_id == corr]
    checks.equal(tuple(j.phase for j in run_jobs), expect.dispatched, f"{label}: phases the services ran")
    for job in run_jobs:
        checks.equal(job.inputs, expect.inputs.get(job.phase), f"{label}: essays_to_process of {job.phase}")
    for d in deliveries:
        if d.message.correlation_id == corr:
            stray = [m.topic for m in d.emitted if m.correlation_id != corr]
            checks.equal(stray, [], f"{label}: messages without the run's correlation_id")
    checks.equal(snap["status"], "ready_for_pipeline_execution", f"{label}: status after the run")
    checks.equal(snap["active_run"], None, f"{label}: active run after completion")
    checks.equal(len(snap["history"]), expect.history_before + 1, f"{label}: history length")
    if len(done) != 1 or not run_jobs:
        return None
    event = done[0].data
    final = run_jobs[-1]
    entered = {essay for j in run_jobs for essay, _ in j.inputs}
    checks.equal(event["pipeline_name"], expect.pipeline, f"{label}: completion pipeline_name")
    checks.equal(tuple(event["completed_phases"]), expect.dispatched, f"{label}: completed_phases")
    checks.equal(tuple(event["skipped_phases"]), expect.pruned, f"{label}: skipped_phases")
    checks.equal(event["final_status"], _final_status(run_jobs), f"{label}: final_status")
    checks.equal(event["successful_essay_count"], len(final.processed), f"{label}: successful_essay_count")
    checks.equal(
        event["failed_essay_count"], len(entered) - len(final.processed), f"{label}: failed_essay_count"
    )
    for job in run_jobs:
        result = event["phase_results"].get(job.phase, {})
        checks.equal(
            (result.get("successful"), result.get("failed")),
            (len(job.processed), len(job.failed)),
            f"{label}: phase_results of {job.phase}",
        )
    if snap["history"]:
        last = snap["history"][-1]
        checks.equal(
            (last["run_id"], last["final_status"]),
            (event["run_id"], event["final_status"]),
            f"{label}: archived run",
        )
    return event


def _figures(result: Mapping[str, Any]) -> tuple[Any, ...]:
    return (result["status"], result["successful"], result["failed"], result["duration_seconds"])


def check_results(
    checks: Checks,
    owners: Mapping[str, tuple[str, str | None]],
    deliveries: Sequence[Delivery],
    views: Sequence[Mapping[str, Any]],
    classes: Sequence[Mapping[str, Any]],
    ready: Sequence[Message],
    notes: Sequence[Message],
) -> None:
    """The results view against the completions the orchestrator emitted.

    ``owners`` maps each batch to its teacher and class. Each batch's read model must show
    its latest run's status and essay counts, and for every phase the figures of the last
    run that ran it; each class the sum of its batches; and every run must be announced
    exactly once (one ``BatchResultsReadyV1`` with the run's figures, one
    ``batch_results_ready`` notification to the teacher).
    """
    runs: dict[str, list[Mapping[str, Any]]] = {}
    for message in completions(deliveries):
        runs.setdefault(str(message.data["batch_id"]), []).append(message.data)
    by_batch = {str(v["batch_id"]): v for v in views}
    checks.equal(sorted(by_batch), sorted(owners), "results: batches in the read model")
    for batch_id, (teacher, class_id) in owners.items():
        view, done = by_batch.get(batch_id), runs.get(batch_id, [])
        if view is None or not checks.expect(bool(done), f"{batch_id} results: no completed run"):
            continue
        label, last = f"{batch_id} results", done[-1]
        checks.equal((view["user_id"], view["class_id"]), (teacher, class_id), f"{label}: owner")
        checks.equal(view["status"], last["final_status"], f"{label}: status")
        checks.equal(
            (view["essays_succeeded"], view["essays_failed"]),
            (last["successful_essay_count"], last["failed_essay_count"]),
            f"{label}: essays succeeded/failed",
        )
        checks.equal([r["run_id"] for r in view["runs"]], [r["run_id"] for r in done], f"{label}: runs")
        expected: dict[str, tuple[Any, ...]] = {}
        for run in done:
            expected.update((phase, _figures(r)) for phase, r in run["phase_results"].items())
        actual = {phase: _figures(r) for phase, r in view["phases"].items()}
        checks.equal(actual, expected, f"{label}: phases")
        checks.equal(view["in_progress"], [], f"{label}: phases in progress")

    members: dict[str, list[str]] = {}
    for batch_id, (_, class_id) in owners.items():
        if class_id is not None:
            members.setdefault(class_id, []).append(batch_id)
    by_class = {str(c["class_id"]): c for c in classes}
    checks.equal(sorted(by_class), sorted(members), "results: classes")
    for class_id, batch_ids in members.items():
        summary = by_class.get(class_id)
        lasts = [runs[b][-1] for b in batch_ids if runs.get(b)]
        if summary is None or len(lasts) != len(batch_ids):
            continue
        statuses: dict[str, int] = {}
        for last in lasts:
            statuses[last["final_status"]] = statuses.get(last["final_status"], 0) + 1
        checks.equal(
            (summary["batch_count"], summary["batches_by_status"]),
            (len(batch_ids), statuses),
            f"{class_id} results: batches by status",
        )
        checks.equal(
            (summary["essays_succeeded"], summary["essays_failed"]),
            (
                sum(r["successful_essay_count"] for r in lasts),
                sum(r["failed_essay_count"] for r in lasts),
            ),
            f"{class_id} results: essays succeeded/failed",
        )

    every = [run for done in runs.values() for run in done]
    by_correlation = {str(run["correlation_id"]): run for run in every}
    checks.equal(len(ready), len(every), "results: BatchResultsReadyV1 events (one per run)")
    checks.equal(
        len({m.event_id for m in ready}), len(ready), "results: distinct BatchResultsReadyV1 event ids"
    )
    checks.equal(sorted(m.correlation_id for m in ready), sorted(by_correlation), "results: runs announced")
    for message in ready:
        source = by_correlation.get(message.correlation_id)
        if source is None:
            continue
        checks.equal(
            (message.key, message.data["overall_status"], message.data["completed_essays"]),
            (source["batch_id"], source["final_status"], source["successful_essay_count"]),
            f"{source['batch_id']} results: BatchResultsReadyV1 of {source['pipeline_name']}",
        )
    announced = sorted(str(m.data["payload"]["run_id"]) for m in notes)
    checks.equal(announced, sorted(str(r["run_id"]) for r in every), "results: runs notified (once each)")
    for note in notes:
        teacher = owners.get(str(note.data["batch_id"]), ("?", None))[0]
        checks.equal(
            (note.key, note.data["category"], note.data["priority"]),
            (teacher, "processing_results", "high"),
            f"{note.data['batch_id']} results: batch_results_ready notification",
        )
