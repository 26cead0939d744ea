"""Which inbound facts are *early*: they cannot apply yet, but will once their batch moves on.

Kafka orders records within a partition, never across topics, so a batch's facts can arrive
before the facts they follow: provisioning before registration, items-ready before the
associations, a phase outcome before the phase was dispatched. Such a fact is not wrong, it
is early; :class:`~pipeline_state._service.PipelineService` keeps it in the store's waiting
set and re-attempts it each time its batch changes.

What is early is read from the lifecycle definitions, not from a list of statuses: a fact
that fires trigger ``t`` is early when the current state is not among ``t``'s source states
but one of them is *reachable* from it in :data:`~pipeline_state._lifecycle.BATCH_LIFECYCLE`
(or :data:`~pipeline_state._lifecycle.PHASE_LIFECYCLE` for a phase outcome). A fact whose
source states are no longer reachable is late (a duplicate, or out of place) and goes to
:func:`~pipeline_state._decide.decide`, which ignores it with a reason.

:func:`waits_for` is pure; it names what a fact waits for:

* ``batch_registration``: any fact but a registration, for a batch not registered yet;
* ``batch_state:<status>``: a readiness fact (provisioning, associations, items ready, a
  critical validation error) for a batch in an earlier state, or a pipeline request for a
  batch whose readiness facts wait (or that was itself waiting for the registration); the
  status as the profile names it (:attr:`~pipeline_state._profile.Profile.state_names`);
* ``run_start``: an outcome for a batch with no active run that can still start one (its
  correlation id belongs to no archived run: the request that starts the run is itself
  waiting, or was fetched later);
* ``phase_dispatch:<phase>``: an outcome for a phase of the active run not dispatched yet.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable

from ._commands import Command
from ._decide.intake import PROVISION_TRIGGERS, provision_trigger
from ._decide.progress import OUTCOME_TRIGGERS
from ._inputs import (
    ContentReady,
    EngineInput,
    GroupConfirmed,
    ItemsReady,
    PhaseOutcome,
    RequestPipeline,
    ValidationFailed,
)
from ._lifecycle import BATCH_LIFECYCLE, ITEMS_READY, PHASE_LIFECYCLE, BatchStatus, Lifecycle
from ._model import BatchState
from ._profile import Profile
from ._wire import WireModel

__all__ = ["REGISTRATION", "RUN_START", "waits_for"]

REGISTRATION = "batch_registration"
"""What a fact for a batch that is not registered yet waits for."""

_STATE = "batch_state:"
RUN_START = "run_start"
"""What an outcome for a batch without an active run waits for."""
_PHASE = "phase_dispatch:"

# The batch triggers an inbound fact fires (provisioning depends on the batch: see _trigger).
_BATCH_TRIGGERS: dict[type, str] = {
    GroupConfirmed: "confirm_associations",
    ItemsReady: ITEMS_READY,
    ValidationFailed: "fail_critically",
}
_WAITING_FACTS = (ContentReady, GroupConfirmed, ItemsReady, ValidationFailed, PhaseOutcome, RequestPipeline)


def _reachable(lifecycle: Lifecycle, start: str, excluded: Collection[str] = ()) -> set[str]:
    """States reachable from ``start`` in one or more moves, not firing ``excluded``."""
    seen: set[str] = set()
    queue = deque([start])
    while queue:
        current = queue.popleft()
        for move in lifecycle.moves_from(current):
            if move.trigger not in excluded and move.dest not in seen:
                seen.add(move.dest)
                queue.append(move.dest)
    return seen


def _sources(lifecycle: Lifecycle, trigger: str) -> tuple[str, ...]:
    return tuple(s for t in lifecycle.transitions if t.trigger == trigger for s in t.sources)


class _Early:
    """:meth:`early` for one lifecycle, remembered: the answer depends only on the
    lifecycle, which is immutable, and there are few (state, trigger, excluded) triples."""

    def __init__(self, lifecycle: Lifecycle) -> None:
        self.lifecycle = lifecycle
        self._known: dict[tuple[str, str, tuple[str, ...]], str | None] = {}

    def early(self, state: str, trigger: str, excluded: tuple[str, ...] = ()) -> str | None:
        """The first source state of ``trigger`` (declaration order) that ``state`` can still
        reach when ``state`` is not one of them; ``None`` when the trigger applies now or never."""
        key = (state, trigger, excluded)
        try:
            return self._known[key]
        except KeyError:
            pass
        sources = _sources(self.lifecycle, trigger)
        source = None
        if state not in sources:
            ahead = _reachable(self.lifecycle, state, excluded)
            source = next((s for s in sources if s in ahead), None)
        self._known[key] = source
        return source


_BATCH = _Early(BATCH_LIFECYCLE)
_PHASE_OF_RUN = _Early(PHASE_LIFECYCLE)

_EXCLUDED = {path: tuple(t for t in PROVISION_TRIGGERS if t != path) for path in PROVISION_TRIGGERS}


def _excluded(state: BatchState, profile: Profile) -> tuple[str, ...]:
    """The provisioning trigger this batch can never fire: the readiness path it does not
    take (see :func:`~pipeline_state._decide.intake.provision_trigger`)."""
    return _EXCLUDED[provision_trigger(state, profile)]


def _trigger(state: BatchState, payload: EngineInput, profile: Profile) -> str | None:
    if isinstance(payload, ContentReady):
        return provision_trigger(state, profile)
    if isinstance(payload, ValidationFailed) and not payload.critical:
        return None  # ignored whatever the state
    return _BATCH_TRIGGERS.get(type(payload))


def _readiness_waits(waiting: Iterable[str]) -> bool:
    return any(w == REGISTRATION or w.startswith(_STATE) for w in waiting)


def waits_for(
    state: BatchState | None,
    command: Command,
    profile: Profile,
    *,
    waiting: Iterable[str] = (),
    deferred: bool = False,
) -> str | None:
    """What ``command`` waits for on ``state``, or ``None`` when it is not early (it
    applies now, or :func:`~pipeline_state._decide.decide` ignores, denies or rejects it).

    ``waiting`` is what the batch's *other* waiting facts wait for (only a pipeline request
    reads it: it waits with the batch's waiting readiness facts); ``deferred`` is true when
    ``command`` itself is a waiting fact being re-attempted (a request that arrived before
    its batch was registered keeps waiting while the batch is not ready yet). Registrations
    and operator commands never wait; nor does an outcome naming a phase the profile does
    not know, or one whose correlation id belongs to an earlier run of the batch.
    """
    payload = command.payload
    if not isinstance(payload, _WAITING_FACTS):
        if not isinstance(payload, WireModel):
            return None
        try:  # a payload of the profile's inbound wire, read as its engine input
            payload = profile.inbound.decode(payload)
        except TypeError:
            return None
        if not isinstance(payload, _WAITING_FACTS):
            return None
    if state is None:
        if isinstance(payload, PhaseOutcome) and not profile.is_phase(payload.phase):
            return None
        return REGISTRATION
    if isinstance(payload, RequestPipeline):
        return _request_waits(state, profile, waiting, deferred)
    if isinstance(payload, PhaseOutcome):
        return _outcome_waits(state, payload, profile)
    trigger = _trigger(state, payload, profile)
    if trigger is None:
        return None
    source = _BATCH.early(state.status.value, trigger, _excluded(state, profile))
    return None if source is None else _STATE + profile.state_names.show(source)


def _request_waits(state: BatchState, profile: Profile, waiting: Iterable[str], deferred: bool) -> str | None:
    """A request waits while the batch can still become ready without a run of its own
    (no active run: that is a denial, ``pipeline_already_active``) and either its
    readiness facts wait or the request itself arrived before the batch existed."""
    if state.active_run is not None:
        return None
    ready = _BATCH.early(state.status.value, "start_run", _excluded(state, profile))
    if ready is None or state.status is BatchStatus.PROCESSING_PIPELINES:
        return None
    if deferred or _readiness_waits(waiting):
        return _STATE + profile.state_names.show(ready)
    return None


def _outcome_waits(state: BatchState, payload: PhaseOutcome, profile: Profile) -> str | None:
    if not profile.is_phase(payload.phase):
        return None
    run = state.active_run
    correlation = payload.correlation_id
    if run is None:
        # No run yet: early while the batch can still start one (ready, or on its way),
        # unless the outcome belongs to an archived run.
        if state.status is BatchStatus.PROCESSING_PIPELINES or _stale(state, correlation):
            return None
        can_start = state.status is BatchStatus.READY_FOR_PIPELINE_EXECUTION or (
            _BATCH.early(state.status.value, "start_run", _excluded(state, profile)) is not None
        )
        return RUN_START if can_start else None
    phase = run.phase(payload.phase)
    if phase is None:
        return None
    trigger = OUTCOME_TRIGGERS.get(payload.status)
    if trigger is None or _PHASE_OF_RUN.early(phase.status.value, trigger) is None:
        return None
    if correlation != run.correlation_id and _stale(state, correlation, run.run_id):
        return None  # an earlier run's outcome: stale, never early
    return _PHASE + payload.phase


def _stale(state: BatchState, correlation: str, active_run_id: str | None = None) -> bool:
    """Whether ``correlation`` belongs to an archived run of the batch, or to a run other
    than ``active_run_id`` that an outcome carrying it answered (a scan of the ids its
    summary lists, only asked when the answer matters; a store that keeps only their count
    has them read before such an input is decided: :func:`~pipeline_state._decide.asks_archived_ids`)."""
    return state.past.is_archived(correlation, active_run_id)
