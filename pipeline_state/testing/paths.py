"""Every path generated: model-based testing of the engine from its lifecycles.

The engine is explored from an unregistered batch, the way XState's graph tools walk a
machine (``getShortestPaths``, ``getSimplePaths``), except that each edge is computed by
the real, pure :func:`~pipeline_state._decide.decide` rather than read off a diagram:

* a *node* is an **abstract state** (:class:`StateKey`): the batch status, guest or
  regular, whether a prompt is attached, how many items it registered and holds, the
  active run's phases (status, re-sends, how many items came out) and which phases have
  recorded outputs. Ids and times are left out, so the search is finite;
* an *edge* is one input from an **alphabet** derived from the profile and its catalog
  (:func:`inputs_for`): registrations, readiness facts, a request for every pipeline, the
  three outcomes of every dispatched phase, the sweeper with the clock past the deadline,
  the operator commands, and inputs that are refused (duplicates, unknown batch, not
  ready, unknown pipeline or phase, items never sent...). Deciding the input on the
  node's concrete state gives the successor and the moves made.

:func:`explore` runs a breadth-first search and keeps, for every abstract state, every move
``(lifecycle, trigger, source, dest)`` fired and every verdict (``applied``,
``ignored:<why>``, ``denied:<why>``, ``raised:<error>``), the **shortest** input sequence
that reaches it, and checks every edge (:func:`engine_invariants`). :func:`simple_paths`
enumerates paths that never revisit an abstract state, up to ``max_depth`` steps and
``max_paths`` paths. :func:`coverage` compares the moves
fired with the transitions the lifecycles declare (each source and each guarded
alternative apart; ``ABSENT`` is ``""``) and names those no path reaches.

A :class:`Path` is concrete and replayable: each :class:`Step` holds the
:class:`~pipeline_state._commands.Command`, the ``now`` it runs at, the topic it arrives on
and what ``decide`` answered (decision, moves, state after, or the error raised).
:func:`replay` drives a path through a :class:`~pipeline_state._service.PipelineService`
whose clock is a :class:`~pipeline_state._clock.ManualClock`.

Two transitions need conditions the shipped profile never meets. A phase is *aborted*
when its command would exceed ``max_command_bytes``; a valid profile guarantees it never
does for a batch it registered, so the default exploration profile
(:func:`exploration_profile`) keeps two items per batch and the smallest command limit,
and an ``intake_profile`` (default: the default profile) registers a *legacy*
batch of long item ids, as a state stored before the bounds existed would be (that step
is decided, and replayed, under the intake profile). A run is
*recorded* by :class:`~pipeline_state._commands.RecordPhaseCompletion` on an idle batch,
which the alphabet sends for every phase.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

import attrs

from pipeline_state._clock import ManualClock
from pipeline_state._commands import (
    ArchiveBatch,
    CancelBatch,
    CancelRun,
    Command,
    ExpireOverdue,
    Payload,
    RecordPhaseCompletion,
    RetryPhase,
)
from pipeline_state._decide import Decision, Move, decide
from pipeline_state._inbound import Inbound
from pipeline_state._inputs import (
    ContentReady,
    EngineInput,
    GroupConfirmed,
    ItemsReady,
    OutcomeStatus,
    PhaseOutcome,
    RegisterBatch,
    RequestPipeline,
    ValidationFailed,
)
from pipeline_state._lifecycle import ABSENT, BATCH_LIFECYCLE, LIFECYCLES, BatchStatus, Lifecycle, PhaseStatus
from pipeline_state._model import BatchState, ItemRef, Run
from pipeline_state._outbound import RunSummary
from pipeline_state._profile import COMMAND_OVERHEAD_BYTES, Profile
from pipeline_state._service import HandleResult, PipelineService
from pipeline_state._wire import MAX_ITEM_ID_LENGTH, MAX_ITEMS_PER_BATCH
from pipeline_state.errors import PipelineStateError
from pipeline_state.profiles import default_profile

__all__ = [
    "BATCH_ID",
    "DEFAULT_MAX_DEPTH",
    "START",
    "Check",
    "Coverage",
    "Crash",
    "Exploration",
    "Input",
    "LifecycleCoverage",
    "Path",
    "Replayed",
    "StateKey",
    "Step",
    "TransitionKey",
    "Violation",
    "abstract_key",
    "completion_topics",
    "coverage",
    "declared_transitions",
    "engine_invariants",
    "exploration_profile",
    "explore",
    "inputs_for",
    "maximal_paths",
    "paths_command",
    "print_coverage",
    "replay",
    "simple_paths",
]

BATCH_ID = "batch-1"
"""The batch every generated path works on."""

START = datetime(2025, 1, 1, tzinfo=UTC)
"""The time of a path's first step; each later step runs a second later (the sweeper's
step runs when the earliest deadline has passed)."""

DEFAULT_MAX_DEPTH = 24
"""Breadth-first search stops extending paths of this many steps."""

DEFAULT_MAX_STATES = 100_000
"""Breadth-first search stops keeping new abstract states once it holds this many (a big
catalog has many more: the search is then cut, and says so)."""

_ITEMS = 2
"""Items of a generated (non-legacy) batch."""

_IDS = uuid.UUID("2f0b8f55-6f1e-4d55-9a39-5a2b1f1e7c11")
_OWNER = "owner-1"
_GROUP = "group-1"
_PROMPT = "prompt-1"
_UNKNOWN_PIPELINE = "no_such_pipeline"
_UNKNOWN_PHASE = "no_such_phase"
_OUTCOME_STATUSES: tuple[OutcomeStatus, ...] = (
    "completed_successfully",
    "completed_with_failures",
    "failed_critically",
)


@functools.lru_cache(maxsize=4096)
def _id(*parts: object) -> str:
    """A deterministic UUID string (ids repeat from node to node: cached)."""
    return str(uuid.uuid5(_IDS, "/".join(str(p) for p in parts)))


# --- keys --------------------------------------------------------------------------------


@attrs.frozen(order=True)
class TransitionKey:
    """A transition as the lifecycles declare it and as a :class:`~pipeline_state._decide.Move`
    logs it: ``source`` is ``""`` (:data:`~pipeline_state._lifecycle.ABSENT`) for a creation."""

    lifecycle: str
    trigger: str
    source: str
    dest: str

    @classmethod
    def of(cls, move: Move) -> TransitionKey:
        return cls(move.entity, move.trigger, move.source, move.dest)

    def __str__(self) -> str:
        return f"{self.lifecycle}: {self.trigger} {self.source or '(absent)'} -> {self.dest}"


@attrs.frozen(order=True)
class StateKey:
    """The abstract state of one batch (see the module): what the search tells apart.

    ``run`` is ``(pipeline, ((phase, status, resends, outputs), ...))`` of the
    active run; ``recorded`` is ``((phase, outputs), ...)`` of the phases whose outputs
    later runs reuse; ``history`` says whether a run was archived (an outcome may be stale).
    """

    status: str
    guest: bool = False
    prompt: bool = False
    items: int = 0
    held: int = 0
    run: tuple[str, tuple[tuple[str, str, int, int], ...]] | None = None
    recorded: tuple[tuple[str, int], ...] = ()
    history: bool = False

    def __str__(self) -> str:
        if self.status == ABSENT:
            return "(no batch)"
        text = self.status
        if self.status in _READINESS_PATH:
            text += " guest" if self.guest else " regular"
        text += f"{' prompt' if self.prompt else ''} items={self.items} held={self.held}"
        if self.run is not None:
            pipeline, phases = self.run
            shown = ", ".join(f"{p}={s}" + (f"+{r}" if r else "") for p, s, r, _ in phases)
            text += f" run {pipeline}[{shown}]"
        if self.recorded:
            text += " recorded " + ",".join(f"{p}:{n}" for p, n in self.recorded)
        return text


_READINESS_PATH = frozenset(
    {
        BatchStatus.AWAITING_CONTENT_VALIDATION,
        BatchStatus.AWAITING_GROUP_VALIDATION,
        BatchStatus.GROUP_VALIDATION_COMPLETED,
    }
)


def abstract_key(state: BatchState | None) -> StateKey:
    """The :class:`StateKey` of ``state`` (``status=""`` for no batch).

    What cannot change what a later input does is left out: a batch in a final status is
    its status alone (every input is refused there); guest or regular only counts on the
    way to ready (it decides the readiness path; afterwards the prompt flag is what
    admission reads); a phase's input count follows from its dependencies' outputs.
    """
    if state is None:
        return StateKey(ABSENT)
    if BATCH_LIFECYCLE.is_final(state.status):
        return StateKey(state.status.value)
    run = state.active_run
    run_key = None
    if run is not None:
        phases = tuple((p.name, p.status.value, p.resends, len(p.outputs)) for p in run.phases)
        run_key = (run.pipeline_name, phases)
    recorded = tuple(sorted((name, len(out)) for name, out in state.past.recorded))
    return StateKey(
        state.status.value,
        (not state.has_group) if state.status in _READINESS_PATH else False,
        state.prompt_ref is not None,
        len(state.item_ids),
        len(state.items),
        run_key,
        recorded,
        state.past.count > 0,
    )


# --- paths -------------------------------------------------------------------------------


@attrs.frozen
class Input:
    """One letter of the alphabet: a payload, where it arrives and when, and under which
    profile it is decided (``None``: the exploration's)."""

    label: str
    payload: Payload
    topic: str
    now: datetime
    correlation_id: str | None = None
    profile: Profile | None = None


@attrs.frozen(eq=False)
class Step:
    """One input of a path and what :func:`~pipeline_state._decide.decide` answered.

    ``decision`` is ``None`` when ``decide`` raised; ``error`` then names the error class
    and ``detail`` its message. ``state`` is the batch after the step (unchanged after an
    error). ``profile`` is set when the step is decided under another profile than the
    path's (the legacy intake).
    """

    label: str
    command: Command
    topic: str
    now: datetime
    decision: Decision | None
    state: BatchState | None
    error: str | None = None
    detail: str | None = None
    profile: Profile | None = None

    @property
    def moves(self) -> tuple[Move, ...]:
        return () if self.decision is None else self.decision.moves

    @property
    def transitions(self) -> tuple[TransitionKey, ...]:
        return tuple(TransitionKey.of(m) for m in self.moves)

    @property
    def verdict(self) -> str:
        """``applied``, ``ignored:<reason>``, ``denied:<reason>`` or ``raised:<error class>``."""
        if self.decision is None:
            return f"raised:{self.error}"
        if self.decision.denial is not None:
            return f"denied:{self.decision.denial.reason}"
        if self.decision.ignored is not None:
            return f"ignored:{self.decision.ignored}"
        return "applied"

    def describe(self) -> str:
        moves = "; ".join(str(t) for t in self.transitions)
        offset = int((self.now - START).total_seconds())
        return f"{self.label} @+{offset}s -> {self.verdict}" + (f" [{moves}]" if moves else "")


@attrs.frozen(eq=False)
class Path:
    """A concrete, replayable input sequence from an unregistered batch."""

    profile: Profile
    steps: tuple[Step, ...] = ()

    def __len__(self) -> int:
        return len(self.steps)

    def then(self, step: Step) -> Path:
        return Path(self.profile, (*self.steps, step))

    @property
    def state(self) -> BatchState | None:
        """The batch after the last step (``None``: not registered)."""
        return self.steps[-1].state if self.steps else None

    @property
    def key(self) -> StateKey:
        return abstract_key(self.state)

    @property
    def now(self) -> datetime:
        """The time of the last step (:data:`START` before the first)."""
        return self.steps[-1].now if self.steps else START

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(s.label for s in self.steps)

    @property
    def transitions(self) -> tuple[TransitionKey, ...]:
        return tuple(t for s in self.steps for t in s.transitions)

    def is_prefix_of(self, other: Path) -> bool:
        return len(self) <= len(other) and all(a is b for a, b in zip(self.steps, other.steps, strict=False))

    def describe(self) -> str:
        return "\n".join(f"{i + 1:2d}. {s.describe()}" for i, s in enumerate(self.steps)) or "(empty path)"


def maximal_paths(paths: Iterable[Path]) -> list[Path]:
    """The paths of ``paths`` that are no other's prefix, longest first: replaying these and
    checking after each step replays them all. Paths share the steps of a common prefix
    when one search made them (:func:`explore`, :func:`simple_paths`)."""
    ordered = sorted(paths, key=len, reverse=True)
    inside: set[int] = set()
    out: list[Path] = []
    for path in ordered:
        if not path.steps or id(path.steps[-1]) in inside:
            continue
        out.append(path)
        inside.update(id(s) for s in path.steps)
    return out


@attrs.frozen
class Crash:
    """An input on which ``decide`` raised something other than a
    :class:`~pipeline_state.errors.PipelineStateError`: an engine bug. ``path`` leads to the
    state it was decided on."""

    path: Path
    input: Input
    error: str


# --- the alphabet ------------------------------------------------------------------------


def exploration_profile(profile: Profile | None = None) -> Profile:
    """``profile`` (default: the default profile) with two items per batch and the smallest
    command limit that allows them in every phase command (commands of more items are
    measured, so a legacy batch can abort), and one re-send of an overdue command (the
    search stays small; both ``expire`` alternatives are still taken)."""
    base = default_profile() if profile is None else profile
    bound = base.largest_command_bytes(_ITEMS)
    return attrs.evolve(base, max_items_per_batch=_ITEMS, max_command_bytes=bound, max_resends=1)


def _legacy_count(profile: Profile, intake: Profile) -> int | None:
    """How many long-id items make a command exceed ``profile.max_command_bytes`` (each
    item takes more than ``2 * MAX_ITEM_ID_LENGTH`` bytes), if ``intake`` accepts them."""
    count = (profile.max_command_bytes - COMMAND_OVERHEAD_BYTES) // (2 * MAX_ITEM_ID_LENGTH) + 1
    if count <= profile.max_items_per_batch or count > intake.max_items_per_batch:
        return None
    return count


def _item_ids(batch_id: str, count: int, *, long: bool) -> list[str]:
    ids = [f"{batch_id}-e{i}" for i in range(count)]
    if long:
        ids = [f"{e}-".ljust(MAX_ITEM_ID_LENGTH, "x") for e in ids]
    return ids


def _refs(ids: Iterable[str], suffix: str) -> tuple[ItemRef, ...]:
    return tuple(ItemRef(i, f"{i[: MAX_ITEM_ID_LENGTH - len(suffix) - 1]}-{suffix}") for i in ids)


def _registration(
    batch_id: str, count: int, *, guest: bool, ids: Sequence[str] | None = None
) -> RegisterBatch:
    named = tuple(ids) if ids is not None else tuple(_item_ids(batch_id, count, long=False))
    return RegisterBatch(
        batch_id,
        _OWNER,
        count,
        named,
        "category-1",
        "en",
        group_id=None if guest else _GROUP,
        prompt_ref=None if guest else _PROMPT,
    )


def _operator(payload: object) -> str:
    return f"operator.{type(payload).__name__}"


def _outcome(
    batch_id: str,
    phase: str,
    status: OutcomeStatus,
    correlation_id: str,
    processed: Sequence[str],
    failed: Sequence[str],
) -> PhaseOutcome:
    return PhaseOutcome(batch_id, phase, status, _refs(processed, phase), tuple(failed), correlation_id)


def _carried(inbound: Inbound, value: EngineInput) -> tuple[str, EngineInput] | None:
    """The topic that carries ``value`` on the profile's wire and the input the engine reads
    from it (the wire may drop what it cannot say, a group say); ``None`` when the profile
    consumes no input of its kind."""
    topic = inbound.topic_of(type(value))
    if topic is None:
        return None
    _, data = inbound.encode(value)
    return topic, inbound.decode(inbound.topics[topic].model.model_validate(data))


def _split(status: str, inputs: Sequence[ItemRef]) -> tuple[list[str], list[str]]:
    """Processed and failed items of an outcome: all, the first half (rounded down: one
    item in, none out), or none."""
    ids = [e.item_id for e in inputs]
    if status == "completed_successfully":
        return ids, []
    if status == "completed_with_failures":
        half = len(ids) // 2
        return ids[:half], ids[half:]
    return [], ids


def inputs_for(
    state: BatchState | None,
    now: datetime,
    profile: Profile,
    *,
    intake_profile: Profile | None = None,
    batch_id: str = BATCH_ID,
) -> list[Input]:
    """The alphabet on ``state`` at the time of the previous step ``now``: every input the
    search tries next, in a fixed order (see the module). Ids are left to the caller."""
    tick = now + timedelta(seconds=1)
    out: list[Input] = []

    def add(label: str, payload: Payload, topic: str, *, at: datetime = tick, **kw: Any) -> None:
        out.append(Input(label, payload, topic, at, **kw))

    def arrive(label: str, value: EngineInput, **kw: Any) -> None:
        """``value`` as the profile's wire carries it, if the profile consumes its kind."""
        carried = _carried((kw.get("profile") or profile).inbound, value)
        if carried is not None:
            add(label, carried[1], carried[0], **kw)

    size = min(_ITEMS, profile.max_items_per_batch)  # a profile may allow fewer
    arrive("register_guest", _registration(batch_id, size, guest=True))
    arrive("register_regular", _registration(batch_id, size, guest=False))
    if state is None:
        too_many = profile.max_items_per_batch + 1
        if too_many <= MAX_ITEMS_PER_BATCH:  # beyond it, the wire model itself refuses
            arrive("register_too_many", _registration(batch_id, too_many, guest=True))
        legacy = None if intake_profile is None else _legacy_count(profile, intake_profile)
        if legacy is not None:
            ids = _item_ids(batch_id, legacy, long=True)
            legacy_registration = _registration(batch_id, legacy, guest=True, ids=ids)
            arrive("register_legacy", legacy_registration, profile=intake_profile)
    items = list(state.item_ids) if state is not None else _item_ids(batch_id, size, long=False)
    arrive("provision", ContentReady(batch_id, _refs(items, "text")))
    arrive("provision_empty", ContentReady(batch_id, ()))
    arrive("provision_unregistered", ContentReady(batch_id, _refs(["unregistered-item"], "text")))
    arrive("group_confirmed", GroupConfirmed(batch_id, _GROUP))
    arrive("items_ready", ItemsReady(batch_id, _refs(items, "text")))
    arrive("validation_errors_critical", ValidationFailed(batch_id, critical=True))
    arrive("validation_errors_non_critical", ValidationFailed(batch_id, critical=False))

    pipelines = [*profile.catalog.names, _UNKNOWN_PIPELINE]
    for pipeline in pipelines:
        prompts: list[dict[str, Any] | None] = [None]
        if state is not None and state.prompt_ref is None and pipeline != _UNKNOWN_PIPELINE:
            prompts.append({"prompt_ref": _PROMPT})
        for prompt in prompts:
            label = f"request:{pipeline}" + ("+prompt" if prompt else "")
            arrive(label, RequestPipeline(batch_id, pipeline, _OWNER, prompt=prompt))

    run = None if state is None else state.active_run
    if run is None:
        first = profile.catalog.phases[0]
        stray = _outcome(batch_id, first, "completed_successfully", _id("stray"), [], [])
        arrive(f"outcome:{first}:no_run", stray, correlation_id=_id("stray"))
    else:
        corr = run.correlation_id
        first_active = next((p for p in run.phases if p.is_active), None)
        for phase in run.phases:
            statuses = _OUTCOME_STATUSES if phase.is_active else _OUTCOME_STATUSES[:1]
            for status in statuses:
                processed, failed = _split(status, phase.inputs)
                payload = _outcome(batch_id, phase.name, status, corr, processed, failed)
                arrive(f"outcome:{phase.name}:{status}", payload, correlation_id=corr)
        if first_active is not None:
            name = first_active.name
            foreign = _id("foreign", now.isoformat())
            processed, failed = _split("completed_successfully", first_active.inputs)
            payload = _outcome(batch_id, name, "completed_successfully", foreign, processed, failed)
            arrive(f"outcome:{name}:foreign_correlation", payload, correlation_id=foreign)
            unsent = _outcome(batch_id, name, "completed_successfully", corr, ["never-sent-item"], [])
            arrive(f"outcome:{name}:unsent_items", unsent, correlation_id=corr)
            if state is not None and state.past.correlations:
                stale = state.past.correlations[-1]
                payload = _outcome(batch_id, name, "completed_successfully", stale, processed, failed)
                arrive(f"outcome:{name}:stale", payload, correlation_id=stale)
    unknown_phase = _outcome(batch_id, _UNKNOWN_PHASE, "completed_successfully", _id("unknown"), [], [])
    arrive("outcome:unknown_phase", unknown_phase, correlation_id=_id("unknown"))

    deadlines = [] if run is None else [p.deadline_at for p in run.phases if p.is_active and p.deadline_at]
    corr_of_run = None if run is None else run.correlation_id
    expire = ExpireOverdue(batch_id)
    if deadlines:
        at = max(tick, min(d for d in deadlines if d is not None))
        add("expire_overdue", expire, _operator(expire), at=at, correlation_id=corr_of_run)
    add("expire_early", expire, _operator(expire), correlation_id=corr_of_run)
    cancel_run = CancelRun(batch_id, _OWNER, "paths")
    add("cancel_run", cancel_run, _operator(cancel_run), correlation_id=corr_of_run)
    cancel_batch = CancelBatch(batch_id, "paths")
    add("cancel_batch", cancel_batch, _operator(cancel_batch), correlation_id=corr_of_run)
    archive = ArchiveBatch(batch_id)
    add("archive", archive, _operator(archive))
    for phase_name in profile.catalog.phases:
        retry = RetryPhase(batch_id, phase_name, _OWNER, "paths")
        add(f"retry:{phase_name}", retry, _operator(retry))
    for phase_name in profile.catalog.phases:
        for success in (True, False):
            record = RecordPhaseCompletion(batch_id, phase_name, success)
            add(f"record:{phase_name}:{'success' if success else 'failure'}", record, _operator(record))
    return out


# --- coverage ----------------------------------------------------------------------------


def declared_transitions(
    lifecycles: Mapping[str, Lifecycle] = LIFECYCLES,
) -> dict[str, tuple[TransitionKey, ...]]:
    """Per lifecycle, every declared ``(trigger, source, dest)``: one per source of each
    transition, each guarded alternative apart, in declaration order."""
    out: dict[str, tuple[TransitionKey, ...]] = {}
    for name, lifecycle in lifecycles.items():
        keys = [TransitionKey(name, t.trigger, s, t.dest) for t in lifecycle.transitions for s in t.sources]
        out[name] = tuple(dict.fromkeys(keys))
    return out


@attrs.frozen
class LifecycleCoverage:
    """The declared transitions of one lifecycle, those some path fires and those none does;
    ``undeclared`` are moves the engine logged under this lifecycle that it does not declare."""

    lifecycle: str
    declared: tuple[TransitionKey, ...]
    covered: tuple[TransitionKey, ...]
    missing: tuple[TransitionKey, ...]
    undeclared: tuple[TransitionKey, ...]


@attrs.frozen
class Coverage:
    """Transition coverage of every lifecycle; ``complete`` when nothing declared is missing."""

    lifecycles: tuple[LifecycleCoverage, ...]

    @property
    def missing(self) -> tuple[TransitionKey, ...]:
        return tuple(t for lc in self.lifecycles for t in lc.missing)

    @property
    def complete(self) -> bool:
        return not self.missing

    def as_json(self) -> dict[str, Any]:
        def keys(items: Iterable[TransitionKey]) -> list[dict[str, str]]:
            return [{"trigger": t.trigger, "source": t.source, "dest": t.dest} for t in items]

        return {
            "complete": self.complete,
            "lifecycles": {
                lc.lifecycle: {
                    "declared": len(lc.declared),
                    "covered": keys(lc.covered),
                    "missing": keys(lc.missing),
                    "undeclared_moves": keys(lc.undeclared),
                }
                for lc in self.lifecycles
            },
        }


def coverage(
    fired: Exploration | Iterable[TransitionKey], lifecycles: Mapping[str, Lifecycle] = LIFECYCLES
) -> Coverage:
    """Which declared transitions of ``lifecycles`` the moves ``fired`` (an
    :class:`Exploration`'s, or any keys) reach."""
    seen = fired.fired if isinstance(fired, Exploration) else frozenset(fired)
    out = []
    for name, declared in declared_transitions(lifecycles).items():
        covered = tuple(t for t in declared if t in seen)
        missing = tuple(t for t in declared if t not in seen)
        undeclared = tuple(sorted(t for t in seen if t.lifecycle == name and t not in declared))
        out.append(LifecycleCoverage(name, declared, covered, missing, undeclared))
    return Coverage(tuple(out))


# --- invariants --------------------------------------------------------------------------

Check = Callable[[BatchState | None, Step, Profile], Iterable[str]]
"""A check of one edge: the batch before, the step decided on it, the profile; it returns
problems as ``"<name>: <detail>"``."""

_DECLARED: frozenset[TransitionKey] = frozenset(
    key for keys in declared_transitions().values() for key in keys
)


def _statuses(state: BatchState | None) -> dict[tuple[str, str], str]:
    if state is None:
        return {}
    out = {("batch", state.batch_id): state.status.value}
    run = state.active_run
    if run is not None:
        out[("run", run.run_id)] = run.status.value
        out.update({("phase", p.name): p.status.value for p in run.phases})
    return out


def completion_topics(profile: Profile, state: BatchState, run: Run) -> tuple[str, ...]:
    """The topics of the events the profile's outbound emits when ``run`` of ``state`` ends,
    one per event (asked of the outbound as the engine asks it)."""
    summary = RunSummary(run, 0, 0, 0.0, run.completed_at or state.updated_at)
    return tuple(o.topic for o in profile.outbound.completed(state, summary))


def engine_invariants(before: BatchState | None, step: Step, profile: Profile) -> list[str]:
    """What must hold of every decision, whatever the input (``<name>: <detail>``):

    * ``undeclared_move``: every move is a transition the lifecycles declare;
    * ``move_source``: each move starts where the entity is (after the moves before it in
      the same decision), and ``final_status``: the state ends where the moves lead;
    * ``processing_without_run``: the batch is processing exactly when it has an active run;
    * ``run_without_active_phase``: an active run always waits for a dispatched phase;
    * ``version``: a change bumps the version by one; no change returns the same state;
    * ``refusal_moved``: a denial or an ignored input makes no move;
    * ``completions``: one completion event per run that ends, none otherwise;
    * ``commands``: no phase command without a dispatch move;
    * ``dispatch_without_items``: a phase is dispatched only with items (the phase
      lifecycle's ``has_inputs`` guard).
    """
    decision = step.decision
    if decision is None:
        return []
    problems: list[str] = []
    moves = decision.moves
    if (decision.denial is not None or decision.ignored is not None) and moves:
        problems.append(f"refusal_moved: {step.verdict} made {len(moves)} moves")
    after = decision.state
    if not moves:
        if after is not before:
            problems.append("version: a decision without moves returned another state")
        return problems
    current = _statuses(before)
    for move in moves:
        key = TransitionKey.of(move)
        if key not in _DECLARED:
            problems.append(f"undeclared_move: {key}")
        entity: tuple[str, str] = (move.entity, move.name)
        expected = current.get(entity, ABSENT)
        if move.entity == "phase" and move.trigger == "plan":
            expected = move.source  # planned phases come into being with their run
        if move.source != expected:
            problems.append(f"move_source: {key} of {move.name} logged from {move.source!r}, is {expected!r}")
        current[entity] = move.dest
    if after is None:
        problems.append("version: a decision with moves has no state")
        return problems
    for entity, status in _statuses(after).items():
        if entity in current and current[entity] != status:
            problems.append(f"final_status: {entity[0]} {entity[1]} is {status}, moved to {current[entity]}")
    if after.version != (0 if before is None else before.version) + 1:
        problems.append(f"version: {None if before is None else before.version} -> {after.version}")
    run = after.active_run
    if (after.status.value == "processing_pipelines") != (run is not None):
        problems.append(f"processing_without_run: {after.status.value} with active run {run is not None}")
    if run is not None and not any(p.is_active for p in run.phases):
        problems.append(f"run_without_active_phase: {dict(run.phase_statuses)}")
    ended = sum(1 for m in moves if m.entity == "run" and m.source != ABSENT and m.dest != "active")
    archived = decision.archived[-1] if decision.archived else None
    per_run = () if archived is None else completion_topics(profile, after, archived)
    completions = sum(1 for e in decision.emits if e.topic in per_run)
    if completions != ended * len(per_run):
        problems.append(f"completions: {completions} completion events for {ended} runs ended")
    command_topics = {spec.topic for spec in profile.phase_commands.values()}
    commands = sum(1 for e in decision.emits if e.topic in command_topics)
    sent = PhaseStatus.DISPATCH_INITIATED.value
    dispatches = [m for m in moves if m.entity == "phase" and m.trigger == "dispatch" and m.dest == sent]
    if commands > len(dispatches):
        problems.append(f"commands: {commands} phase commands for {len(dispatches)} dispatch moves")
    phases = {} if run is None else {p.name: p for p in run.phases}
    if run is None and archived is not None:
        phases = {p.name: p for p in archived.phases}
    for move in dispatches:
        phase = phases.get(move.name)
        if phase is not None and not phase.inputs:
            problems.append(f"dispatch_without_items: {move.name} dispatched with no items")
    return problems


@attrs.frozen
class Violation:
    """A problem a check found on an edge; ``path`` ends with the step it was found on."""

    name: str
    detail: str
    path: Path


# --- exploring ---------------------------------------------------------------------------


@attrs.frozen
class _Context:
    profile: Profile
    intake_profile: Profile | None
    batch_id: str


def _successors(ctx: _Context, path: Path, crashes: list[Crash] | None) -> Iterator[Step]:
    """Decide every input of the alphabet on the end of ``path``."""
    state = path.state
    depth = len(path)
    for item in inputs_for(
        state, path.now, ctx.profile, intake_profile=ctx.intake_profile, batch_id=ctx.batch_id
    ):
        event_id = _id("event", depth, item.label)
        correlation_id = item.correlation_id or _id("correlation", depth, item.label)
        command = Command(item.payload, event_id, correlation_id)
        profile = item.profile or ctx.profile
        try:
            decision = decide(state, command, profile=profile, now=item.now)
        except PipelineStateError as exc:
            yield Step(
                item.label,
                command,
                item.topic,
                item.now,
                None,
                state,
                type(exc).__name__,
                str(exc),
                item.profile,
            )
            continue
        except Exception as exc:  # an engine bug: reported, never extended
            if crashes is not None:
                crashes.append(Crash(path, item, f"{type(exc).__name__}: {exc}"))
            continue
        yield Step(item.label, command, item.topic, item.now, decision, decision.state, profile=item.profile)


@attrs.frozen
class Exploration:
    """What :func:`explore` found: the shortest path to every abstract state, to every move
    fired and to every verdict; the number of edges decided; the crashes; and whether the
    search was cut by ``max_depth`` or ``max_states`` (``complete`` is then ``False``)."""

    profile: Profile
    states: Mapping[StateKey, Path]
    transitions: Mapping[TransitionKey, Path]
    verdicts: Mapping[str, Path]
    edges: int
    crashes: tuple[Crash, ...]
    complete: bool
    violations: Mapping[str, Violation] = attrs.field(factory=dict)
    """The first (shortest) edge on which each kind of problem was found."""

    def paths(self) -> list[Path]:
        """Every shortest path (states, then moves, then verdicts), each once."""
        seen: set[int] = set()
        out: list[Path] = []
        for group in (self.states.values(), self.transitions.values(), self.verdicts.values()):
            for path in group:
                if id(path) not in seen:
                    seen.add(id(path))
                    out.append(path)
        return out

    def maximal_paths(self) -> list[Path]:
        """The shortest paths that are no other's prefix (see :func:`maximal_paths`)."""
        return maximal_paths(self.paths())

    @property
    def fired(self) -> frozenset[TransitionKey]:
        return frozenset(self.transitions)


def explore(
    profile: Profile | None = None,
    *,
    intake_profile: Profile | None = None,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_states: int = DEFAULT_MAX_STATES,
    batch_id: str = BATCH_ID,
    check: Check | None = engine_invariants,
) -> Exploration:
    """Breadth-first search of the engine from an unregistered batch (see the module).

    ``profile`` defaults to :func:`exploration_profile` and ``intake_profile`` (the
    profile a legacy registration is decided under) to the default profile when
    ``profile`` is defaulted too; pass ``intake_profile=None`` with your own ``profile`` to
    leave legacy batches out. ``check`` is run on every edge (default
    :func:`engine_invariants`); ``Exploration.violations`` keeps the first path per problem.
    """
    if profile is None:
        profile = exploration_profile()
        if intake_profile is None:
            intake_profile = default_profile()
    ctx = _Context(profile, intake_profile, batch_id)
    root = Path(profile)
    states: dict[StateKey, Path] = {root.key: root}
    transitions: dict[TransitionKey, Path] = {}
    verdicts: dict[str, Path] = {}
    crashes: list[Crash] = []
    violations: dict[str, Violation] = {}
    queue = deque([root])
    edges = 0
    complete = True
    while queue:
        path = queue.popleft()
        if len(path) >= max_depth:
            complete = False
            continue
        for step in _successors(ctx, path, crashes):
            edges += 1
            child = path.then(step)
            for fired in step.transitions:
                transitions.setdefault(fired, child)
            verdicts.setdefault(step.verdict, child)
            if check is not None:
                for problem in check(path.state, step, step.profile or profile):
                    name, _, detail = problem.partition(": ")
                    if name not in violations:
                        violations[name] = Violation(name, detail, child)
            key = child.key
            if key in states:
                continue
            if len(states) >= max_states:
                complete = False
                continue
            states[key] = child
            queue.append(child)
    return Exploration(profile, states, transitions, verdicts, edges, tuple(crashes), complete, violations)


def simple_paths(
    profile: Profile | None = None,
    *,
    intake_profile: Profile | None = None,
    max_depth: int = 8,
    max_paths: int = 500,
    batch_id: str = BATCH_ID,
) -> Iterator[Path]:
    """Paths from an unregistered batch that never revisit an abstract state (depth first,
    in alphabet order), each path once its last step is made: at most ``max_paths`` paths
    of at most ``max_depth`` steps. Profiles default as for :func:`explore`."""
    if profile is None:
        profile = exploration_profile()
        if intake_profile is None:
            intake_profile = default_profile()
    ctx = _Context(profile, intake_profile, batch_id)
    count = 0
    root = Path(profile)
    stack: list[tuple[Path, frozenset[StateKey]]] = [(root, frozenset({root.key}))]
    while stack:
        path, seen = stack.pop()
        if len(path) >= max_depth:
            continue
        children: list[tuple[Path, frozenset[StateKey]]] = []
        for step in _successors(ctx, path, None):
            child = path.then(step)
            key = child.key
            if key in seen:
                continue
            yield child
            count += 1
            if count >= max_paths:
                return
            children.append((child, seen | {key}))
        stack.extend(reversed(children))


# --- the command line --------------------------------------------------------------------


def print_coverage(
    result: Coverage,
    out: TextIO,
    *,
    as_json: bool = False,
    exploration: Exploration | None = None,
    show_paths: bool = False,
) -> int:
    """Print ``result`` (text or JSON) to ``out``, with what ``exploration`` found (states,
    edges, crashes, broken invariants) and, with ``show_paths``, the shortest path of each
    declared transition. Returns the exit code of ``pipeline-state paths``: 1 when a
    declared transition is unreachable, ``decide`` crashed or an invariant broke, else 0."""
    crashes = () if exploration is None else exploration.crashes
    violations = [] if exploration is None else list(exploration.violations.values())
    code = 0 if result.complete and not crashes and not violations else 1
    if as_json:
        data = result.as_json()
        if exploration is not None:
            data["states"] = len(exploration.states)
            data["edges"] = exploration.edges
            data["search_complete"] = exploration.complete
            data["crashes"] = [
                {"path": list(c.path.labels), "input": c.input.label, "error": c.error} for c in crashes
            ]
            data["violations"] = [
                {"name": v.name, "detail": v.detail, "path": list(v.path.labels)} for v in violations
            ]
            if show_paths:
                data["paths"] = {
                    str(key): list(path.labels)
                    for key, path in sorted(exploration.transitions.items())
                    if key in _declared_in(result)
                }
        out.write(json.dumps(data, indent=2) + "\n")
        return code
    if exploration is not None:
        cut = "" if exploration.complete else " (cut by the bounds)"
        out.write(f"{len(exploration.states)} abstract states, {exploration.edges} inputs decided{cut}\n")
    for lc in result.lifecycles:
        out.write(f"{lc.lifecycle}: {len(lc.covered)}/{len(lc.declared)} declared transitions reached\n")
        for key in lc.declared:
            mark = "ok " if key in lc.covered else "UNREACHED"
            out.write(f"  {mark:9} {key.trigger} {key.source or '(absent)'} -> {key.dest}\n")
            if show_paths and exploration is not None and key in exploration.transitions:
                for line in exploration.transitions[key].describe().splitlines():
                    out.write(f"              {line}\n")
        for key in lc.undeclared:
            out.write(f"  undeclared move {key.trigger} {key.source or '(absent)'} -> {key.dest}\n")
    for crash in crashes:
        after = " > ".join(crash.path.labels) or "(start)"
        out.write(f"CRASH after {after} on {crash.input.label}: {crash.error}\n")
    for violation in violations:
        out.write(f"invariant {violation.name}: {violation.detail}\n{violation.path.describe()}\n")
    if result.missing:
        names = "; ".join(str(key) for key in result.missing)
        out.write(f"{len(result.missing)} declared transition(s) unreachable: {names}\n")
    return code


def _declared_in(result: Coverage) -> frozenset[TransitionKey]:
    return frozenset(key for lc in result.lifecycles for key in lc.declared)


def paths_command(
    out: TextIO,
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_states: int = DEFAULT_MAX_STATES,
    as_json: bool = False,
    show_paths: bool = False,
    lifecycles: Mapping[str, Lifecycle] = LIFECYCLES,
    exploration: Exploration | None = None,
    profile: Profile | None = None,
) -> int:
    """``pipeline-state paths``: explore (unless ``exploration`` is given) the default
    exploration or ``profile`` as it is (``pipeline-state paths --profile SPEC``: no legacy
    intake), up to ``max_depth`` inputs and ``max_states`` abstract states, then print the
    transition coverage of ``lifecycles`` (see :func:`print_coverage`); returns the exit code."""
    if exploration is None:
        if profile is None:
            exploration = explore(max_depth=max_depth, max_states=max_states)
        else:
            exploration = explore(profile, intake_profile=None, max_depth=max_depth, max_states=max_states)
    result = coverage(exploration, lifecycles)
    return print_coverage(result, out, as_json=as_json, exploration=exploration, show_paths=show_paths)


# --- replaying ---------------------------------------------------------------------------


@attrs.frozen
class Replayed:
    """One step of a path as a service handled it: its result, or the error it raised."""

    step: Step
    result: HandleResult | None
    error: PipelineStateError | None


async def replay(path: Path, service: PipelineService, clock: ManualClock) -> list[Replayed]:
    """Drive ``path`` through ``service`` (whose clock is ``clock``): each step at its
    ``now``, as an input decided at once (never kept waiting), under the step's profile.
    The service's profile is set for each step and restored at the end."""
    out: list[Replayed] = []
    original = service.profile
    try:
        for step in path.steps:
            clock.set(step.now)
            service.profile = step.profile or path.profile
            try:
                result = await service.handle(step.command, topic=step.topic)
            except PipelineStateError as exc:
                out.append(Replayed(step, None, exc))
                continue
            out.append(Replayed(step, result, None))
    finally:
        service.profile = original
    return out
