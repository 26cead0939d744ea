"""A reusable stateful test of the service against the reference model.

:class:`PipelineMachine` is a Hypothesis ``RuleBasedStateMachine``. Each example draws a
profile (the HuleEdu pipelines with deadlines, or a random catalog; parallel or strictly
sequential dispatch), builds the engine under test through :meth:`PipelineMachine.make_engine`
and a :class:`~pipeline_state.profiles.huleedu.testing.reference.ReferenceModel`, then interleaves at random:
registrations (guest and regular), provisioning and readiness, pipeline requests (valid,
unknown, for unknown batches, while a run is active), phase outcomes (success, partial,
failure, redelivered with the same ``event_id``, replayed with a fresh one, stale
correlation ids of older runs, before dispatch), facts that arrive early (before their
batch is registered, readiness out of order, outcomes before dispatch, validation errors),
bad input, ``CancelRun``, ``RetryPhase``, clock advances followed by the deadline sweeper,
and sweeps of the waiting set (the clock moved past the waiting window, expired requests
denied, other expired facts dead-lettered).

After every step it checks:

a. a completed run leaves its batch ``ready_for_pipeline_execution``, none of its facts
   waiting, and a valid request would be accepted (asked of the pure ``decide`` on the
   stored state, nothing committed);
b. at most one active run per batch (no run starts while another is open, and the batch is
   ``processing_pipelines`` exactly when it has an active run);
c. exactly one ``BatchPipelineCompletedV1`` per run id, ever; at teardown every open run is
   answered until it completes, and every accepted run must have completed once (and, when
   the engine exposes its published messages, each was published exactly once);
d. a pruned phase is never dispatched in that run, and no phase is dispatched twice in a run;
e. ignored input (and bad input, which raises) emits nothing and leaves every snapshot,
   version included, identical; a fact kept waiting emits nothing and changes nothing but
   its batch's version; a denial emits the denial and its notification only;
f. versions never go down, and go up whenever a snapshot changed;
g. agreement with the reference model: applied / ignored / denied (and the reason) /
   raised, batch status, the active run's phases, the pruned and dispatched phases (with
   the essays forwarded), and every completion's phases, ``final_status`` and counts;
h. the sweeper re-sends exactly the overdue phases the reference re-sends, each under the
   event id of the command that started it (and the relay publishes nothing but those
   ids again);
i. the waiting set (``store.list_waiting`` and ``count_waiting``) is the reference's, in
   arrival order, each fact with what it waits for; the waiting facts a change lets apply
   are re-attempted with it, in arrival order, with the reference's verdicts and effects;
   a sweep of the waiting set denies exactly the expired requests (``batch_not_found`` or
   ``batch_not_ready``, recorded in the inbox) and hands exactly the other expired facts
   to the dead-letter callback (the raw message, a reason naming what it waited for).

Reuse it for another store by overriding :meth:`PipelineMachine.make_engine` (and, to pin
the profile, :meth:`PipelineMachine.profile_strategy`)::

    class SqlMachine(PipelineMachine):
        async def make_engine(self, profile, clock):
            store = await make_sql_store()
            return EngineUnderTest(PipelineService(store, profile=profile, clock=clock),
                                   close=store.dispose)

    TestSql = SqlMachine.TestCase

or, without a class statement, ``PipelineMachine.with_engine(factory).TestCase``.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import attrs
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from pipeline_state._clock import ManualClock
from pipeline_state._commands import CancelRun, Command, RetryPhase
from pipeline_state._decide import decide
from pipeline_state._profile import Profile
from pipeline_state._runtime import InMemoryRuntime
from pipeline_state._service import ExpiredFact, HandleResult, PipelineService
from pipeline_state._snapshot import snapshot
from pipeline_state._wire import EventEnvelope, WireModel
from pipeline_state.errors import BatchNotFoundError, PipelineStateError
from pipeline_state.ports import OutboxMessage
from pipeline_state.profiles.huleedu.events import TOPICS, ClientBatchPipelineRequestV1, Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

from .reference import (
    MAX_REPLAYS,
    NEVER_APPLIES,
    Completion,
    Dispatch,
    Expectation,
    ReferenceModel,
    Refs,
    Sweep,
    replay_id,
)
from .strategies import (
    OUTCOME_KINDS,
    ProfileSpec,
    essays_ready_data,
    outcome_data,
    profile_specs,
    provisioning_data,
    validation_errors_data,
)

__all__ = ["EngineFactory", "EngineUnderTest", "PipelineMachine", "check_outgoing"]

_NOT_READY = ("awaiting_content_validation", "awaiting_student_validation", "student_validation_completed")

Message = dict[str, Any]
T = TypeVar("T")

_IDS = uuid.UUID("0b0e5a53-6c51-4a8c-9a0e-2f0f3c1d7e11")


@attrs.frozen
class EngineUnderTest:
    """What the harness drives: a service, optionally a way to read what was published
    (relaying first) and a way to release resources."""

    service: PipelineService
    published: Callable[[], Awaitable[Sequence[OutboxMessage]]] | None = None
    close: Callable[[], Awaitable[None]] | None = None


EngineFactory = Callable[[Profile, ManualClock], Awaitable[EngineUnderTest]]
"""Builds the engine under test for a profile, reading time from the given clock."""


@attrs.define
class _Delivery:
    """An input the harness sent, kept so that it can be sent again with the same id."""

    label: str
    event_id: str
    send: Callable[[], Awaitable[HandleResult]]
    predict: Callable[[str], Expectation]


@attrs.define
class _RunSeen:
    """What the harness observed of one run."""

    run_id: str
    batch_id: str
    correlation_id: str
    pruned: list[str] = attrs.field(factory=list)
    dispatched: list[str] = attrs.field(factory=list)
    completions: int = 0


@attrs.frozen
class _Outcome:
    batch_id: str
    phase: str
    correlation_id: str
    data: dict[str, Any]


def check_outgoing(message: Mapping[str, Any], profile: Profile) -> WireModel:
    """Validate one emitted ``{"topic", "key", "value"}`` message: a valid envelope whose
    ``event_type`` is the topic, a payload valid for the topic's model (or the profile's
    phase command model), and the key the contract names. Returns the payload."""
    topic = message["topic"]
    envelope = EventEnvelope.model_validate(message["value"])
    assert envelope.event_type == topic, f"event_type {envelope.event_type!r} on {topic!r}"
    spec = TOPICS.get(topic)
    if spec is not None:
        assert spec.direction == "out", f"emitted on inbound topic {topic!r}"
        model: type[WireModel] = spec.model
        key_field = spec.key_field
    else:
        commands = [c for c in profile.phase_commands.values() if c.topic == topic]
        assert commands, f"emitted on unknown topic {topic!r}"
        model, key_field = commands[0].model, "batch_id"
    payload = model.model_validate(envelope.data)
    assert message["key"] == getattr(payload, key_field), f"key {message['key']!r} on {topic!r}"
    return payload


class PipelineMachine(RuleBasedStateMachine):
    """Random interleavings against the engine and the reference model; see the module."""

    max_batches: ClassVar[int] = 2
    """How many batches one example registers at most."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.engine: EngineUnderTest | None = None
        self.clock = ManualClock()
        self.envelopes = HuleEduEnvelopes(source_service="harness")
        self.healthy = False
        self._counter = 0
        self.registrations: dict[str, dict[str, Any]] = {}
        self.deliveries: list[_Delivery] = []
        self.outcomes: list[_Outcome] = []
        self.runs: dict[str, _RunSeen] = {}
        self.run_by_corr: dict[str, str] = {}
        self.open_run: dict[str, str] = {}
        self.inputs: dict[tuple[str, str], Refs] = {}
        self.versions: dict[str, int] = {}
        self.emitted: list[Message] = []
        self.commands: dict[str, tuple[str, str]] = {}
        """``(batch_id, phase)`` of every phase command emitted, by event id."""
        self.resent: Counter[str] = Counter()
        self.ghost = "batch-never-registered"

    # -- hooks ----------------------------------------------------------------------------
    def profile_strategy(self) -> st.SearchStrategy[ProfileSpec]:
        """Profiles to draw from; override to pin one."""
        return profile_specs()

    async def make_engine(self, profile: Profile, clock: ManualClock) -> EngineUnderTest:
        """Build the engine under test; the default is an :class:`InMemoryRuntime`."""
        runtime = InMemoryRuntime(profile, clock=clock)

        async def published() -> Sequence[OutboxMessage]:
            await runtime.relay.drain()
            return runtime.bus.messages()

        return EngineUnderTest(runtime.service, published)

    @classmethod
    def with_engine(
        cls,
        factory: EngineFactory,
        *,
        profiles: st.SearchStrategy[ProfileSpec] | None = None,
        name: str | None = None,
    ) -> type[PipelineMachine]:
        """A subclass whose engine comes from ``factory(profile, clock)`` and, when given,
        whose profiles come from ``profiles``: the hook for other stores and transports."""

        class Machine(cls):  # type: ignore[valid-type,misc]
            async def make_engine(self, profile: Profile, clock: ManualClock) -> EngineUnderTest:
                return await factory(profile, clock)

            def profile_strategy(self) -> st.SearchStrategy[ProfileSpec]:
                return profiles if profiles is not None else super().profile_strategy()

        Machine.__name__ = Machine.__qualname__ = name or f"{cls.__name__}WithEngine"
        return Machine

    # -- plumbing -------------------------------------------------------------------------
    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    @property
    def service(self) -> PipelineService:
        assert self.engine is not None
        return self.engine.service

    def _new_id(self) -> str:
        self._counter += 1
        return str(uuid.uuid5(_IDS, str(self._counter)))

    async def _snapshot(self, batch_id: str) -> dict[str, Any] | None:
        try:
            return snapshot(await self.service.get_batch(batch_id))
        except BatchNotFoundError:
            return None

    def _snapshots(self) -> dict[str, dict[str, Any] | None]:
        ids = sorted({*self.registrations, self.ghost})
        return {b: self._run(self._snapshot(b)) for b in ids}

    # -- one step -------------------------------------------------------------------------
    def _step(
        self,
        label: str,
        send: Callable[[], Awaitable[HandleResult | list[HandleResult]]],
        predict: Callable[[], Expectation],
    ) -> None:
        self.healthy = False
        before = self._snapshots()
        error: PipelineStateError | None = None
        results: list[HandleResult] = []
        try:
            sent = self._run(_await(send()))
            results = sent if isinstance(sent, list) else [sent]
        except PipelineStateError as exc:
            error = exc
        expected = predict()
        after = self._snapshots()
        out = [m.as_dict() for r in results for m in r.all_messages]
        self.emitted.extend(out)
        self._check(label, expected, results, error, out, before, after)
        self._check_waiting(label)
        self.healthy = True

    def _check(
        self,
        label: str,
        expected: Expectation,
        results: list[HandleResult],
        error: PipelineStateError | None,
        out: list[Message],
        before: Mapping[str, dict[str, Any] | None],
        after: Mapping[str, dict[str, Any] | None],
    ) -> None:
        kind, reason = _kind(results, error)
        assert kind == expected.kind, (
            f"{label}: engine {kind} ({reason}), reference expects {expected.kind} "
            f"({expected.denial or expected.waits_for})"
        )
        # (e) ignored and bad input emit nothing and change nothing; a fact kept waiting
        # emits nothing and changes nothing but its batch's version.
        if kind in ("ignored", "raised", "waiting"):
            assert out == [], f"{label}: {kind} input emitted {[m['topic'] for m in out]}"
        if kind in ("ignored", "raised"):
            assert after == before, f"{label}: {kind} input changed state"
        if kind == "waiting":
            assert reason == expected.waits_for, (
                f"{label}: waits for {reason}, reference {expected.waits_for}"
            )
            assert _unversioned(after) == _unversioned(before), f"{label}: a waiting fact changed state"
        if kind == "denied":
            assert reason == expected.denial, f"{label}: denied {reason}, reference {expected.denial}"
            assert after == before, f"{label}: a denial changed state"
            _check_denial(label, [m.as_dict() for r in results for m in r.messages], str(reason))
        # (i) the waiting facts this input let apply, in the order and with the verdicts the
        # reference predicts.
        self._check_resumed(label, expected, results)
        started, dispatched, completed = self._observe(label, out)
        # (h) an overdue phase's command is re-sent with its own event id, as the reference says.
        resent_ids = [eid for r in results if r.decision is not None for eid in r.decision.resend]
        unknown = [eid for eid in resent_ids if eid not in self.commands]
        assert not unknown, f"{label}: re-sent {unknown}, which are no phase command's event id"
        resent = sorted(self.commands[eid] for eid in resent_ids)
        assert resent == sorted(expected.resent), f"{label}: re-sent {resent}, reference {expected.resent}"
        self.resent.update(resent_ids)
        # (g) the reference's view of the step (the waiting facts it resumed included).
        runs_started = expected.all_started()
        assert started == [corr for corr, _ in runs_started], (
            f"{label}: started {started}, reference {[corr for corr, _ in runs_started]}"
        )
        for corr, pruned in runs_started:
            run = self.runs[self.run_by_corr[corr]]
            assert run.pruned == pruned, f"{label}: pruned {run.pruned}, reference {pruned}"
        _same_dispatches(label, dispatched, expected.all_dispatched())
        _same_completions(label, completed, expected.all_completed())
        for batch_id, snap in after.items():
            self._check_batch(label, batch_id, before.get(batch_id), snap)
        # (a) a completed run leaves the batch ready with nothing waiting, and a valid
        # request would be accepted; but a run a critical validation failure ended, which
        # ends its batch too.
        for done in completed:
            snap = after[done.batch_id]
            assert snap is not None
            if done.final_status == "failed_critically" and snap["status"] == "failed_critically":
                assert snap["active_run"] is None, f"{label}: batch {done.batch_id} failed with a run"
                continue
            assert snap["status"] == "ready_for_pipeline_execution", (
                f"{label}: batch {done.batch_id} is {snap and snap['status']} after its run completed"
            )
            # An outcome of no run of the batch may wait for a later run (``run_start``):
            # nothing of the completed run may still wait.
            waiting = self._run(self.service.store.list_waiting(done.batch_id, limit=1000))
            # A fact found never to apply waits for nothing: it is kept for its dead letter.
            left = [f for f in waiting if _unworded(f.waits_for) not in ("run_start", NEVER_APPLIES)]
            assert not left, (
                f"{label}: {[(f.event_id, f.waits_for) for f in left]} still wait on {done.batch_id} "
                "after its run completed"
            )
            self._probe_request(label, done.batch_id)

    def _check_resumed(self, label: str, expected: Expectation, results: list[HandleResult]) -> None:
        """(i) The waiting facts re-attempted with a change: same facts, same order, same
        verdicts; a resumed denial emits its denial and notification only, a resumed fact
        ignored or rejected emits nothing."""
        got = [item for r in results for item in r.resumed]
        verdicts = [_verdict(item) for item in got]
        want = [(None if e.kind == "raised" else e.event_id, e.kind, e.denial) for e in expected.resumed]
        assert verdicts == want, f"{label}: resumed {verdicts}, reference {want}"
        for item, (_, kind, why) in zip(got, verdicts, strict=True):
            messages = [m.as_dict() for m in item.messages] if isinstance(item, HandleResult) else []
            if kind in ("ignored", "raised"):
                assert messages == [], (
                    f"{label}: resumed {kind} fact emitted {[m['topic'] for m in messages]}"
                )
            if kind == "denied":
                assert why is not None
                _check_denial(f"{label} (resumed)", messages, why)

    def _check_waiting(self, label: str) -> None:
        """(i) The store's waiting set is the reference's, in arrival order."""
        store = self.service.store
        facts = self._run(store.list_waiting(limit=10_000))
        # A fact found never to apply is marked with the engine's error, which the
        # reference does not restate: the mark's prefix is compared.
        got = [(f.event_id, f.batch_id, _unworded(f.waits_for)) for f in facts]
        want = self.reference.waiting_view()
        assert got == want, f"{label}: waiting {got}, reference {want}"
        count = self._run(store.count_waiting())
        assert count == len(want), f"{label}: count_waiting {count}, reference {len(want)}"

    def _observe(self, label: str, out: list[Message]) -> tuple[list[str], list[Dispatch], list[Completion]]:
        """Check every emitted message and track runs; returns the runs started, the phase
        commands and the completions of this step."""
        assert self.engine is not None
        profile = self.service.profile
        command_phase = {spec.topic: phase for phase, spec in profile.phase_commands.items()}
        for m in out:
            if m["topic"] in command_phase:
                self.commands[m["value"]["event_id"]] = (m["key"], command_phase[m["topic"]])
        started: list[str] = []
        dispatched: list[Dispatch] = []
        completed: list[Completion] = []
        parsed = [
            (
                m["topic"],
                str(m["value"]["correlation_id"]),
                check_outgoing(m, profile).model_dump(mode="json"),
            )
            for m in out
        ]
        # A run's "started" notification follows its pruned-phase events: register runs first.
        parsed.sort(key=lambda item: item[2].get("notification_type") != "batch_processing_started")
        for topic, corr, data in parsed:
            if topic == Topic.TEACHER_NOTIFICATION.value and data["notification_type"] == (
                "batch_processing_started"
            ):
                run_id, batch_id = data["payload"]["run_id"], data["batch_id"]
                # (b) no run starts while another is open on the batch.
                assert batch_id not in self.open_run, (
                    f"{label}: run {run_id} started while {self.open_run.get(batch_id)} is active"
                )
                assert run_id not in self.runs, f"{label}: run id {run_id} reused"
                self.runs[run_id] = _RunSeen(run_id, batch_id, corr)
                self.run_by_corr[corr] = run_id
                self.open_run[batch_id] = run_id
                started.append(corr)
            elif topic == Topic.PHASE_SKIPPED.value and data["skip_reason"] == "already_completed":
                run = self.runs[self.run_by_corr[corr]]
                assert data["run_id"] == run.run_id
                run.pruned.append(data["phase_name"])
            elif topic in command_phase:
                phase = command_phase[topic]
                run = self.runs[self.run_by_corr[corr]]
                # (d) a pruned phase is never dispatched in its run; nothing is dispatched twice.
                assert phase not in run.pruned, f"{label}: pruned phase {phase} dispatched in {run.run_id}"
                assert phase not in run.dispatched, f"{label}: {phase} dispatched twice in {run.run_id}"
                run.dispatched.append(phase)
                essays = {e["essay_id"]: e["text_storage_id"] for e in data["essays_to_process"]}
                self.inputs[(corr, phase)] = essays
                dispatched.append(Dispatch(data["batch_id"], phase, corr, essays))
            elif topic == Topic.PIPELINE_COMPLETED.value:
                run_id = data["run_id"]
                assert run_id in self.runs, f"{label}: completion of unknown run {run_id}"
                run = self.runs[run_id]
                run.completions += 1
                # (c) exactly one completion per run.
                assert run.completions == 1, f"{label}: run {run_id} completed {run.completions} times"
                assert corr == run.correlation_id == data["correlation_id"]
                assert self.open_run.get(run.batch_id) == run_id
                del self.open_run[run.batch_id]
                completed.append(
                    Completion(
                        batch_id=data["batch_id"],
                        correlation_id=corr,
                        pipeline=data["pipeline_name"],
                        final_status=data["final_status"],
                        completed_phases=data["completed_phases"],
                        skipped_phases=data["skipped_phases"],
                        successful=data["successful_essay_count"],
                        failed=data["failed_essay_count"],
                        duration=data["processing_duration_seconds"],
                        phase_results={
                            name: (r["status"], r["successful"], r["failed"], r["duration_seconds"])
                            for name, r in data["phase_results"].items()
                        },
                    )
                )
        _check_notifications(label, parsed, completed)
        return started, dispatched, completed

    def _check_batch(
        self, label: str, batch_id: str, before: dict[str, Any] | None, snap: dict[str, Any] | None
    ) -> None:
        known = batch_id in self.reference.batches
        assert (snap is not None) == known, f"{label}: batch {batch_id} exists={snap is not None}"
        if snap is None:
            return
        # (f) versions only grow, and grow with every change.
        previous = self.versions.get(batch_id, 0)
        assert snap["version"] >= previous, f"{label}: {batch_id} version {previous} -> {snap['version']}"
        if before is not None and snap != before:
            assert snap["version"] > before["version"], f"{label}: {batch_id} changed at the same version"
        self.versions[batch_id] = snap["version"]
        # (b) the batch is processing exactly when it has an active run.
        active = snap["active_run"]
        assert (snap["status"] == "processing_pipelines") == (active is not None), (
            f"{label}: {batch_id} is {snap['status']} with active run {active and active['run_id']}"
        )
        if active is not None:
            assert self.open_run.get(batch_id) == active["run_id"]
        else:
            assert batch_id not in self.open_run, f"{label}: {batch_id} lost its run"
        # (g) agreement with the reference model.
        ref = self.reference.view(batch_id)
        assert snap["status"] == ref["status"], (
            f"{label}: {batch_id} is {snap['status']}, ref {ref['status']}"
        )
        assert (active is None) == (ref["active_run"] is None)
        if active is not None:
            mine = ref["active_run"]
            assert active["correlation_id"] == mine["correlation_id"]
            assert active["pipeline_name"] == mine["pipeline_name"]
            assert active["skipped_phases"] == mine["skipped_phases"]
            self._same_phases(label, batch_id, active["phases"], mine["phases"])
        history = [
            {k: run[k] for k in ("correlation_id", "pipeline_name", "final_status", "phases")}
            | {"completed_phases": run["completed_phases"], "skipped_phases": run["skipped_phases"]}
            for run in snap["history"]
        ]
        assert history == ref["history"], f"{label}: {batch_id} history differs from the reference"

    def _same_phases(self, label: str, batch_id: str, engine: dict[str, str], ref: dict[str, str]) -> None:
        """Phase statuses must match the reference's, each one (under ``max_parallel`` too: a
        phase left without items is skipped at once, it needs no slot)."""
        assert set(engine) == set(ref), f"{label}: {batch_id} phases {sorted(engine)} vs {sorted(ref)}"
        for name, status in engine.items():
            assert status == ref[name], f"{label}: {batch_id} phase {name} is {status}, reference {ref[name]}"

    def _probe_request(self, label: str, batch_id: str) -> None:
        """Ask ``decide`` (pure, nothing committed) whether a valid request is accepted now."""
        state = self._run(self.service.get_batch(batch_id))
        profile = self.service.profile
        request = ClientBatchPipelineRequestV1(
            batch_id=batch_id,
            requested_pipeline=profile.catalog.names[0],
            user_id="teacher-probe",
            prompt_payload={"prompt_ref": "probe"},
        )
        command = Command(request, self._new_id(), self._new_id())
        decision = decide(state, command, profile=profile, now=self.clock.now())
        assert decision.denial is None, (
            f"{label}: after completion a valid request on {batch_id} is denied: {decision.denial}"
        )
        assert decision.run_id is not None, (
            f"{label}: after completion a request on {batch_id} started no run"
        )

    # -- sending --------------------------------------------------------------------------
    def _deliver(
        self,
        label: str,
        topic: str,
        data: dict[str, Any],
        predict: Callable[[str], Expectation],
        *,
        correlation_id: str | None = None,
    ) -> None:
        event_id = self._new_id()
        _, envelope = self.envelopes.wrap(
            topic, data, event_id=event_id, correlation_id=correlation_id or self._new_id()
        )

        def send() -> Awaitable[HandleResult]:
            return self.service.handle_message(topic, envelope)

        self._step(label, send, lambda: predict(event_id))
        self.deliveries.append(_Delivery(label, event_id, send, predict))

    def _execute(
        self, label: str, payload: CancelRun | RetryPhase, predict: Callable[[str], Expectation], corr: str
    ) -> None:
        event_id = self._new_id()

        def send() -> Awaitable[HandleResult]:
            return self.service.execute(payload, event_id=event_id, correlation_id=corr)

        self._step(label, send, lambda: predict(event_id))
        self.deliveries.append(_Delivery(label, event_id, send, predict))

    def _sweep(self, label: str) -> None:
        """One ``sweep_waiting`` with a dead-letter callback that keeps what it is given,
        checked against :meth:`ReferenceModel.sweep_waiting`."""
        self.healthy = False
        before = self._snapshots()
        published = self.engine.published if self.engine is not None else None
        already = len(self._run(_await(published()))) if published is not None else 0
        letters: list[ExpiredFact] = []

        async def dead_letter(fact: ExpiredFact) -> None:
            letters.append(fact)

        done = self._run(self.service.sweep_waiting(dead_letter, limit=10_000))
        expected: Sweep = self.reference.sweep_waiting()
        after = self._snapshots()
        want = sorted((d.event_id, d.topic) for d in expected.dead_letters)
        got = sorted((f.event_id, f.topic) for f in letters)
        assert got == want, f"{label}: dead-lettered {got}, reference {want}"
        waited = {d.event_id: d.waits_for for d in expected.dead_letters}
        for fact in letters:
            assert waited[fact.event_id] in fact.reason, (
                f"{label}: {fact.event_id} dead-lettered with {fact.reason!r}, "
                f"it waited for {waited[fact.event_id]}"
            )
            # A replayed letter waits under the id derived for it; its message keeps its own.
            raw_id = json.loads(fact.raw)["event_id"]
            chain = [raw_id]
            while chain[-1] != fact.event_id and len(chain) <= MAX_REPLAYS:
                chain.append(replay_id(chain[-1]))
            assert chain[-1] == fact.event_id, f"{label}: dead letter raw differs"
        assert (done.resumed, done.denied, done.dead_lettered) == (
            len(expected.resumed),
            len(expected.denied),
            len(expected.dead_letters),
        ), f"{label}: sweep {done}, reference {expected}"
        for event_id, reason in expected.denied:
            entry = self._run(self.service.store.inbox_entry(event_id))
            result = None if entry is None else entry.result
            assert result == f"denied:{reason}", (
                f"{label}: expired request {event_id} recorded {result}, reference denied:{reason}"
            )
        if not expected.resumed:
            assert after == before, f"{label}: a sweep that resumed nothing changed state"
        if published is not None:
            new = [m.as_dict() for m in self._run(_await(published()))[already:]]
            self.emitted.extend(new)
            if not expected.resumed:
                denials = [m for m in new if m["topic"] == Topic.PIPELINE_DENIED.value]
                reasons = sorted(m["value"]["data"]["denial_reason"] for m in denials)
                assert reasons == sorted(r for _, r in expected.denied), f"{label}: sweep denied {reasons}"
                assert len(new) == 2 * len(denials), f"{label}: sweep emitted {[m['topic'] for m in new]}"
        for batch_id, snap in after.items():
            self._check_batch(label, batch_id, before.get(batch_id), snap)
        self._check_waiting(label)
        self.healthy = True

    def _send_outcome(self, label: str, outcome: _Outcome) -> None:
        data = outcome.data
        processed = {e["essay_id"]: e["text_storage_id"] for e in data["processed_essays"]}

        def predict(event_id: str) -> Expectation:
            return self.reference.outcome(
                event_id,
                outcome.batch_id,
                outcome.phase,
                outcome.correlation_id,
                data["phase_status"],
                processed,
                data["failed_essay_ids"],
            )

        self._deliver(label, Topic.PHASE_OUTCOME.value, data, predict, correlation_id=outcome.correlation_id)
        self.outcomes.append(outcome)

    def _batches(self) -> list[str]:
        return sorted(self.registrations)

    def _essay_ids(self, batch_id: str) -> list[str]:
        count = self.registrations[batch_id]["expected_essay_count"] if batch_id in self.registrations else 1
        return [f"{batch_id}-e{i}" for i in range(count)]

    # -- rules ----------------------------------------------------------------------------
    # Rules are picked uniformly, so the ones that make progress (register, get ready,
    # request, answer, retry, tick) are separate rules and the disruptive or ignored inputs
    # share one rule (``disrupt``), to keep runs long enough to reach interesting states.

    @initialize(data=st.data())
    def start(self, data: st.DataObject) -> None:
        spec = data.draw(self.profile_strategy(), label="profile")
        profile = spec.profile()
        self.engine = self._run(self.make_engine(profile, self.clock))
        self.reference = ReferenceModel(
            spec.catalog,
            max_parallel=spec.max_parallel,
            max_resends=spec.max_resends,
            strict_correlation=spec.strict_correlation,
            waiting_window=self.service.waiting_window_seconds,
        )
        self.healthy = True

    @precondition(lambda self: len(self.registrations) < self.max_batches)
    @rule(data=st.data(), guest=st.booleans(), essays=st.integers(1, 4), prompt=st.booleans())
    def register(self, data: st.DataObject, guest: bool, essays: int, prompt: bool) -> None:
        """A new batch, guest or regular, with or without a prompt."""
        batch_id = f"b{len(self.registrations)}"
        payload = {
            "batch_id": batch_id,
            "expected_essay_count": essays,
            "essay_ids": data.draw(st.sampled_from([None, [f"{batch_id}-e{i}" for i in range(essays)]])),
            "user_id": "teacher-1",
            "class_id": None if guest else f"class-{batch_id}",
            "course_code": "ENG5",
            "student_prompt_ref": "prompt-1" if prompt else None,
        }
        self.registrations[batch_id] = payload
        self._register(batch_id, payload)

    @precondition(lambda self: bool(self._batches_in(*_NOT_READY)))
    @rule(data=st.data())
    def get_ready(self, data: st.DataObject) -> None:
        """The next readiness message a batch is waiting for (provisioning, then for a
        regular batch the student associations and the essays-ready event)."""
        batch_id = data.draw(st.sampled_from(self._batches_in(*_NOT_READY)))
        step = {
            "awaiting_content_validation": "provision",
            "awaiting_student_validation": "associations",
            "student_validation_completed": "essays_ready",
        }[self.reference.batches[batch_id].status]
        self._readiness(data, step, batch_id)

    @precondition(lambda self: bool(self._batches_in("ready_for_pipeline_execution")))
    @rule(data=st.data())
    def request(self, data: st.DataObject) -> None:
        """A request for a known pipeline on a ready batch, mostly with a prompt (requests
        in other states, for unknown pipelines or batches are ``disrupt`` inputs)."""
        batch_id = data.draw(st.sampled_from(self._batches_in("ready_for_pipeline_execution")))
        pipeline = data.draw(st.sampled_from(self.service.profile.catalog.names))
        prompt = data.draw(st.integers(0, 4), label="prompt") > 0
        self._request(batch_id, pipeline, prompt)

    @precondition(lambda self: bool(self.reference.active_phases()))
    @rule(data=st.data(), kind=st.sampled_from(OUTCOME_KINDS))
    def answer(self, data: st.DataObject, kind: str) -> None:
        """The outcome of a dispatched phase, over the essays it was given."""
        batch_id, phase = data.draw(st.sampled_from(self.reference.active_phases()))
        run = self.reference.batches[batch_id].active
        assert run is not None
        essays = list(self.inputs[(run.correlation_id, phase)])
        suffix = f"{phase}-{self._counter}"
        payload = data.draw(
            outcome_data(batch_id, phase, run.correlation_id, essays, kind=kind, suffix=suffix)
        )
        self._send_outcome(
            f"{kind} {phase} on {batch_id}", _Outcome(batch_id, phase, run.correlation_id, payload)
        )

    @precondition(lambda self: bool(self._batches_in("ready_for_pipeline_execution")))
    @rule(data=st.data())
    def retry(self, data: st.DataObject) -> None:
        """``RetryPhase`` of any phase (or an unknown one) on a ready batch."""
        batch_id = data.draw(st.sampled_from(self._batches_in("ready_for_pipeline_execution")))
        phase = data.draw(st.sampled_from([*sorted(self.reference.phases), "no_such_phase"]))
        self._retry(batch_id, phase)

    @precondition(lambda self: bool(self.reference.active_phases()))
    @rule(seconds=st.integers(1, 15))
    def tick(self, seconds: int) -> None:
        """Time passes, then the deadline sweeper runs."""
        self.clock.advance(seconds)
        self.reference.advance_clock(seconds)
        self._step(f"tick {seconds}s and expire", self.service.expire_overdue, self.reference.expire)

    @precondition(lambda self: bool(self._next_batch() or self._batches_in(*_NOT_READY)))
    @rule(data=st.data())
    def arrive_early(self, data: st.DataObject) -> None:
        """A fact ahead of the one it follows: any fact for the batch the next registration
        creates, or a later readiness fact (or a request) for a batch not ready yet."""
        batch_id = data.draw(st.sampled_from([*self._next_batch(), *self._batches_in(*_NOT_READY)]))
        if batch_id not in self.registrations:
            self._early_fact(data, self._new_id())
            return
        path = ["provision", "associations", "essays_ready"]
        if self.registrations[batch_id]["class_id"] is None:
            path = ["provision"]
        current = {
            "awaiting_content_validation": "provision",
            "awaiting_student_validation": "associations",
            "student_validation_completed": "essays_ready",
        }[self.reference.batches[batch_id].status]
        later = path[path.index(current) + 1 :]
        what = data.draw(st.sampled_from([*later, "request"]))
        if what == "request":
            pipeline = data.draw(st.sampled_from(self.service.profile.catalog.names))
            self._request(batch_id, pipeline, data.draw(st.booleans()))
        else:
            self._readiness(data, what, batch_id)

    @precondition(lambda self: bool(self.reference.waiting))
    @rule(data=st.data())
    def sweep_waiting(self, data: st.DataObject) -> None:
        """Time passes (not at all, past the oldest waiting fact's window, or past every
        waiting fact's), then the waiting set is swept."""
        window = self.reference.waiting_window
        ages = [self.reference.now - w.arrived_at for w in self.reference.waiting]
        seconds = data.draw(
            st.sampled_from([0.0, max(0.0, window + 1 - max(ages)), max(0.0, window + 1 - min(ages))])
        )
        self.clock.advance(seconds)
        self.reference.advance_clock(seconds)
        self._sweep(f"sweep waiting after {seconds:g}s")

    @rule(data=st.data())
    def disrupt(self, data: st.DataObject) -> None:
        """Cancellations, duplicates, stale and premature outcomes, misplaced or bad input
        (only the kinds that make sense now are drawn)."""
        batches = self._batches()
        corr = self._new_id()
        what = data.draw(st.sampled_from(self._disruptions()))
        if what == "idle_tick":
            self.clock.advance(1)
            self.reference.advance_clock(1)
            self._step("tick 1s and expire", self.service.expire_overdue, self.reference.expire)
        elif what == "cancel":
            active = [b for b in batches if self.reference.batches[b].active is not None]
            self._cancel(data.draw(st.sampled_from(active)), corr)
        elif what == "redeliver":
            delivery = data.draw(st.sampled_from(self.deliveries))
            self._step(
                f"redeliver ({delivery.label})", delivery.send, lambda: delivery.predict(delivery.event_id)
            )
        elif what == "replay_outcome":
            outcome = data.draw(st.sampled_from(self.outcomes))
            self._send_outcome(f"replay {outcome.phase} on {outcome.batch_id}", outcome)
        elif what == "stale_outcome":
            batch_id = data.draw(st.sampled_from(batches))
            old = [run.correlation_id for run in self.reference.batches[batch_id].history]
            stale = data.draw(st.sampled_from([*old, corr]))
            phase = data.draw(st.sampled_from(sorted(self.reference.phases)))
            self._outcome_for(data, f"stale outcome {phase} on {batch_id}", batch_id, phase, stale)
        elif what == "premature_outcome":
            batch_id, phase, run_corr = data.draw(st.sampled_from(self._pending()))
            self._outcome_for(data, f"premature outcome {phase} on {batch_id}", batch_id, phase, run_corr)
        elif what == "misplaced_readiness":
            batch_id = data.draw(st.sampled_from(batches))
            step = data.draw(st.sampled_from(["provision", "associations", "essays_ready"]))
            self._readiness(data, step, batch_id)
        elif what == "early_fact":
            self._early_fact(data, corr)
        elif what == "validation_errors":
            batch_id = data.draw(st.sampled_from([*batches, self.ghost, *self._next_batch()]))
            self._validation_errors(data, batch_id)
        elif what == "register_again":
            batch_id = data.draw(st.sampled_from(batches))
            self._register(batch_id, self.registrations[batch_id], label="again")
        elif what == "odd_request":
            batch_id = data.draw(st.sampled_from([*batches, self.ghost]))
            pipeline = data.draw(st.sampled_from([*self.service.profile.catalog.names, "no_such_pipeline"]))
            self._request(batch_id, pipeline, data.draw(st.booleans()))
        elif what == "odd_retry":
            batch_id = data.draw(st.sampled_from(batches))
            self._retry(
                batch_id, data.draw(st.sampled_from([*sorted(self.reference.phases), "no_such_phase"]))
            )
        else:
            self._bad_input(data, corr)

    # -- rule helpers ---------------------------------------------------------------------
    def _disruptions(self) -> list[str]:
        batches = bool(self.registrations)
        options = {
            "idle_tick": True,
            "cancel": any(b.active is not None for b in self.reference.batches.values()),
            "redeliver": bool(self.deliveries),
            "replay_outcome": bool(self.outcomes),
            "stale_outcome": batches and bool(self.reference.phases),
            "premature_outcome": bool(self._pending()),
            "misplaced_readiness": batches,
            "early_fact": bool(self._next_batch()),
            "validation_errors": True,
            "register_again": batches,
            "odd_request": True,
            "odd_retry": batches,
            "bad_input": True,
        }
        return [name for name, possible in options.items() if possible]

    def _next_batch(self) -> list[str]:
        """The id the next registration will get, while one more batch may be registered."""
        count = len(self.registrations)
        return [f"b{count}"] if count < self.max_batches else []

    def _early_fact(self, data: st.DataObject, corr: str) -> None:
        """A fact for the batch the next registration creates, before it exists."""
        batch_id = self._next_batch()[0]
        what = data.draw(
            st.sampled_from(
                ["provision", "associations", "essays_ready", "request", "outcome", "validation_errors"]
            )
        )
        if what == "request":
            pipeline = data.draw(st.sampled_from([*self.service.profile.catalog.names, "no_such_pipeline"]))
            self._request(batch_id, pipeline, data.draw(st.booleans()))
        elif what == "outcome":
            phase = data.draw(st.sampled_from(sorted(self.reference.phases)))
            self._outcome_for(data, f"early outcome {phase} on {batch_id}", batch_id, phase, corr)
        elif what == "validation_errors":
            self._validation_errors(data, batch_id)
        else:
            self._readiness(data, what, batch_id)

    def _validation_errors(self, data: st.DataObject, batch_id: str) -> None:
        critical = data.draw(st.booleans(), label="critical")
        payload = data.draw(validation_errors_data(batch_id, critical))
        self._deliver(
            f"validation errors{' (critical)' if critical else ''} {batch_id}",
            Topic.VALIDATION_ERRORS.value,
            payload,
            lambda eid: self.reference.validation_errors(eid, batch_id, critical=critical),
        )

    def _batches_in(self, *statuses: str) -> list[str]:
        return [b for b in self._batches() if self.reference.batches[b].status in statuses]

    def _pending(self) -> list[tuple[str, str, str]]:
        return [
            (batch_id, name, batch.active.correlation_id)
            for batch_id, batch in sorted(self.reference.batches.items())
            if batch.active is not None
            for name, phase in batch.active.phases.items()
            if phase.status == "pending_dependencies"
        ]

    def _register(self, batch_id: str, payload: dict[str, Any], *, label: str = "") -> None:
        self._deliver(
            f"register {batch_id} {label}".strip(),
            Topic.BATCH_REGISTER.value,
            payload,
            lambda eid: self.reference.register(eid, payload),
        )

    def _readiness(self, data: st.DataObject, step: str, batch_id: str) -> None:
        essay_ids = self._essay_ids(batch_id)
        if step == "provision":
            payload = data.draw(provisioning_data(batch_id, essay_ids))
            essays = {e["essay_id"]: e["text_storage_id"] for e in payload["essays_for_processing"]}
            self._deliver(
                f"provision {batch_id}",
                Topic.CONTENT_PROVISIONED.value,
                payload,
                lambda eid: self.reference.provision(eid, batch_id, essays),
            )
        elif step == "associations":
            class_id = self.registrations.get(batch_id, {}).get("class_id") or "class-x"
            _, envelope = self.envelopes.group_confirmed(batch_id, class_id, essay_ids)
            self._deliver(
                f"associations {batch_id}",
                Topic.ASSOCIATIONS_CONFIRMED.value,
                envelope["data"],
                lambda eid: self.reference.confirm_associations(eid, batch_id),
            )
        else:
            payload = data.draw(essays_ready_data(batch_id, essay_ids))
            ready = {e["essay_id"]: e["text_storage_id"] for e in payload["ready_essays"]}
            self._deliver(
                f"essays ready {batch_id}",
                Topic.ESSAYS_READY.value,
                payload,
                lambda eid: self.reference.essays_ready(eid, batch_id, ready),
            )

    def _request(self, batch_id: str, pipeline: str, prompt: bool) -> None:
        corr = self._new_id()
        _, envelope = self.envelopes.request(
            batch_id,
            pipeline,
            correlation_id=corr,
            prompt_payload={"prompt_ref": "prompt-2"} if prompt else None,
        )
        self._deliver(
            f"request {pipeline} on {batch_id}{'' if prompt else ' without prompt'}",
            Topic.PIPELINE_REQUEST.value,
            envelope["data"],
            lambda eid: self.reference.request(eid, batch_id, pipeline, corr, prompt=prompt),
            correlation_id=corr,
        )

    def _retry(self, batch_id: str, phase: str) -> None:
        corr = self._new_id()
        self._execute(
            f"retry {phase} on {batch_id}",
            RetryPhase(batch_id, phase, "teacher-1", retry_reason="property test"),
            lambda eid: self.reference.retry(eid, batch_id, phase, corr),
            corr,
        )

    def _cancel(self, batch_id: str, corr: str) -> None:
        self._execute(
            f"cancel run on {batch_id}",
            CancelRun(batch_id, reason="teacher cancelled"),
            lambda eid: self.reference.cancel(eid, batch_id),
            corr,
        )

    def _outcome_for(self, data: st.DataObject, label: str, batch_id: str, phase: str, corr: str) -> None:
        kind = data.draw(st.sampled_from(OUTCOME_KINDS))
        payload = data.draw(outcome_data(batch_id, phase, corr, self._essay_ids(batch_id), kind=kind))
        self._send_outcome(f"{label} ({kind})", _Outcome(batch_id, phase, corr, payload))

    def _bad_input(self, data: st.DataObject, corr: str) -> None:
        """Input that can never apply: it raises and changes nothing."""
        choice = data.draw(
            st.sampled_from(["ghost_outcome", "unknown_phase", "conflicting_registration", "cancel_idle"])
        )
        if choice == "ghost_outcome" or not self.registrations:
            self._outcome_for(data, "outcome for a ghost batch", self.ghost, "spellcheck", corr)
            return
        batch_id = data.draw(st.sampled_from(self._batches()))
        if choice == "unknown_phase":
            self._outcome_for(data, f"unknown phase on {batch_id}", batch_id, "no_such_phase", corr)
        elif choice == "cancel_idle":
            self._cancel(batch_id, corr)
        else:
            changed = {**self.registrations[batch_id], "user_id": "someone-else"}
            self._register(batch_id, changed, label="with other data")

    # -- teardown -------------------------------------------------------------------------
    def teardown(self) -> None:
        try:
            if self.healthy and self.engine is not None:
                self._finish()
        finally:
            if self.engine is not None and self.engine.close is not None:
                self._run(_await(self.engine.close()))
            self.loop.close()

    def _finish(self) -> None:
        """Answer every open run until it completes, then check (c) over the whole example."""
        for _ in range(4 * len(self.reference.phases) + 4):
            active = self.reference.active_phases()
            if not active:
                break
            for batch_id, phase in active:
                run = self.reference.batches[batch_id].active
                assert run is not None
                essays = list(self.inputs[(run.correlation_id, phase)])
                data = {
                    "batch_id": batch_id,
                    "phase_name": phase,
                    "phase_status": "completed_successfully",
                    "processed_essays": [{"essay_id": e, "text_storage_id": f"{e}-final"} for e in essays],
                    "failed_essay_ids": [],
                    "correlation_id": run.correlation_id,
                }
                self._send_outcome(
                    f"final answer {phase} on {batch_id}", _Outcome(batch_id, phase, run.correlation_id, data)
                )
        stuck = {b: run for b, run in self.open_run.items()}
        assert not stuck, f"runs never completed although every dispatched phase was answered: {stuck}"
        for seen in self.runs.values():
            assert seen.completions == 1, f"run {seen.run_id} completed {seen.completions} times"
        if self.engine is not None and self.engine.published is not None:
            published = self._run(_await(self.engine.published()))
            counts = Counter(m.event_id for m in published)
            expected = Counter(m["value"]["event_id"] for m in self.emitted)
            # A re-sent command may be published once more per re-send (if it had already
            # gone out when it was re-queued), always with its own event id.
            assert set(counts) == set(expected), "the relay did not publish every emitted message"
            for event_id, count in counts.items():
                most = 1 + self.resent[event_id]
                assert 1 <= count <= most, f"{event_id} published {count} times, at most {most} expected"
            completions = Counter(
                m.value["data"]["run_id"] for m in published if m.topic == Topic.PIPELINE_COMPLETED.value
            )
            assert all(n == 1 for n in completions.values())
            assert set(completions) == set(self.runs)


