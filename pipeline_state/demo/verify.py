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

from pipeline_state.events import Topic

from .platform import Delivery, Job, Message

__all__ = [
    "PHASE_OF_COMMAND",
    "Checks",
    "RunExpectation",
    "check_denial",
    "check_ignored",
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
