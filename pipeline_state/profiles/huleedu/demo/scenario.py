"""The demo's story, batch by batch, told through the simulated platform.

Every batch is registered, provisioned (a regular batch also goes through student matching)
and then runs ``cj_assessment``, ``nlp`` and ``ai_feedback``, each to completion. The first
batch also sees a request arrive while its run is active and a redelivered outcome; the
second is registered without a prompt, so its first request is denied. After every step
the story checks what happened against its own expectations (:mod:`.verify`); the
redelivered outcome reaches the result aggregator too, which must ignore it as well.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import attrs

from pipeline_state.profiles.huleedu.events import (
    BatchRegistrationRequestV1,
    ClientBatchPipelineRequestV1,
    Topic,
)

from .platform import Delivery, Message, Platform
from .render import Chapter, Renderer
from .results import ResultsDesk
from .verify import Checks, RunExpectation, check_denial, check_ignored, check_run, check_setup, completions

__all__ = ["DEPENDENCIES", "PIPELINES", "BatchPlan", "Story", "plan_batches"]

CLIENT = "api_gateway_service"
PIPELINES: tuple[str, ...] = ("cj_assessment", "nlp", "ai_feedback")
DEPENDENCIES: Mapping[str, tuple[str, ...]] = {
    "spellcheck": (),
    "cj_assessment": ("spellcheck",),
    "nlp": ("spellcheck",),
    "ai_feedback": ("spellcheck", "nlp"),
}
"""The HuleEdu pipelines as the story reads the contract (plan order: dependencies first)."""

Refs = tuple[tuple[str, str | None], ...]


@attrs.frozen
class BatchPlan:
    """One batch of the story and the detours it takes."""

    batch_id: str
    teacher: str
    essays: int
    class_id: str | None
    prompt_ref: str | None
    denial: Literal["active", "prompt"] | None = None
    redeliver: bool = False


def plan_batches(seed: int, count: int) -> list[BatchPlan]:
    """Alternate guest and regular batches; sizes and classes come from the seed."""
    rng = random.Random(f"{seed}:plans")
    plans = []
    for i in range(count):
        regular = i % 2 == 1
        plans.append(
            BatchPlan(
                batch_id=f"batch-{i + 1:02d}",
                teacher=f"teacher-{rng.randrange(10, 99)}",
                essays=rng.randint(4, 7),
                class_id=f"class-{rng.randrange(1, 9)}{'abc'[rng.randrange(3)]}" if regular else None,
                prompt_ref=None if i == 1 else f"prompt-{rng.randrange(100, 999)}",
                denial="active" if i == 0 else ("prompt" if i == 1 else None),
                redeliver=i == 0,
            )
        )
    return plans


class Story:
    """Plays batches on one platform, renders each chapter and checks it."""

    def __init__(
        self, platform: Platform, renderer: Renderer, checks: Checks, *, results: ResultsDesk | None = None
    ) -> None:
        self.platform = platform
        self.renderer = renderer
        self.checks = checks
        self.runtime = platform.runtime
        self.results = results

    # -- helpers --------------------------------------------------------------------------
    def _request(
        self, plan: BatchPlan, pipeline: str, *, delay: float = 0.0, prompt: Mapping[str, Any] | None = None
    ) -> Message:
        corr = self.platform.new_id()
        request = ClientBatchPipelineRequestV1.model_validate(
            {
                "batch_id": plan.batch_id,
                "requested_pipeline": pipeline,
                "client_correlation_id": corr,
                "user_id": plan.teacher,
                "prompt_payload": prompt,
            }
        )
        return self.platform.send(
            Topic.PIPELINE_REQUEST.value, request, sender=CLIENT, delay=delay, correlation_id=corr
        )

    @staticmethod
    def _expected_inputs(
        dispatched: Sequence[str], content: Refs, recorded: Mapping[str, Refs], produced: Mapping[str, Refs]
    ) -> dict[str, Refs]:
        """The refs each dispatched phase must receive: the batch's content for a root,
        else the essays that came out of all its dependencies, with the last one's refs."""
        outputs: dict[str, Refs] = dict(recorded)
        outputs.update(produced)
        inputs: dict[str, Refs] = {}
        for phase in dispatched:
            deps = DEPENDENCIES[phase]
            if not deps:
                inputs[phase] = content
                continue
            survivors = set.intersection(*({essay for essay, _ in outputs.get(d, ())} for d in deps))
            inputs[phase] = tuple(ref for ref in outputs.get(deps[-1], ()) if ref[0] in survivors)
        return inputs

    # -- the story ------------------------------------------------------------------------
    async def play(self, plans: Sequence[BatchPlan]) -> list[dict[str, Any]]:
        """Play every batch in turn; returns the final snapshots."""
        snapshots = []
        for plan in plans:
            snapshots.append(await self.play_batch(plan))
        runs = completions(self.platform.deliveries)
        per_run: dict[str, int] = {}
        for message in runs:
            run_id = str(message.data["run_id"])
            per_run[run_id] = per_run.get(run_id, 0) + 1
        self.checks.expect(
            all(n == 1 for n in per_run.values()), f"a run completed more than once: {per_run}"
        )
        self.checks.equal(len(per_run), len(plans) * len(PIPELINES), "completed runs")
        return snapshots

    async def play_batch(self, plan: BatchPlan) -> dict[str, Any]:
        self.renderer.batch_header(plan.batch_id, plan.class_id, plan.essays, plan.teacher)
        registration = BatchRegistrationRequestV1(
            batch_id=plan.batch_id,
            expected_essay_count=plan.essays,
            essay_ids=[f"{plan.batch_id}-e{i}" for i in range(1, plan.essays + 1)],
            user_id=plan.teacher,
            class_id=plan.class_id,
            course_code="ENG5",
            student_prompt_ref=plan.prompt_ref,
        )
        self.platform.send(Topic.BATCH_REGISTER.value, registration, sender=CLIENT)
        deliveries = await self.platform.run_until_idle()
        snap = await self.runtime.snapshot(plan.batch_id)
        check_setup(self.checks, plan.batch_id, plan.class_id, deliveries, snap)
        self.renderer.chapter(Chapter("registration and readiness", deliveries))

        recorded: dict[str, Refs] = {}
        for pipeline in PIPELINES:
            await self.play_run(plan, pipeline, recorded)
        return await self.runtime.snapshot(plan.batch_id)

    async def play_run(self, plan: BatchPlan, pipeline: str, recorded: dict[str, Refs]) -> None:
        requests: dict[str, tuple[str, str]] = {}  # event id -> (note, expected denial reason)
        first = len(self.platform.deliveries)
        prompt: Mapping[str, Any] | None = None
        if plan.denial == "prompt" and pipeline == PIPELINES[0]:
            refused = self._request(plan, pipeline)
            await self.platform.run_until_idle()
            requests[refused.event_id] = ("no prompt attached", "prompt_not_attached")
            prompt = {"prompt_ref": f"prompt-for-{plan.batch_id}"}
        history_before = len((await self.runtime.snapshot(plan.batch_id))["history"])
        request = self._request(plan, pipeline, prompt=prompt)
        if plan.denial == "active" and pipeline == PIPELINES[0]:
            intruder = self._request(plan, PIPELINES[1], delay=0.5)
            requests[intruder.event_id] = (f"while {pipeline} runs", "pipeline_already_active")
        await self.platform.run_until_idle()
        deliveries = self.platform.deliveries[first:]
        notes: dict[int, str] = {}
        for event_id, (note, reason) in requests.items():
            index = next((i for i, d in enumerate(deliveries) if d.message.event_id == event_id), None)
            if self.checks.expect(
                index is not None, f"{plan.batch_id}: the denied request was not delivered"
            ):
                assert index is not None
                notes[index] = note
                check_denial(
                    self.checks, deliveries[index], reason, plan.teacher, plan.teacher, plan.batch_id
                )

        steps = (*DEPENDENCIES[pipeline], pipeline)
        pruned = tuple(p for p in steps if p in recorded)
        dispatched = tuple(p for p in steps if p not in recorded)
        jobs = [j for j in self.platform.jobs() if j.correlation_id == request.correlation_id]
        produced = {j.phase: j.processed for j in jobs}
        expect = RunExpectation(
            batch_id=plan.batch_id,
            pipeline=pipeline,
            correlation_id=request.correlation_id,
            dispatched=dispatched,
            pruned=pruned,
            inputs=self._expected_inputs(
                dispatched, self.platform.content(plan.batch_id), recorded, produced
            ),
            history_before=history_before,
        )
        snap = await self.runtime.snapshot(plan.batch_id)
        event = check_run(self.checks, expect, deliveries, jobs, snap)
        for job in jobs:
            recorded[job.phase] = job.processed

        if plan.redeliver and pipeline == PIPELINES[0]:
            extra = await self._redeliver(deliveries)
            for note, delivery in extra:
                notes[len(deliveries)] = note
                deliveries = [*deliveries, delivery]
        self.renderer.chapter(Chapter(f"pipeline {pipeline}", deliveries, notes, event, pruned))

    async def _redeliver(self, deliveries: Sequence[Delivery]) -> list[tuple[str, Delivery]]:
        """At-least-once delivery: the last outcome comes again, with its own and a new id."""
        outcomes = [d.message for d in deliveries if d.message.topic == Topic.PHASE_OUTCOME.value]
        if not self.checks.expect(bool(outcomes), "no phase outcome to redeliver"):
            return []
        last = outcomes[-1]
        again = await self.platform.deliver(last)
        copy = Message(last.topic, last.key, {**last.value, "event_id": self.platform.new_id()})
        duplicate = await self.platform.deliver(copy)
        check_ignored(self.checks, again, "redelivered outcome")
        check_ignored(self.checks, duplicate, "duplicate outcome with a new event_id")
        if self.results is not None:
            seen = len(self.results.observed)
            await self.platform.observe(last)
            await self.platform.observe(copy)
            self.checks.equal(
                [(o.result, o.announced) for o in self.results.observed[seen:]],
                [("duplicate", ()), ("unchanged", ())],
                "redelivered outcomes in the results projection",
            )
        return [("redelivered: same event_id", again), ("again, with a new event_id", duplicate)]
