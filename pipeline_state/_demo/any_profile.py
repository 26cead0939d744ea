"""``pipeline-state demo --profile SPEC``: play any profile in memory.

``SPEC`` names a :class:`~pipeline_state._profile.Profile` (or a function of no arguments
returning one) as ``path/to/file.py:NAME`` or ``package.module:NAME``. Every pipeline of its
catalog runs on each batch; simulated workers answer every phase command, losing an item
now and then (seeded). The demo checks what the engine promises whatever the profile: every
accepted run ends exactly once in the batch's history, the batch is ready again, and no
run is left active.
"""

from __future__ import annotations

import asyncio
import random
import sys

from pipeline_state._profile import Profile
from pipeline_state._runtime import InMemoryRuntime
from pipeline_state.errors import DefinitionError
from pipeline_state.profiles import load_profile
from pipeline_state.testing.builders import Envelopes

__all__ = ["load_profile", "run_profile_demo"]

ITEMS_PER_BATCH = 3
LOSS_RATE = 0.2
"""How often a simulated worker loses one item of a command it answers."""


async def _play(profile: Profile, *, seed: int, batches: int) -> list[str]:
    rng = random.Random(seed)
    rt, env = InMemoryRuntime(profile), Envelopes(profile=profile)
    problems: list[str] = []
    for b in range(batches):
        batch_id = f"demo-{b + 1}"
        items = env.item_ids(batch_id, min(ITEMS_PER_BATCH, profile.max_items_per_batch))
        await rt.deliver(*env.register(batch_id, item_ids=items))
        await rt.deliver(*env.provisioned(batch_id, items))
        for pipeline in profile.catalog.names:
            before = len((await rt.service.get_batch(batch_id)).history)
            pending = await rt.deliver(
                *env.request(batch_id, pipeline, prompt_payload={"prompt_ref": "demo"})
            )
            while pending:
                message = pending.pop(0)
                if env.phase_of(message) is None:
                    continue
                sent = env.sent_item_ids(message)
                lost = [rng.choice(sent)] if sent and rng.random() < LOSS_RATE else []
                pending += await rt.deliver(*env.answer(message, failed=lost))
            state = await rt.service.get_batch(batch_id)
            runs = state.history[before:]
            if state.active_run is not None or len(runs) != 1:
                problems.append(f"{batch_id} {pipeline}: {len(runs)} runs ended, active {state.active_run}")
                continue
            run = runs[0]
            print(
                f"{batch_id}  {pipeline:16} {run.status.value:24} ran {list(run.completed_phases)}"
                f"  skipped {list(run.skipped_phases)}"
            )
            if state.status.value != "ready_for_pipeline_execution":
                problems.append(f"{batch_id} {pipeline}: batch left {state.status.value}")
    return problems


def run_profile_demo(spec: str, *, seed: int = 7, batches: int = 2) -> int:
    """Play the profile ``spec`` names; 0 when every check held, 1 otherwise, 2 for a bad spec."""
    try:
        profile = load_profile(spec)
    except DefinitionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    pipelines = ", ".join(profile.catalog.names)
    print(f"profile {profile.name}: pipelines {pipelines}; {batches} batch(es), seed {seed}")
    problems = asyncio.run(_play(profile, seed=seed, batches=batches))
    for problem in problems:
        print(f"FAILED: {problem}")
    if problems:
        return 1
    print("OK: every run ended exactly once and every batch is ready again.")
    return 0