async def _await(value: Awaitable[T]) -> T:
    return await value


def _kind(results: list[HandleResult], error: PipelineStateError | None) -> tuple[str, str | None]:
    """The engine's verdict on a step: raised, denied (reason), applied or ignored."""
    if error is not None:
        return "raised", type(error).__name__
    if len(results) == 1 and results[0].waiting is not None:
        return "waiting", results[0].waiting
    for result in results:
        decision = result.decision
        if decision is not None and decision.denial is not None:
            return "denied", decision.denial.reason
    applied = [r for r in results if not r.duplicate and r.decision is not None and r.decision.changed]
    if applied:
        return "applied", None
    reasons = [r.ignored for r in results]
    return "ignored", ",".join(str(r) for r in reasons) or "nothing to do"


def _unworded(waits_for: str) -> str:
    """What a fact waits for, a ``never_applies:`` mark without the engine's error."""
    return NEVER_APPLIES if waits_for.startswith(NEVER_APPLIES) else waits_for


def _verdict(item: HandleResult | PipelineStateError) -> tuple[str | None, str, str | None]:
    """``(event id, kind, denial reason)`` of a resumed fact's result (a rejected fact's
    error carries no event id)."""
    if not isinstance(item, HandleResult):
        return None, "raised", None
    decision = item.decision
    if decision is not None and decision.denial is not None:
        return item.event_id, "denied", decision.denial.reason
    if decision is not None and decision.changed:
        return item.event_id, "applied", None
    return item.event_id, "ignored", None


