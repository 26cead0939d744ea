"""The demo: the whole HuleEdu platform played in memory around the runtime.

``pipeline-state demo`` (and :func:`run_demo`) registers batches, provisions their content,
matches students for a regular batch, then runs ``cj_assessment``, ``nlp`` (spellcheck is
pruned) and ``ai_feedback`` (spellcheck and nlp pruned) against simulated services that let
some essays fail. A result aggregator (:class:`~.results.ResultsDesk`) projects the same
events into the results read model. The demo shows the flow, ends with each batch's history
and the results view, and checks its own story, results included: the exit code is 0 only
when every expectation held.
"""

from __future__ import annotations

import asyncio
import sys
from typing import IO

from pipeline_state.profiles.huleedu.events import Topic

from .platform import Platform, standard_services
from .render import Renderer
from .results import ResultsDesk
from .scenario import Story, plan_batches
from .verify import Checks, check_results

__all__ = ["MAX_BATCHES", "play", "run_demo"]

MAX_BATCHES = 20


async def play(
    seed: int,
    batches: int,
    renderer: Renderer,
    *,
    platform: Platform | None = None,
    results: ResultsDesk | None = None,
) -> Checks:
    """Play ``batches`` batches on ``platform`` (a fresh one by default) with ``results`` as
    the result aggregator (a fresh one on the platform's clock by default); returns the checks."""
    platform = platform or Platform(seed)
    if not platform.services:
        for service in standard_services(seed):
            platform.add(service)
    desk = results or ResultsDesk(platform.runtime.clock)
    platform.watch(desk)
    checks = Checks()
    renderer.title(seed, batches)
    story = Story(platform, renderer, checks, results=desk)
    plans = plan_batches(seed, batches)
    snapshots = await story.play(plans)
    renderer.history(snapshots)
    owners = {p.batch_id: (p.teacher, p.class_id) for p in plans}
    views = await desk.batch_views(owners)
    classes = await desk.class_views(p.class_id for p in plans if p.class_id is not None)
    ready = desk.announcements(Topic.RESULTS_READY.value)
    notes = [
        m
        for m in desk.announcements(Topic.TEACHER_NOTIFICATION.value)
        if m.data["notification_type"] == "batch_results_ready"
    ]
    renderer.results(views, classes, len(ready), len(notes))
    check_results(checks, owners, platform.deliveries, views, classes, ready, notes)
    renderer.verdict(checks.passed, checks.violations)
    return checks


def run_demo(*, seed: int = 7, batches: int = 2, plain: bool = False, file: IO[str] | None = None) -> int:
    """Run the demo and print it; returns 0 when the story checked out, 1 otherwise
    (2 for a bad argument)."""
    if not 1 <= batches <= MAX_BATCHES:
        print(f"error: --batches must be between 1 and {MAX_BATCHES}, got {batches}", file=sys.stderr)
        return 2
    checks = asyncio.run(play(seed, batches, Renderer(plain=plain, file=file)))
    return 0 if checks.ok else 1
