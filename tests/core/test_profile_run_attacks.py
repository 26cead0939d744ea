"""Found by an attack, all held: custom profiles (diamond, wide fan-in, phases shared by several
pipelines, max_parallel, deadlines with re-sends, strict correlation) driven through the
InMemoryRuntime with hostile orderings: outcomes out of order, duplicated, for phases not
dispatched or not in the run, after cancel, after the deadline re-send and after timeout.

The central promise checked everywhere: every accepted run completes exactly once (one
completion event), the batch is ready after, a phase done earlier is pruned next time,
and the skip / completion events the contract requires are all there."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any, ClassVar

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import Field

from pipeline_state import Catalog, CommandSpec, InMemoryRuntime, Profile, WireModel
from pipeline_state._commands import CancelRun
from pipeline_state.errors import ItemMismatchError
from pipeline_state.ports import LAST_DEPENDENCY, CommandFields
from pipeline_state.profiles.huleedu.events import (
    HULEEDU_COMMAND_FIELDS,
    EssayProcessingInputRefV1,
    PhaseInitiateCommand,
)
from pipeline_state.testing import Envelopes

COMPLETED = "huleedu.batch.pipeline.completed.v1"
SKIPPED = "huleedu.batch.phase.skipped.v1"
Message = dict[str, Any]


# -- profiles built the way docs/own-domain.md builds them ------------------------------------
class DepRef(WireModel):
    phase: str
    text_storage_id: str | None = None


class ListedItem(EssayProcessingInputRefV1):
    made_by: list[DepRef] = Field(default_factory=list)


class FanInCommand(PhaseInitiateCommand):
    command_fields: ClassVar[CommandFields] = attrs.evolve(HULEEDU_COMMAND_FIELDS, dependency_refs="made_by")
    essays_to_process: list[ListedItem]  # type: ignore[assignment]


DIAMOND = {
    "diamond": {
        "steps": [
            {"name": "a"},
            {"name": "b", "depends_on": ["a"]},
            {"name": "c", "depends_on": ["a"]},
            {"name": "d", "depends_on": ["b", "c"]},
        ]
    }
}
WIDE = {
    "wide": {
        "steps": [
            {"name": "r1"},
            {"name": "r2"},
            {"name": "r3"},
            {"name": "r4"},
            {"name": "sink", "depends_on": ["r1", "r2", "r3", "r4"]},
        ]
    }
}
SHARED = {
    "one": {"steps": [{"name": "a"}, {"name": "b", "depends_on": ["a"]}]},
    "two": {"steps": [{"name": "a"}, {"name": "c", "depends_on": ["a"]}]},
    "all": {
        "steps": [
            {"name": "a"},
            {"name": "b", "depends_on": ["a"]},
            {"name": "c", "depends_on": ["a"]},
            {"name": "d", "depends_on": ["b", "c"]},
        ]
    },
}


def build(pipelines: dict[str, Any], *, listing: bool = False, **kw: Any) -> Profile:
    catalog = Catalog.from_dict({"pipelines": pipelines})
    model = FanInCommand if listing else PhaseInitiateCommand
    commands = {p: CommandSpec(f"prof.phase{i}.start.v1", model) for i, p in enumerate(catalog.phases)}
    if listing:
        kw.setdefault("max_items_per_batch", 500)
    else:
        kw.setdefault("fan_in", LAST_DEPENDENCY)
    return Profile(name=kw.pop("name", "prof"), catalog=catalog, phase_commands=commands, **kw)


# -- a driver that keeps count of what was published ------------------------------------------
class Driver:
    def __init__(self, profile: Profile) -> None:
        self.rt = InMemoryRuntime(profile)
        self.env = Envelopes(profile=profile)
        self.profile = profile
        self.published: list[Message] = []
        self.open: list[Message] = []

    async def _take(self, out: list[Message]) -> list[Message]:
        self.published += out
        self.open += [m for m in out if self.env.phase_of(m) is not None]
        return out

    async def deliver(self, delivery: tuple[str, dict[str, Any]]) -> list[Message]:
        return await self._take(await self.rt.deliver(*delivery))

    async def label(self, delivery: tuple[str, dict[str, Any]]) -> tuple[str, int]:
        """Handle ``delivery``; the inbox label and how many messages it published."""
        before = self.rt.bus.count()
        result = await self.rt.service.handle_message(*delivery)
        await self.rt.relay.drain()
        return result.label, self.rt.bus.count() - before

    async def ready(self, batch_id: str, items: list[str]) -> None:
        await self.deliver(self.env.register(batch_id, item_ids=items, prompt=None))
        await self.deliver(self.env.provisioned(batch_id, items))

    async def request(self, batch_id: str, pipeline: str) -> list[Message]:
        return await self.deliver(self.env.request(batch_id, pipeline))

    def command(self, phase: str) -> Message:
        [found] = [m for m in self.open if self.env.phase_of(m) == phase]
        return found

    async def answer(self, phase: str, failed: tuple[str, ...] = (), **kw: Any) -> list[Message]:
        message = self.command(phase)
        self.open.remove(message)
        return await self.deliver(self.env.answer(message, failed=list(failed), **kw))

    async def drain(self) -> None:
        while self.open:
            message = self.open.pop(0)
            await self.deliver(self.env.answer(message))

    def completions(self, batch_id: str) -> list[dict[str, Any]]:
        return [
            m["value"]["data"] for m in self.published if m["topic"] == COMPLETED and m["key"] == batch_id
        ]

    def skips(self, batch_id: str) -> list[tuple[str, str]]:
        return [
            (m["value"]["data"]["phase_name"], m["value"]["data"]["skip_reason"])
            for m in self.published
            if m["topic"] == SKIPPED and m["key"] == batch_id
        ]

    async def check_closed(self, batch_id: str) -> None:
        """Every archived run completed exactly once, the batch is ready and idle."""
        state = await self.rt.service.get_batch(batch_id)
        assert state.active_run is None
        assert state.status.value == "ready_for_pipeline_execution"
        runs = [r.run_id for r in state.history if not r.recorded]
        done = [c["run_id"] for c in self.completions(batch_id)]
        assert sorted(done) == sorted(runs), (done, runs)
        assert len(set(done)) == len(done), f"a run completed twice: {Counter(done)}"


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# -- diamond -------------------------------------------------------------------------------------
@pytest.mark.parametrize("listing", [False, True])
async def test_diamond_ignores_early_duplicate_and_foreign_outcomes_and_completes_once(listing: bool) -> None:
    d = Driver(build(DIAMOND, listing=listing))
    items = ["e1", "e2", "e3"]
    await d.ready("b1", items)
    out = await d.request("b1", "diamond")
    corr = out[0]["value"]["correlation_id"]
    assert [d.env.phase_of(m) for m in out if d.env.phase_of(m)] == ["a"]
    # an outcome of a lost correlation naming items never sent: refused, nothing changes
    before = (await d.rt.service.get_batch("b1")).version
    with pytest.raises(ItemMismatchError, match="items_not_sent_to_phase"):
        await d.rt.deliver(*d.env.outcome("b1", "a", str(uuid.uuid4()), processed=["nope"]))
    assert (await d.rt.service.get_batch("b1")).version == before
    a_answer = d.env.answer(d.command("a"))
    d.open.remove(d.command("a"))
    out = await d.deliver(a_answer)
    assert sorted(d.env.phase_of(m) for m in out if d.env.phase_of(m)) == ["b", "c"]
    # the same outcome redelivered (same event id), then replayed with a fresh event id
    assert await d.label(a_answer) == ("duplicate", 0)
    label, n = await d.label(d.env.outcome("b1", "a", corr, processed=items))
    assert (label, n) == ("ignored:duplicate_outcome", 0)
    await d.answer("b", failed=("e2",))
    await d.answer("c", failed=("e3",))
    sent = d.env.sent_item_ids(d.command("d"))
    assert sent == ["e1"], "d gets the items that succeeded in both b and c"
    if listing:
        [item] = d.command("d")["value"]["data"]["essays_to_process"]
        assert [r["phase"] for r in item["made_by"]] == ["b", "c"]
    await d.answer("d")
    await d.check_closed("b1")
    [done] = d.completions("b1")
    assert done["final_status"] == "completed_with_failures"
    assert done["completed_phases"] == ["a", "b", "c", "d"]
    assert (done["successful_essay_count"], done["failed_essay_count"]) == (1, 2)
    # a late duplicate of the final outcome after completion: stale, the batch stays free
    label, n = await d.label(d.env.outcome("b1", "d", corr, processed=["e1"]))
    assert label.startswith("ignored:")
    assert n == 0
    # every phase done: the next request is accepted and completes at once, all pruned
    out = await d.request("b1", "diamond")
    assert not [m for m in out if d.env.phase_of(m)]
    assert d.skips("b1") == [(p, "already_completed") for p in ("a", "b", "c", "d")]
    await d.check_closed("b1")
    assert d.completions("b1")[-1]["completed_phases"] == []
    assert d.completions("b1")[-1]["final_status"] == "completed_successfully"


async def test_early_outcome_waits_for_dispatch_and_applies_exactly_once() -> None:
    d = Driver(build(DIAMOND))
    await d.ready("b1", ["e1", "e2"])
    out = await d.request("b1", "diamond")
    corr = out[0]["value"]["correlation_id"]
    # the worker of b answers before the engine even sent b's command (Kafka reorders topics)
    label, n = await d.label(d.env.outcome("b1", "b", corr, processed=["e1"], failed=["e2"]))
    assert (label, n) == ("deferred:phase_dispatch:b", 0)
    await d.answer("a")  # dispatches b and c; b's early outcome applies in the same unit
    state = await d.rt.service.get_batch("b1")
    assert state.active_run is not None
    b = state.active_run.phase("b")
    assert b is not None
    assert b.status.value == "completed_with_partial_success"
    label, n = await d.label(d.env.answer(d.command("b")))
    assert (label, n) == ("ignored:duplicate_outcome", 0)
    d.open.remove(d.command("b"))
    await d.drain()
    await d.check_closed("b1")
    [done] = d.completions("b1")
    assert done["phase_results"]["d"]["successful"] == 1


async def test_diamond_branch_failure_skips_the_fan_in_and_fails_the_run_once() -> None:
    d = Driver(build(DIAMOND))
    await d.ready("b1", ["e1", "e2"])
    await d.request("b1", "diamond")
    await d.answer("a")
    await d.answer("b", failed=("e1", "e2"))  # failed_critically
    assert d.skips("b1") == [("d", "dependency_failed")]
    assert d.completions("b1") == [], "c is still running: the run must not complete yet"
    await d.answer("c")
    await d.check_closed("b1")
    [done] = d.completions("b1")
    assert done["final_status"] == "failed_critically"
    assert done["phase_results"]["d"]["status"] == "skipped_due_to_dependency_failure"
    # failed and skipped phases are not pruned: the next run runs b and d, prunes a and c
    out = await d.request("b1", "diamond")
    assert [d.env.phase_of(m) for m in out if d.env.phase_of(m)] == ["b"]
    assert d.skips("b1")[-2:] == [("a", "already_completed"), ("c", "already_completed")]
    await d.drain()
    await d.check_closed("b1")
    assert d.completions("b1")[-1]["final_status"] == "completed_successfully"


# -- wide fan-in under max_parallel -----------------------------------------------------------------
@pytest.mark.parametrize("limit", [1, 2, 3])
async def test_wide_fan_in_respects_max_parallel_and_completes_once(limit: int) -> None:
    d = Driver(build(WIDE, max_parallel=limit))
    await d.ready("b1", ["e1", "e2", "e3", "e4"])
    await d.request("b1", "wide")
    order: list[str] = []
    while d.open:
        assert len(d.open) <= limit, [d.env.phase_of(m) for m in d.open]
        phase = d.env.phase_of(d.open[-1])
        assert phase is not None
        order.append(phase)
        failed = {"r1": ("e1",), "r3": ("e3",)}.get(phase, ())
        await d.answer(phase, failed=failed)
    assert order[-1] == "sink"
    assert sorted(order[:-1]) == ["r1", "r2", "r3", "r4"]
    await d.check_closed("b1")
    [done] = d.completions("b1")
    assert done["final_status"] == "completed_with_failures"
    assert done["phase_results"]["sink"]["successful"] == 2  # e2 and e4 survive every root


async def test_max_parallel_slot_freed_by_a_timeout_dispatches_the_next_phase() -> None:
    d = Driver(build(WIDE, max_parallel=1, default_deadline_seconds=10, max_resends=0))
    await d.ready("b1", ["e1"])
    await d.request("b1", "wide")
    assert [d.env.phase_of(m) for m in d.open] == ["r1"]
    d.rt.clock.advance(11)
    out = await d._take(await d.rt.expire_overdue())
    assert [d.env.phase_of(m) for m in out if d.env.phase_of(m)] == ["r2"]
    await d.drain()
    await d.check_closed("b1")
    [done] = d.completions("b1")
    assert done["final_status"] == "failed_critically"
    assert done["phase_results"]["r1"]["status"] == "failed"
    assert done["phase_results"]["sink"]["status"] == "skipped_due_to_dependency_failure"


# -- phases shared by several pipelines ------------------------------------------------------------
async def test_shared_phases_are_pruned_across_pipelines_and_feed_recorded_refs() -> None:
    d = Driver(build(SHARED))
    await d.ready("b1", ["e1", "e2"])
    await d.request("b1", "one")
    await d.answer("a", failed=("e2",))
    await d.answer("b")
    await d.check_closed("b1")
    out = await d.request("b1", "two")
    assert d.skips("b1") == [("a", "already_completed")]
    [c] = [m for m in out if d.env.phase_of(m) == "c"]
    refs = c["value"]["data"]["essays_to_process"]
    assert refs == [{"essay_id": "e1", "text_storage_id": "e1-a"}], "c gets a's recorded outputs"
    await d.drain()
    out = await d.request("b1", "all")
    assert d.skips("b1")[-3:] == [(p, "already_completed") for p in ("a", "b", "c")]
    [fan] = [m for m in out if d.env.phase_of(m) == "d"]
    assert fan["value"]["data"]["essays_to_process"] == [{"essay_id": "e1", "text_storage_id": "e1-c"}]
    await d.drain()
    await d.check_closed("b1")
    assert [c["completed_phases"] for c in d.completions("b1")] == [["a", "b"], ["c"], ["d"]]


# -- deadlines and re-sends ----------------------------------------------------------------------
async def test_resent_command_answered_twice_applies_once() -> None:
    d = Driver(build(DIAMOND, default_deadline_seconds=30, max_resends=2))
    await d.ready("b1", ["e1"])
    out = await d.request("b1", "diamond")
    [first] = [m for m in out if d.env.phase_of(m) == "a"]
    d.rt.clock.advance(31)
    resent = await d.rt.expire_overdue()
    assert [m["value"]["event_id"] for m in resent] == [first["value"]["event_id"]], (
        "re-sent under its event id"
    )
    # both copies are answered, each with its own event id
    answer1 = d.env.answer(first)
    answer2 = d.env.answer(first)
    assert (await d.label(answer1))[0] == "applied"
    assert await d.label(answer2) == ("ignored:duplicate_outcome", 0)
    d.open = [m.as_dict() for m in d.rt.bus.messages() if d.env.phase_of(m.as_dict()) in ("b", "c")]
    await d.drain()
    await d.drain()
    d.published = [m.as_dict() for m in d.rt.bus.messages()]
    await d.check_closed("b1")
    assert len(d.completions("b1")) == 1


async def test_resends_then_timeout_then_late_outcome_is_ignored() -> None:
    d = Driver(build(DIAMOND, deadlines={"b": 20}, max_resends=2))
    await d.ready("b1", ["e1"])
    await d.request("b1", "diamond")
    await d.answer("a")
    b = d.command("b")
    for _ in range(2):
        d.rt.clock.advance(21)
        out = await d.rt.expire_overdue()
        assert [m["value"]["event_id"] for m in out] == [b["value"]["event_id"]]
    await d.answer("c")
    assert d.completions("b1") == []
    d.rt.clock.advance(21)
    await d._take(await d.rt.expire_overdue())
    [done] = d.completions("b1")
    assert done["phase_results"]["b"]["status"] == "failed"
    assert done["phase_results"]["d"]["status"] == "skipped_due_to_dependency_failure"
    # the worker finally answers b: the run is over, nothing happens
    label, n = await d.label(d.env.answer(b))
    assert label.startswith("ignored:")
    assert n == 0
    d.rt.clock.advance(10_000)
    assert await d.rt.expire_overdue() == []
    d.open.remove(b)
    await d.check_closed("b1")


# -- cancel --------------------------------------------------------------------------------------
async def test_outcomes_after_cancel_change_nothing_and_the_batch_runs_again() -> None:
    d = Driver(build(DIAMOND, default_deadline_seconds=30))
    await d.ready("b1", ["e1"])
    await d.request("b1", "diamond")
    await d.answer("a")
    b, c = d.command("b"), d.command("c")
    await d._take(await d.rt.execute(CancelRun("b1", None, "attack")))
    [done] = d.completions("b1")
    assert done["final_status"] == "cancelled"
    await d.check_closed("b1")
    for late in (b, c):
        label, n = await d.label(d.env.answer(late))
        assert (label, n) == ("ignored:no_active_run", 0)
    d.rt.clock.advance(100)
    assert await d.rt.expire_overdue() == []
    # a new run: a completed before the cancel and is pruned; the cancelled b, c run again
    d.open = []
    out = await d.request("b1", "diamond")
    assert sorted(d.env.phase_of(m) for m in out if d.env.phase_of(m)) == ["b", "c"]
    # the old run's answers arrive now: stale, never applied to the new run
    for late in (b, c):
        label, n = await d.label(d.env.answer(late))
        assert (label, n) == ("ignored:stale_run", 0)
    await d.drain()
    await d.check_closed("b1")
    assert [x["final_status"] for x in d.completions("b1")] == ["cancelled", "completed_successfully"]


# -- correlation -------------------------------------------------------------------------------------
@pytest.mark.parametrize("strict", [False, True])
async def test_foreign_correlation_under_strict_and_lenient_profiles(strict: bool) -> None:
    d = Driver(build(DIAMOND, strict_correlation=strict))
    await d.ready("b1", ["e1"])
    await d.request("b1", "diamond")
    a = d.command("a")
    foreign = str(uuid.uuid4())
    label, n = await d.label(d.env.outcome("b1", "a", foreign, processed=["e1"]))
    if strict:
        assert (label, n) == ("ignored:stale_run", 0)
        await d.answer("a")
    else:
        assert label == "applied"
        assert n == 2  # b and c dispatched
        d.open.remove(a)
        d.open += [m.as_dict() for m in d.rt.bus.messages()[-2:]]
    await d.drain()
    await d.check_closed("b1")
    assert len(d.completions("b1")) == 1


async def test_outcome_for_a_catalog_phase_outside_the_run_is_ignored() -> None:
    d = Driver(build(SHARED))
    await d.ready("b1", ["e1"])
    await d.request("b1", "one")
    corr = d.command("a")["value"]["correlation_id"]
    label, n = await d.label(d.env.outcome("b1", "c", corr, processed=["e1"]))
    assert (label, n) == ("ignored:phase_not_in_run", 0)
    await d.drain()
    await d.check_closed("b1")


# -- random hostile orderings -----------------------------------------------------------------------
PROFILES = {
    "diamond": build(DIAMOND, max_parallel=2, default_deadline_seconds=30, max_resends=1),
    "wide": build(WIDE, max_parallel=2, strict_correlation=True, default_deadline_seconds=20),
    "shared": build(SHARED, listing=True, max_parallel=1, deadlines={"a": 10}, max_resends=0),
}

ACTIONS = st.lists(
    st.tuples(
        st.sampled_from(["answer", "lose", "fail", "dup", "replay", "early", "tick", "cancel", "request"]),
        st.integers(0, 7),
    ),
    max_size=25,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(PROFILES)), actions=ACTIONS)
def test_random_hostile_orderings_keep_every_run_exactly_once(name: str, actions: list[Any]) -> None:
    profile = PROFILES[name]

    async def play() -> None:
        d = Driver(profile)
        await d.ready("b1", ["e1", "e2"])
        pipelines = list(profile.catalog.names)
        answered: list[tuple[str, dict[str, Any]]] = []
        for what, n in actions:
            if what == "request":
                await d.request("b1", pipelines[n % len(pipelines)])
            elif what in ("answer", "lose", "fail") and d.open:
                message = d.open.pop(n % len(d.open))
                sent = d.env.sent_item_ids(message)
                failed = {"answer": [], "lose": sent[:1], "fail": sent}[what]
                delivery = d.env.answer(message, failed=failed)
                answered.append(delivery)
                await d.deliver(delivery)
            elif what == "dup" and answered:
                assert (await d.label(answered[n % len(answered)]))[1] == 0
            elif what == "replay" and answered:
                topic, envelope = answered[n % len(answered)]
                fresh = {**envelope, "event_id": str(uuid.uuid4())}
                label, count = await d.label((topic, fresh))
                assert label.startswith("ignored:"), label
                assert count == 0, label
            elif what == "early":
                phase = profile.catalog.phases[n % len(profile.catalog.phases)]
                state = await d.rt.service.get_batch("b1")
                if state.active_run is not None:
                    run_phase = state.active_run.phase(phase)
                    if run_phase is None or run_phase.status.value == "pending_dependencies":
                        corr = state.active_run.correlation_id
                        label, count = await d.label(d.env.outcome("b1", phase, corr, processed=["e1"]))
                        assert label.startswith(("ignored:", "deferred:")), label
                        assert count == 0, label
            elif what == "tick":
                d.rt.clock.advance([5, 15, 40][n % 3])
                await d._take(await d.rt.expire_overdue())
            elif what == "cancel":
                state = await d.rt.service.get_batch("b1")
                if state.active_run is not None:
                    await d._take(await d.rt.execute(CancelRun("b1", None, "attack")))
                    d.open = []
            state = await d.rt.service.get_batch("b1")
            assert (state.status.value == "processing_pipelines") == (state.active_run is not None)
            done = [c["run_id"] for c in d.completions("b1")]
            assert len(set(done)) == len(done), f"completed twice: {Counter(done)}"
            assert sorted(done) == sorted(r.run_id for r in state.history), "a finished run has no completion"
        # teardown: answer everything, then let deadlines expire until idle
        for _ in range(50):
            await d.drain()
            state = await d.rt.service.get_batch("b1")
            if state.active_run is None:
                break
            d.rt.clock.advance(3_600)
            await d._take(await d.rt.expire_overdue())
        await d.check_closed("b1")

    run(play())
