"""Under ``max_parallel``, a phase left without items is skipped at once: skipping dispatches
nothing, so it needs no slot. Was a defect (found by an attack on multi-step pipelines with
operator commands): the skip alternative of ``dispatch`` was guarded by
``below_parallel_limit`` too, so the phase stayed ``pending_dependencies`` while another
phase held the slot, and a ``CancelRun`` in that window archived it as ``cancelled`` (left
out of ``skipped_phases``) where the reference model, and the same run without the limit,
skip it."""

from __future__ import annotations

import copy
from typing import Any

from pipeline_state import CancelRun, InMemoryRuntime
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from pipeline_state.profiles.huleedu.testing.reference import ReferenceModel
from pipeline_state.profiles.huleedu.testing.strategies import ProfileSpec

COMPLETED = Topic.PIPELINE_COMPLETED.value


class Pair:
    """One runtime and the reference model, fed the same inputs."""

    def __init__(self, catalog: dict[str, Any], *, max_parallel: int | None = None) -> None:
        spec = ProfileSpec(copy.deepcopy(catalog), max_parallel=max_parallel, max_resends=0)
        self.rt = InMemoryRuntime(spec.profile())
        self.env = HuleEduEnvelopes()
        self.ref = ReferenceModel(copy.deepcopy(catalog), max_parallel=max_parallel, max_resends=0)

    async def ready(self, batch_id: str, items: int) -> list[str]:
        registration = self.env.register(batch_id, items=items)
        self.ref.register(registration[1]["event_id"], registration[1]["data"])
        await self.rt.deliver(*registration)
        ids = self.env.item_ids(batch_id, items)
        provisioned = self.env.provisioned(batch_id, ids)
        self.ref.provision(provisioned[1]["event_id"], batch_id, {e: f"{e}-text" for e in ids})
        await self.rt.deliver(*provisioned)
        return ids

    async def request(self, batch_id: str, pipeline: str) -> str:
        topic, envelope = self.env.request(batch_id, pipeline)
        corr = envelope["correlation_id"]
        expected = self.ref.request(envelope["event_id"], batch_id, pipeline, corr, prompt=False)
        assert expected.kind == "applied", expected
        await self.rt.deliver(topic, envelope)
        return str(corr)

    async def outcome(
        self, batch_id: str, phase: str, corr: str, *, processed: list[str], failed: list[str], status: str
    ) -> list[dict[str, Any]]:
        topic, envelope = self.env.outcome(
            batch_id, phase, corr, processed=processed, failed=failed, status=status
        )
        refs = {e: f"{e}-{phase}" for e in processed}
        self.ref.outcome(envelope["event_id"], batch_id, phase, corr, status, refs, failed)
        return await self.rt.deliver(topic, envelope)

    async def phases(self, batch_id: str) -> dict[str, str]:
        state = await self.rt.service.get_batch(batch_id)
        assert state.active_run is not None
        return dict(state.active_run.phase_statuses)


async def test_cancel_does_not_turn_a_phase_left_without_items_into_a_cancelled_one() -> None:
    """Under max_parallel=1, a phase whose only dependency completed with no item let
    through can never run: the reference model skips it at once
    (``skipped_due_to_dependency_failure``, no_items_to_process). The engine holds it
    ``pending_dependencies`` while another phase has the single slot (the harness
    tolerates that, "both end the same"). They do not end the same: a CancelRun in that
    window archives it as ``cancelled`` and leaves it out of the completion's
    ``skipped_phases``, where the reference model (and the run without the parallel limit)
    reports it skipped."""
    catalog = {
        "pipelines": {
            "p": {"steps": [{"name": "r1"}, {"name": "r2"}, {"name": "x", "depends_on": ["r1"]}]},
        }
    }
    pair = Pair(catalog, max_parallel=1)
    ids = await pair.ready("b1", 2)
    corr = await pair.request("b1", "p")
    # r1 completes, every item failed: x has nothing to process; r2 takes the slot.
    await pair.outcome("b1", "r1", corr, processed=[], failed=ids, status="completed_with_failures")
    assert pair.ref.view("b1")["active_run"]["phases"]["x"] == "skipped_due_to_dependency_failure"

    cancel = CancelRun("b1")
    expected = pair.ref.cancel("cancel-1", "b1")
    out = await pair.rt.execute(cancel, event_id="00000000-0000-4000-8000-0000000000c1")

    [want] = expected.completed
    [got] = [m["value"]["data"] for m in out if m["topic"] == COMPLETED]
    assert got["final_status"] == want.final_status == "cancelled"
    state = await pair.rt.service.get_batch("b1")
    statuses = dict(state.history[-1].phase_statuses)
    assert statuses == pair.ref.view("b1")["history"][-1]["phases"], (
        f"engine archived {statuses}, reference {pair.ref.view('b1')['history'][-1]['phases']}"
    )
    assert got["skipped_phases"] == want.skipped_phases == ["x"]
    assert got["phase_results"]["x"]["status"] == "skipped_due_to_dependency_failure"