def _unversioned(snaps: Mapping[str, dict[str, Any] | None]) -> dict[str, dict[str, Any] | None]:
    return {
        b: None if s is None else {k: v for k, v in s.items() if k != "version"} for b, s in snaps.items()
    }


def _check_denial(label: str, out: list[Message], reason: str) -> None:
    """A denial emits ``PipelineDeniedV1`` with its reason and a teacher notification only."""
    assert [m["topic"] for m in out] == [
        Topic.PIPELINE_DENIED.value,
        Topic.TEACHER_NOTIFICATION.value,
    ], f"{label}: denial emitted {[m['topic'] for m in out]}"
    assert out[0]["value"]["data"]["denial_reason"] == reason
    note = out[1]["value"]["data"]
    assert (note["notification_type"], note["priority"], note["action_required"]) == (
        "pipeline_denied",
        "immediate",
        True,
    )


def _check_notifications(
    label: str, parsed: list[tuple[str, str, dict[str, Any]]], completed: list[Completion]
) -> None:
    """Teacher notifications follow the CONTRACT table: a started run is low priority; a
    completed run is high priority when clean, else immediate with action required."""
    notes = [data for topic, _, data in parsed if topic == Topic.TEACHER_NOTIFICATION.value]
    for note in notes:
        if note["notification_type"] == "batch_processing_started":
            assert (note["priority"], note["action_required"]) == ("low", False), f"{label}: {note}"
    finished = {
        note["payload"]["run_id"]: note for note in notes if note["notification_type"] == "pipeline_completed"
    }
    runs = [data["run_id"] for topic, _, data in parsed if topic == Topic.PIPELINE_COMPLETED.value]
    assert sorted(finished) == sorted(runs), (
        f"{label}: completion notifications {sorted(finished)} for {runs}"
    )
    for run_id, done in zip(runs, completed, strict=True):
        clean = done.failed == 0 and done.final_status == "completed_successfully"
        note = finished[run_id]
        expected = ("high", False) if clean else ("immediate", True)
        assert (note["priority"], note["action_required"]) == expected, f"{label}: {run_id} notified {note}"


def _same_dispatches(label: str, seen: list[Dispatch], expected: list[Dispatch]) -> None:
    def key(d: Dispatch) -> tuple[str, str, str]:
        return (d.batch_id, d.phase, d.correlation_id)

    assert [key(d) for d in seen] == [key(d) for d in expected], (
        f"{label}: dispatched {[key(d)[:2] for d in seen]}, reference {[key(d)[:2] for d in expected]}"
    )
    for got, want in zip(seen, expected, strict=True):
        assert got.essays == want.essays, f"{label}: {got.phase} got {got.essays}, reference {want.essays}"


def _same_completions(label: str, seen: list[Completion], expected: list[Completion]) -> None:
    assert seen == expected, f"{label}: completions {seen}, reference {expected}"
