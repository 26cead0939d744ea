"""A service in 20 lines: register a batch, request a pipeline, answer its phase commands.

The in-memory runtime plays the orchestrator; this script plays every other service. Each
delivery returns the messages it emitted: a phase command is answered with an outcome (the
spellchecker loses one essay), until the completion event arrives.
"""

import asyncio

from pipeline_state import InMemoryRuntime
from pipeline_state.testing import Envelopes


async def main() -> None:
    rt, env = InMemoryRuntime(), Envelopes(source_service="my_service")
    phase_of = {spec.topic: name for name, spec in rt.service.profile.phase_commands.items()}
    essays = env.item_ids("b1", 4)
    await rt.deliver(*env.register("b1", items=4))  # a guest batch (no class) ...
    await rt.deliver(*env.provisioned("b1", essays))  # ... is ready once its content is stored
    pending = await rt.deliver(*env.request("b1", "cj_assessment"))
    while pending:
        message = pending.pop(0)
        data, corr = message["value"]["data"], message["value"]["correlation_id"]
        if message["topic"] in phase_of:  # a phase command: do the work, report the outcome
            phase, ids = phase_of[message["topic"]], [e["essay_id"] for e in data["essays_to_process"]]
            failed = ids[-1:] if phase == "spellcheck" else []
            outcome = env.outcome("b1", phase, corr, processed=ids[: len(ids) - len(failed)], failed=failed)
            pending += await rt.deliver(*outcome)
        elif "final_status" in data:  # BatchPipelineCompletedV1
            print(data["final_status"], data["completed_phases"], data["failed_essay_count"], "failed")
    print("batch is now", (await rt.snapshot("b1"))["status"])


if __name__ == "__main__":
    asyncio.run(main())
