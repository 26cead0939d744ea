"""A stateful property test of any profile: the engine's promises, whatever the wire.

:class:`ProfileMachine` is a Hypothesis ``RuleBasedStateMachine`` that drives a profile's own
wire (written by :class:`~pipeline_state.testing.builders.Envelopes` from engine inputs)
through an :class:`~pipeline_state._runtime.InMemoryRuntime`, interleaving at random:
registrations with provisioning now or later, pipeline requests (of the catalog, unknown, on
a batch already running), answers to the phase commands the engine emitted (every item
processed, one lost, the phase failed), redeliveries of any message already handled, clock
advances with the deadline sweeper, and run cancellations. After every step it checks, for
every batch:

a. the batch is ``processing_pipelines`` exactly when it has an active run;
b. every run that ended is in the history once (unique run ids), and the events the
   profile's outbound emits when a run ends were published exactly once per ended run;
c. a batch left ready by a completed run accepts a new request (asked of the pure
   :func:`~pipeline_state._decide.decide` on the stored state): a completed pipeline always
   unblocks the next;
d. a redelivered message is a duplicate and publishes nothing.

At teardown every command still open is answered (and the sweeper run) until no run is
active: every accepted run completes exactly once.

The shipped profile's own kit (under :mod:`pipeline_state.profiles`) has a fuller machine
with a reference model; this machine holds any profile to the promises above::

    TestMyProfile = ProfileMachine.for_profile(MY_PROFILE).TestCase
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Coroutine
from typing import Any, ClassVar, TypeVar

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from pipeline_state._clock import ManualClock
from pipeline_state._commands import CancelRun, Command
from pipeline_state._decide import decide
from pipeline_state._inputs import RequestPipeline
from pipeline_state._lifecycle import BatchStatus
from pipeline_state._model import BatchState
from pipeline_state._profile import Profile
from pipeline_state._runtime import InMemoryRuntime
from pipeline_state.profiles import default_profile

from .builders import Delivery, Envelopes
from .paths import completion_topics

__all__ = ["ProfileMachine"]

T = TypeVar("T")
Message = dict[str, Any]


class ProfileMachine(RuleBasedStateMachine):
    """The stateful test; :meth:`for_profile` pins the profile (default: the default profile)."""

    profile: ClassVar[Profile | None] = None

    def __init__(self) -> None:
        super().__init__()
        self._loop = asyncio.new_event_loop()
        profile = self.profile or default_profile()
        self.rt = InMemoryRuntime(profile, clock=ManualClock())
        self.env = Envelopes(profile=profile)
        self.batches: list[str] = []
        self.unprovisioned: dict[str, list[str]] = {}
        self.open_commands: list[Message] = []
        self.handled: list[Delivery] = []
        self.published: Counter[tuple[str, str]] = Counter()  # (batch key, topic)

    @classmethod
    def for_profile(cls, profile: Profile) -> type[ProfileMachine]:
        """A subclass that drives ``profile``."""
        return type(f"{cls.__name__}_{profile.name}", (cls,), {"profile": profile})

    # -- plumbing ---------------------------------------------------------------------------
    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._loop.run_until_complete(coro)

    def _publish(self, out: list[Message]) -> None:
        for message in out:
            self.published[(str(message["key"]), message["topic"])] += 1
            if self.env.phase_of(message) is not None:
                self.open_commands.append(message)

    def _deliver(self, delivery: Delivery) -> None:
        self._publish(self._run(self.rt.deliver(*delivery)))
        self.handled.append(delivery)

    def _state(self, batch_id: str) -> BatchState | None:
        return self._run(self.rt.store.load(batch_id))

    # -- rules ------------------------------------------------------------------------------
    @rule(items=st.integers(min_value=1, max_value=3), provision_now=st.booleans())
    def register(self, items: int, provision_now: bool) -> None:
        items = min(items, self.rt.service.profile.max_items_per_batch)  # a profile may allow fewer
        batch_id = f"b{len(self.batches) + 1}"
        ids = self.env.item_ids(batch_id, items)
        self._deliver(self.env.register(batch_id, item_ids=ids))
        self.batches.append(batch_id)
        if provision_now:
            self._deliver(self.env.provisioned(batch_id, ids))
        else:
            self.unprovisioned[batch_id] = ids

    @precondition(lambda self: bool(self.unprovisioned))
    @rule(data=st.data())
    def provision(self, data: st.DataObject) -> None:
        batch_id = data.draw(st.sampled_from(sorted(self.unprovisioned)))
        self._deliver(self.env.provisioned(batch_id, self.unprovisioned.pop(batch_id)))

    @precondition(lambda self: bool(self.batches))
    @rule(data=st.data())
    def request(self, data: st.DataObject) -> None:
        batch_id = data.draw(st.sampled_from(self.batches))
        names = [*self.rt.service.profile.catalog.names, "no_such_pipeline"]
        pipeline = data.draw(st.sampled_from(names))
        self._deliver(self.env.request(batch_id, pipeline, prompt_payload={"prompt_ref": "p"}))

    @precondition(lambda self: bool(self.open_commands))
    @rule(data=st.data(), how=st.sampled_from(["all", "lose_one", "fail"]))
    def answer(self, data: st.DataObject, how: str) -> None:
        message = self.open_commands.pop(data.draw(st.integers(0, len(self.open_commands) - 1)))
        sent = self.env.sent_item_ids(message)
        failed = {"all": [], "lose_one": sent[:1], "fail": sent}[how]
        self._deliver(self.env.answer(message, failed=failed))

    @precondition(lambda self: bool(self.handled))
    @rule(data=st.data())
    def redeliver(self, data: st.DataObject) -> None:
        delivery = data.draw(st.sampled_from(self.handled))
        before = self.rt.bus.count()
        result = self._run(self.rt.service.handle_message(*delivery))
        assert result.duplicate, f"a redelivered {delivery[0]} was not a duplicate: {result.label}"
        self._run(self.rt.relay.drain())
        assert self.rt.bus.count() == before, "a duplicate published something"

    @rule(seconds=st.sampled_from([1, 60, 3_600, 4 * 3_600]))
    def tick(self, seconds: int) -> None:
        self.rt.clock.advance(seconds)
        self._publish(self._run(self.rt.expire_overdue()))

    @precondition(lambda self: bool(self.batches))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        batch_id = data.draw(st.sampled_from(self.batches))
        state = self._state(batch_id)
        if state is not None and state.active_run is not None:
            self._publish(self._run(self.rt.execute(CancelRun(batch_id, None, "property test"))))

    # -- invariants -------------------------------------------------------------------------
    @invariant()
    def every_batch_keeps_the_promises(self) -> None:
        for batch_id in self.batches:
            state = self._state(batch_id)
            assert state is not None
            processing = state.status is BatchStatus.PROCESSING_PIPELINES
            assert processing == (state.active_run is not None), (state.status, state.active_run)
            history = self._run(self.rt.store.history(batch_id))
            assert len(history) == state.past.count, (batch_id, len(history), state.past.count)
            run_ids = [run.run_id for run in history]
            assert len(set(run_ids)) == len(run_ids), run_ids
            if history:
                per_event = completion_topics(self.rt.service.profile, state, history[-1])
                for topic in set(per_event):
                    per_run = per_event.count(topic)
                    seen = self.published[(batch_id, topic)]
                    assert seen == per_run * len(history), (batch_id, topic, seen, len(history))
            if state.status is BatchStatus.READY_FOR_PIPELINE_EXECUTION and history:
                self._unblocked(state)

    def _unblocked(self, state: BatchState) -> None:
        profile = self.rt.service.profile
        pipeline = profile.catalog.names[0]
        request = RequestPipeline(state.batch_id, pipeline, state.owner, prompt={"prompt_ref": "p"})
        now = self.rt.clock.now()
        decision = decide(state, Command(request, "probe", "probe"), profile=profile, now=now)
        assert decision.denial is None, f"{state.batch_id} is ready but refuses a request: {decision.denial}"
        after = decision.state
        assert after is not None
        # Accepted: the run is active, or every phase was pruned and it completed at once.
        assert after.active_run is not None or after.past.count == state.past.count + 1

    def teardown(self) -> None:
        try:
            for _ in range(1_000):
                if self.open_commands:
                    message = self.open_commands.pop(0)
                    self._deliver(self.env.answer(message))
                    continue
                active = [b for b in self.batches if (s := self._state(b)) is not None and s.active_run]
                if not active:
                    break
                self.rt.clock.advance(24 * 3_600)  # whatever still runs is answered or times out
                self._publish(self._run(self.rt.expire_overdue()))
            else:
                raise AssertionError("runs still active after answering every command")
            self.every_batch_keeps_the_promises()
            for batch_id in self.batches:
                state = self._state(batch_id)
                assert state is not None
                assert state.active_run is None, f"{batch_id} left a run active"
        finally:
            self._loop.close()
