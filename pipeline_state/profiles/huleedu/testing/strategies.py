"""Hypothesis strategies for the HuleEdu profile's wire payloads, catalogs and batch states.

Three families:

* **Payloads and envelopes.** ``registration_data``, ``provisioning_data``, ...,
  ``outcome_data`` draw valid ``data`` dicts for each inbound topic; :func:`envelopes` wraps
  one in a valid :class:`~pipeline_state._wire.EventEnvelope` dict; :func:`inbound_messages`
  draws a ``(topic, envelope)`` pair for any inbound topic.
* **Catalogs and profiles.** :func:`catalog_data` draws the dict format of a random valid
  catalog (a DAG of phases, pipelines closed under ``depends_on``, optional deadlines);
  :func:`catalogs` builds it; :class:`ProfileSpec` pairs catalog data with a dispatch policy
  and builds the :class:`~pipeline_state._profile.Profile` (:func:`profile_specs`).
* **Reachable states.** :func:`engine_traces` folds random commands through
  :func:`~pipeline_state._decide.decide` from an empty store, so every state it yields is one
  the engine can reach; :func:`batch_states` keeps the last state, :func:`commands_for`
  draws a plausible next command for a state (applied, ignored, denied or bad).

Ids are drawn from Hypothesis (never ``uuid4``), so examples replay and shrink.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
from hypothesis import strategies as st

from pipeline_state._catalog import Catalog
from pipeline_state._commands import (
    ArchiveBatch,
    CancelBatch,
    CancelRun,
    Command,
    ExpireOverdue,
    Payload,
    RetryPhase,
)
from pipeline_state._decide import Decision, decide
from pipeline_state._guards import PromptGuard
from pipeline_state._lifecycle import BatchStatus
from pipeline_state._model import BatchState
from pipeline_state._profile import CommandSpec, Profile
from pipeline_state._wire import WireModel
from pipeline_state.errors import PipelineStateError
from pipeline_state.profiles.huleedu.events import (
    BatchContentProvisioningCompletedV1,
    BatchEssaysReady,
    BatchRegistrationRequestV1,
    BatchValidationErrorsV1,
    ClientBatchPipelineRequestV1,
    ELSBatchPhaseOutcomeV1,
    PhaseInitiateCommand,
    StudentAssociationsConfirmedV1,
    StudentMatchingInitiateCommandV1,
    Topic,
)
from pipeline_state.profiles.huleedu.profile import (
    HULEEDU_FAN_IN,
    HULEEDU_PHASE_COMMANDS,
    HULEEDU_STATE_NAMES,
    PROMPT_PHASES,
)

__all__ = [
    "HULEEDU_DEADLINE_CATALOG",
    "OUTCOME_KINDS",
    "PHASE_POOL",
    "EngineTrace",
    "ProfileSpec",
    "TraceStep",
    "associations_data",
    "batch_states",
    "catalog_data",
    "catalogs",
    "commands_for",
    "engine_traces",
    "envelopes",
    "essay_refs_data",
    "essays_ready_data",
    "identifiers",
    "inbound_messages",
    "outcome_data",
    "pipeline_request_data",
    "profile_for",
    "profile_specs",
    "provisioning_data",
    "registration_data",
    "validation_errors_data",
]

Data = dict[str, Any]
Message = tuple[str, Data]

PHASE_POOL: tuple[str, ...] = (
    "spellcheck",
    "nlp",
    "cj_assessment",
    "ai_feedback",
    "grammar",
    "summary",
    "readability",
)
"""Phase names random catalogs draw from (HuleEdu's four, so the prompt guard bites, and
three more that need no prompt)."""

OUTCOME_KINDS: tuple[str, ...] = ("completed_successfully", "completed_with_failures", "failed_critically")

HULEEDU_DEADLINE_CATALOG: Mapping[str, Any] = {
    "pipelines": {
        "cj_assessment": {
            "steps": [
                {"name": "spellcheck", "deadline_seconds": 20},
                {"name": "cj_assessment", "depends_on": ["spellcheck"], "deadline_seconds": 30},
            ]
        },
        "nlp": {
            "steps": [
                {"name": "spellcheck", "deadline_seconds": 20},
                {"name": "nlp", "depends_on": ["spellcheck"], "deadline_seconds": 45},
            ]
        },
        "ai_feedback": {
            "steps": [
                {"name": "spellcheck", "deadline_seconds": 20},
                {"name": "nlp", "depends_on": ["spellcheck"], "deadline_seconds": 45},
                {"name": "ai_feedback", "depends_on": ["spellcheck", "nlp"]},
            ]
        },
        "comprehensive": {
            "steps": [
                {"name": "spellcheck", "deadline_seconds": 20},
                {"name": "cj_assessment", "depends_on": ["spellcheck"], "deadline_seconds": 30},
                {"name": "nlp", "depends_on": ["spellcheck"], "deadline_seconds": 45},
                {"name": "ai_feedback", "depends_on": ["spellcheck", "nlp"]},
            ]
        },
    }
}
"""The HuleEdu pipelines with phase deadlines (whole seconds), for deadline tests."""

_EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
_ID_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-_"
_TEXT = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")
"""Characters valid in free text: anything but NUL and (lone) surrogates."""


def identifiers(prefix: str = "", max_size: int = 10) -> st.SearchStrategy[str]:
    """Short non-empty ids made of lowercase letters, digits, ``-`` and ``_``."""
    return st.text(_ID_CHARS, min_size=1, max_size=max_size).map(lambda s: prefix + s)


def _uuid_strings() -> st.SearchStrategy[str]:
    return st.uuids().map(str)


# --- payloads --------------------------------------------------------------------------


def essay_refs_data(essay_ids: Sequence[str], suffix: str = "text") -> list[Data]:
    """``[{essay_id, text_storage_id}]`` with storage ids ``<essay>-<suffix>``."""
    return [{"essay_id": e, "text_storage_id": f"{e}-{suffix}"} for e in essay_ids]


@st.composite
def registration_data(
    draw: st.DrawFn,
    batch_id: str | None = None,
    *,
    guest: bool | None = None,
    max_essays: int = 5,
) -> Data:
    """A valid ``BatchRegistrationRequestV1`` dict; ``guest`` forces (no) ``class_id``."""
    bid = batch_id if batch_id is not None else draw(identifiers("batch-"))
    count = draw(st.integers(1, max_essays))
    with_ids = draw(st.booleans())
    is_guest = draw(st.booleans()) if guest is None else guest
    return {
        "batch_id": bid,
        "expected_essay_count": count,
        "essay_ids": [f"{bid}-e{i}" for i in range(count)] if with_ids else None,
        "user_id": draw(identifiers("teacher-")),
        "org_id": draw(st.none() | identifiers("org-")),
        "class_id": None if is_guest else draw(identifiers("class-")),
        "course_code": draw(st.sampled_from(["ENG5", "ENG6", "SV1", "SV2"])),
        "language": draw(st.none() | st.sampled_from(["en", "sv"])),
        "student_prompt_ref": draw(st.none() | identifiers("prompt-")),
    }


@st.composite
def provisioning_data(draw: st.DrawFn, batch_id: str, essay_ids: Sequence[str]) -> Data:
    """Content provisioned for a non-empty subset of ``essay_ids`` (in their order)."""
    chosen = draw(_subsequences(essay_ids, min_size=1))
    return {
        "batch_id": batch_id,
        "provisioned_count": len(chosen),
        "expected_count": len(essay_ids),
        "essays_for_processing": essay_refs_data(chosen),
    }


def associations_data(batch_id: str, class_id: str, essay_ids: Sequence[str]) -> st.SearchStrategy[Data]:
    """Student associations confirmed for ``essay_ids`` (some may lack a student)."""
    return st.fixed_dictionaries(
        {
            "batch_id": st.just(batch_id),
            "class_id": st.just(class_id),
            "associations": st.tuples(
                *(
                    st.fixed_dictionaries(
                        {"essay_id": st.just(e), "student_id": st.none() | identifiers("student-")}
                    )
                    for e in essay_ids
                )
            ).map(list),
            "timeout_triggered": st.booleans(),
        }
    )


@st.composite
def essays_ready_data(draw: st.DrawFn, batch_id: str, essay_ids: Sequence[str]) -> Data:
    """Essays ready for a non-empty subset of ``essay_ids``."""
    chosen = draw(_subsequences(essay_ids, min_size=1))
    return {"batch_id": batch_id, "ready_essays": essay_refs_data(chosen)}


def validation_errors_data(batch_id: str, critical: bool | None = None) -> st.SearchStrategy[Data]:
    """A ``BatchValidationErrorsV1`` dict; ``critical`` forces ``critical_failure``."""
    return st.fixed_dictionaries(
        {
            "batch_id": st.just(batch_id),
            "error_summary": st.fixed_dictionaries(
                {
                    "total_errors": st.integers(0, 5),
                    "critical_failure": st.booleans() if critical is None else st.just(critical),
                }
            ),
        }
    )


@st.composite
def pipeline_request_data(
    draw: st.DrawFn,
    batch_id: str,
    pipelines: Sequence[str] = ("cj_assessment", "nlp", "ai_feedback", "comprehensive"),
    *,
    prompt: bool | None = None,
    correlation_id: str | None = None,
) -> Data:
    """A ``ClientBatchPipelineRequestV1`` dict for one of ``pipelines``; ``prompt`` forces
    whether it carries a ``prompt_payload``."""
    with_prompt = draw(st.booleans()) if prompt is None else prompt
    retry = draw(st.booleans())
    return {
        "batch_id": batch_id,
        "requested_pipeline": draw(st.sampled_from(list(pipelines))),
        "client_correlation_id": correlation_id or draw(_uuid_strings()),
        "user_id": draw(identifiers("teacher-")),
        "is_retry": retry,
        "retry_reason": draw(st.none() | st.text(_TEXT, max_size=20)) if retry else None,
        "prompt_payload": {"prompt_ref": draw(identifiers("prompt-"))} if with_prompt else None,
    }


@st.composite
def outcome_data(
    draw: st.DrawFn,
    batch_id: str,
    phase: str,
    correlation_id: str,
    essay_ids: Sequence[str],
    *,
    kind: str | None = None,
    suffix: str | None = None,
) -> Data:
    """An ``ELSBatchPhaseOutcomeV1`` dict over the essays a phase was given.

    ``completed_successfully``: every essay processed; ``completed_with_failures``: a
    non-empty subset processed (all of them when there is only one), the rest failed;
    ``failed_critically``: nothing processed, every essay failed.
    """
    status = kind if kind is not None else draw(st.sampled_from(OUTCOME_KINDS))
    if status == "completed_successfully":
        processed: list[str] = list(essay_ids)
    elif status == "completed_with_failures":
        processed = draw(_subsequences(essay_ids, min_size=min(1, len(essay_ids))))
    else:
        processed = []
    failed = [e for e in essay_ids if e not in processed]
    return {
        "batch_id": batch_id,
        "phase_name": phase,
        "phase_status": status,
        "processed_essays": essay_refs_data(processed, suffix or phase),
        "failed_essay_ids": failed,
        "correlation_id": correlation_id,
    }


@st.composite
def envelopes(
    draw: st.DrawFn,
    topic: str,
    data: st.SearchStrategy[Data] | Data,
    *,
    event_id: str | None = None,
    correlation_id: str | None = None,
) -> Message:
    """``(topic, envelope dict)`` with a drawn event id, correlation id and timestamp."""
    payload = draw(data) if isinstance(data, st.SearchStrategy) else data
    stamp = _EPOCH + timedelta(seconds=draw(st.integers(0, 10**6)))
    return topic, {
        "event_id": event_id or draw(_uuid_strings()),
        "event_type": topic,
        "event_timestamp": stamp.isoformat(),
        "source_service": draw(st.sampled_from(["els", "bcs", "api_gateway", "class_management"])),
        "schema_version": 1,
        "correlation_id": correlation_id or draw(_uuid_strings()),
        "data": payload,
        "metadata": draw(st.none() | st.just({"trace": "x"})),
    }


@st.composite
def inbound_messages(draw: st.DrawFn) -> Message:
    """A valid ``(topic, envelope)`` for any inbound topic of the HuleEdu profile."""
    batch_id = draw(identifiers("batch-"))
    essays = [f"{batch_id}-e{i}" for i in range(draw(st.integers(1, 4)))]
    corr = draw(_uuid_strings())
    options: list[tuple[str, st.SearchStrategy[Data]]] = [
        (Topic.BATCH_REGISTER.value, registration_data(batch_id)),
        (Topic.CONTENT_PROVISIONED.value, provisioning_data(batch_id, essays)),
        (Topic.ASSOCIATIONS_CONFIRMED.value, associations_data(batch_id, "class-1", essays)),
        (Topic.ESSAYS_READY.value, essays_ready_data(batch_id, essays)),
        (Topic.VALIDATION_ERRORS.value, validation_errors_data(batch_id)),
        (Topic.PIPELINE_REQUEST.value, pipeline_request_data(batch_id)),
        (
            Topic.PHASE_OUTCOME.value,
            outcome_data(batch_id, draw(st.sampled_from(PHASE_POOL[:4])), corr, essays),
        ),
    ]
    topic, data = draw(st.sampled_from(options))
    return draw(envelopes(topic, data, correlation_id=corr))


def _subsequences(items: Sequence[str], *, min_size: int = 0) -> st.SearchStrategy[list[str]]:
    """Sub-lists of ``items`` keeping their order."""
    if not items:
        return st.just([])
    return (
        st.lists(st.booleans(), min_size=len(items), max_size=len(items))
        .map(lambda keep: [item for item, k in zip(items, keep, strict=True) if k])
        .filter(lambda chosen: len(chosen) >= min_size)
    )


# --- catalogs and profiles -------------------------------------------------------------


@st.composite
def catalog_data(
    draw: st.DrawFn, *, max_phases: int = 5, max_pipelines: int = 4, deadlines: bool = True
) -> Data:
    """The dict format of a random valid catalog.

    Phases form one DAG (a phase depends only on phases drawn before it, with the same
    dependencies in every pipeline); each pipeline is the dependency closure of one or two
    target phases, declared in a random order. With ``deadlines``, each phase may get a
    deadline of 5-60 whole seconds (the same in every pipeline).
    """
    count = draw(st.integers(1, min(max_phases, len(PHASE_POOL))))
    names = list(draw(st.permutations(PHASE_POOL)))[:count]
    depends: dict[str, list[str]] = {}
    for i, name in enumerate(names):
        earlier = names[:i]
        depends[name] = (
            draw(st.lists(st.sampled_from(earlier), unique=True, max_size=min(i, 3))) if earlier else []
        )
    deadline: dict[str, int | None] = {
        name: draw(st.none() | st.integers(5, 60)) if deadlines else None for name in names
    }
    pipelines: dict[str, Data] = {}
    for j in range(draw(st.integers(1, max_pipelines))):
        targets = draw(st.lists(st.sampled_from(names), min_size=1, max_size=2, unique=True))
        closure: set[str] = set()
        stack = list(targets)
        while stack:
            name = stack.pop()
            if name not in closure:
                closure.add(name)
                stack.extend(depends[name])
        declared = draw(st.permutations([n for n in names if n in closure]))
        steps: list[Data] = []
        for name in declared:
            step: Data = {"name": name}
            if depends[name]:
                step["depends_on"] = list(depends[name])
            if deadline[name] is not None:
                step["deadline_seconds"] = deadline[name]
            steps.append(step)
        pipelines[f"pipeline_{j}"] = {"steps": steps}
    return {"pipelines": pipelines}


def catalogs(**kwargs: Any) -> st.SearchStrategy[Catalog]:
    """Random valid :class:`~pipeline_state._catalog.Catalog` s (see :func:`catalog_data`)."""
    return catalog_data(**kwargs).map(Catalog.from_dict)


def profile_for(
    catalog: Catalog,
    *,
    max_parallel: int | None = None,
    max_resends: int = 0,
    strict_correlation: bool = False,
    topics: Mapping[str, str] | None = None,
) -> Profile:
    """A profile over ``catalog``: HuleEdu commands for HuleEdu phase names, a generic
    ``test.<phase>.initiate.command.v1`` command for the others, and the prompt guard.
    Deadlines are the catalog's only (no default deadline); fan-in merges as HuleEdu's does
    (:data:`~pipeline_state.profiles.huleedu.profile.HULEEDU_FAN_IN`: its commands carry one
    ref per item).

    ``topics`` (phase name: command topic) puts each phase's command on the topic given
    instead (the model stays: the HuleEdu one for a HuleEdu phase name,
    :class:`~pipeline_state.profiles.huleedu.events.PhaseInitiateCommand` otherwise). It must name every
    phase of the catalog and no other (``ValueError`` otherwise); the profile then checks
    the topics as any profile's (:class:`~pipeline_state.errors.DefinitionError` for two
    phases on one topic, or a topic the engine reads or writes itself)."""
    commands = {phase: _command_for(phase, topics) for phase in catalog.phases}
    if topics is not None:
        extra = [phase for phase in topics if phase not in commands]
        if extra:
            raise ValueError(f"topics names phases that are not in the catalog: {extra}")
    return Profile(
        name="generated",
        catalog=catalog,
        phase_commands=commands,
        group_matching=CommandSpec(Topic.STUDENT_MATCHING.value, StudentMatchingInitiateCommandV1),
        guards=(PromptGuard(PROMPT_PHASES),),
        max_parallel=max_parallel,
        source_service="batch_orchestrator_service",
        max_resends=max_resends,
        strict_correlation=strict_correlation,
        state_names=HULEEDU_STATE_NAMES,
        fan_in=HULEEDU_FAN_IN,
    )


def _command_for(phase: str, topics: Mapping[str, str] | None) -> CommandSpec:
    known = HULEEDU_PHASE_COMMANDS.get(phase)
    if topics is None:
        return known or CommandSpec(f"test.{phase}.initiate.command.v1", PhaseInitiateCommand)
    if phase not in topics:
        raise ValueError(f"topics names no topic for phase {phase!r}")
    return CommandSpec(topics[phase], known.model if known else PhaseInitiateCommand)


@attrs.frozen
class ProfileSpec:
    """Catalog data (dict format), a dispatch policy, how many times an overdue command is
    re-sent, the correlation rule and, optionally, the command topic of each phase
    (``topics``, see :func:`profile_for`): the input of both the engine's
    :class:`~pipeline_state._profile.Profile` and the reference model."""

    catalog: Mapping[str, Any]
    max_parallel: int | None = None
    max_resends: int = 0
    strict_correlation: bool = False
    topics: Mapping[str, str] | None = None

    def profile(self) -> Profile:
        return profile_for(
            Catalog.from_dict(self.catalog),
            max_parallel=self.max_parallel,
            max_resends=self.max_resends,
            strict_correlation=self.strict_correlation,
            topics=self.topics,
        )


def profile_specs(*, random_catalogs: bool = True) -> st.SearchStrategy[ProfileSpec]:
    """The HuleEdu pipelines with deadlines, or (when ``random_catalogs``) a random catalog,
    dispatched in parallel or with ``max_parallel=1``; overdue commands re-sent 0 to 2 times;
    foreign correlation ids applied (mostly) or ignored (``strict_correlation``)."""
    data: st.SearchStrategy[Mapping[str, Any]] = st.just(HULEEDU_DEADLINE_CATALOG)
    if random_catalogs:
        data = data | catalog_data()
    return st.builds(
        ProfileSpec,
        data,
        st.sampled_from([None, 1]),
        st.integers(0, 2),
        st.sampled_from([False, False, True]),
    )


# --- reachable states ------------------------------------------------------------------


@attrs.frozen
class TraceStep:
    """One command folded through ``decide``: the state before, the decision or the error."""

    before: BatchState | None
    command: Command
    now: datetime
    decision: Decision | None
    error: PipelineStateError | None = None


@attrs.frozen
class EngineTrace:
    """Commands folded through ``decide`` from an empty store, for one batch."""

    profile: Profile
    batch_id: str
    steps: tuple[TraceStep, ...]
    state: BatchState | None
    now: datetime


def _command(draw: st.DrawFn, payload: Payload, correlation_id: str | None = None) -> Command:
    return Command(payload, draw(_uuid_strings()), correlation_id or draw(_uuid_strings()))


def _wire(model: type[WireModel], data: Data) -> WireModel:
    return model.model_validate(data)


_READINESS_STEP = {
    BatchStatus.AWAITING_CONTENT_VALIDATION: "provision",
    BatchStatus.AWAITING_GROUP_VALIDATION: "associations",
    BatchStatus.GROUP_VALIDATION_COMPLETED: "essays_ready",
}


def _weighted_choices(state: BatchState) -> list[str]:
    """Kinds of command to draw from, repeated to weigh them by what the state is waiting for."""
    base = ["request", "retry", "outcome_stale", "expire"]
    if state.active_run is not None:
        return ["outcome"] * 12 + ["outcome_any"] * 2 + ["expire"] * 2 + ["cancel_run"] + base
    rare = ["rare"] if state.status is not BatchStatus.AWAITING_CONTENT_VALIDATION else []
    readiness = _READINESS_STEP.get(state.status)
    if readiness is not None:
        return [readiness] * 12 + base + rare
    return ["request"] * 8 + ["retry"] * 3 + base + rare


@st.composite
def commands_for(draw: st.DrawFn, profile: Profile, state: BatchState | None, batch_id: str) -> Command:
    """A plausible next command for ``state``: mostly ones that apply, plus duplicates,
    stale and premature outcomes, requests in any state, cancels, retries and sweeps."""
    if state is None:
        data = draw(registration_data(batch_id, max_essays=4))
        return _command(draw, _wire(BatchRegistrationRequestV1, data))
    essay_ids = list(state.item_ids)
    choice = draw(st.sampled_from(_weighted_choices(state)))
    if choice == "rare":
        # Terminal or conflicting inputs: rare, so that most traces get to run pipelines.
        choice = draw(st.sampled_from(["validation_errors", "cancel_batch", "archive", "register_again"]))
    payload: Payload
    corr: str | None = None
    if choice == "provision":
        payload = _wire(BatchContentProvisioningCompletedV1, draw(provisioning_data(batch_id, essay_ids)))
    elif choice == "associations":
        data = draw(associations_data(batch_id, state.group_id or "class-x", essay_ids))
        payload = _wire(StudentAssociationsConfirmedV1, data)
    elif choice == "essays_ready":
        payload = _wire(BatchEssaysReady, draw(essays_ready_data(batch_id, essay_ids)))
    elif choice == "request":
        names = [*profile.catalog.names, "no_such_pipeline"]
        with_prompt = draw(st.integers(0, 3)) > 0
        data = draw(pipeline_request_data(batch_id, names, prompt=with_prompt))
        corr = data["client_correlation_id"]
        payload = _wire(ClientBatchPipelineRequestV1, data)
    elif choice == "retry":
        retried = draw(st.sampled_from([*profile.catalog.phases, "no_such_phase"]))
        payload = RetryPhase(batch_id, retried, "teacher-1")
    elif choice in ("outcome", "outcome_any"):
        run = state.active_run
        assert run is not None
        candidates = [p for p in run.phases if p.is_active] if choice == "outcome" else list(run.phases)
        target = draw(st.sampled_from(candidates or list(run.phases)))
        ids = [e.item_id for e in target.inputs] or essay_ids
        data = draw(outcome_data(batch_id, target.name, run.correlation_id, ids))
        payload = _wire(ELSBatchPhaseOutcomeV1, data)
    elif choice == "outcome_stale":
        # An archived run's id, or one an earlier outcome was applied under (``answered``).
        old = [*state.past.correlations, *(c for _, c in state.past.answered)]
        stale = draw(st.sampled_from(old) if old else _uuid_strings())
        phase_name = draw(st.sampled_from(profile.catalog.phases))
        payload = _wire(ELSBatchPhaseOutcomeV1, draw(outcome_data(batch_id, phase_name, stale, essay_ids)))
    elif choice == "cancel_run":
        payload = CancelRun(batch_id, reason="changed my mind")
    elif choice == "expire":
        payload = ExpireOverdue(batch_id)
    elif choice == "validation_errors":
        payload = _wire(BatchValidationErrorsV1, draw(validation_errors_data(batch_id)))
    elif choice == "cancel_batch":
        payload = CancelBatch(batch_id)
    elif choice == "archive":
        payload = ArchiveBatch(batch_id)
    else:
        data = draw(registration_data(batch_id, max_essays=4))
        payload = _wire(BatchRegistrationRequestV1, data)
    return _command(draw, payload, corr)


@st.composite
def engine_traces(
    draw: st.DrawFn,
    profile: Profile | None = None,
    *,
    max_steps: int = 30,
    batch_id: str = "batch-1",
) -> EngineTrace:
    """Random commands folded through ``decide`` from no state, with time moving on by
    0-10 s between commands. Commands that raise are kept in the trace (with the error)
    and change nothing, as in the service."""
    prof = profile if profile is not None else draw(profile_specs()).profile()
    state: BatchState | None = None
    now = _EPOCH
    steps: list[TraceStep] = []
    for _ in range(draw(st.integers(1, max_steps))):
        now = now + timedelta(seconds=draw(st.integers(0, 10)))
        command = draw(commands_for(prof, state, batch_id))
        try:
            decision = decide(state, command, profile=prof, now=now)
        except PipelineStateError as exc:
            steps.append(TraceStep(state, command, now, None, exc))
            continue
        steps.append(TraceStep(state, command, now, decision))
        if decision.state is not None:
            state = decision.state
    return EngineTrace(prof, batch_id, tuple(steps), state, now)


def batch_states(profile: Profile | None = None, *, max_steps: int = 30) -> st.SearchStrategy[BatchState]:
    """States of one batch that the engine reaches (see :func:`engine_traces`)."""
    return (
        engine_traces(profile, max_steps=max_steps)
        .filter(lambda t: t.state is not None)
        .map(lambda t: _present(t.state))
    )


def _present(state: BatchState | None) -> BatchState:
    assert state is not None
    return state
