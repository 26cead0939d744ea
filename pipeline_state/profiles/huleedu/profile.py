"""The HuleEdu profile: its pipelines, phase commands, guards and deadlines (see
:func:`huleedu_profile`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pipeline_state._catalog import Catalog
from pipeline_state._fan_in import LAST_DEPENDENCY, FanIn
from pipeline_state._guards import AdmissionGuard, CreditLedger, CreditsGuard, PromptGuard
from pipeline_state._lifecycle import ITEMS_READY, BatchStatus
from pipeline_state._names import StateNames
from pipeline_state._profile import DEFAULT_MAX_COMMAND_BYTES, DEFAULT_MAX_RESENDS, CommandSpec, Profile
from pipeline_state._snapshot import ViewNames
from pipeline_state._wire import MAX_ITEMS_PER_BATCH

from .catalog import HULEEDU_CATALOG
from .events import (
    HULEEDU_COMMAND_FIELDS,
    AIFeedbackInitiateCommandV1,
    CJAssessmentInitiateCommandV1,
    NlpInitiateCommandV2,
    SpellcheckInitiateCommandV1,
    StudentMatchingInitiateCommandV1,
    Topic,
)

__all__ = [
    "HULEEDU_DEFAULT_DEADLINE_SECONDS",
    "HULEEDU_FAN_IN",
    "HULEEDU_PHASE_COMMANDS",
    "HULEEDU_STATE_NAMES",
    "HULEEDU_VIEW_NAMES",
    "MATCHING_COMMAND_FIELDS",
    "PHASE_COMMAND_FIELDS",
    "PROMPT_PHASES",
    "huleedu_profile",
]

PHASE_COMMAND_FIELDS: frozenset[str] = HULEEDU_COMMAND_FIELDS.phase
"""The fields the engine fills in every HuleEdu phase command, and nothing else: a command
model may declare any of them, and every other field it declares needs a default.
``class_id`` is ``None`` for a batch registered without a class."""

MATCHING_COMMAND_FIELDS: frozenset[str] = HULEEDU_COMMAND_FIELDS.matching
"""The fields the engine fills in the student-matching command (``class_id`` is always set:
only a batch with a class is matched)."""

PROMPT_PHASES: frozenset[str] = frozenset({"nlp", "cj_assessment", "ai_feedback"})
"""The HuleEdu phases that need a prompt (its :class:`~pipeline_state._guards.PromptGuard`)."""

HULEEDU_DEFAULT_DEADLINE_SECONDS = 3_600.0
"""Deadline of every phase of the shipped HuleEdu profile (one hour); with
:data:`DEFAULT_MAX_RESENDS` re-sends a silent phase fails after three hours."""


HULEEDU_FAN_IN: FanIn = LAST_DEPENDENCY
"""How a HuleEdu fan-in phase (``ai_feedback`` after ``spellcheck`` and ``nlp``) gets its
dependencies' refs: the last dependency's, in plan order, for each essay that succeeded in
every one. HuleEdu's commands carry one text ref per essay (``essays_to_process`` holds one
``text_storage_id`` each, a shape the wire contract fixes), so they have no room to list
each dependency's, and the last one's is what the platform has always sent."""

HULEEDU_VIEW_NAMES = ViewNames(owner="user_id", group_id="class_id", items="essay_count")

HULEEDU_STATE_NAMES = StateNames(
    {
        BatchStatus.AWAITING_GROUP_VALIDATION: "awaiting_student_validation",
        BatchStatus.GROUP_VALIDATION_COMPLETED: "student_validation_completed",
        ITEMS_READY: "essays_ready",
    }
)
"""The HuleEdu wire's names of the group-validation states and of the items-ready trigger:
its services know the statuses by these values, and its denials and handling results have
always carried them."""
"""The keys of the batch view of the HuleEdu HTTP API (``BatchSnapshot``)."""

HULEEDU_PHASE_COMMANDS: Mapping[str, CommandSpec] = {
    "spellcheck": CommandSpec(Topic.SPELLCHECK.value, SpellcheckInitiateCommandV1),
    "cj_assessment": CommandSpec(Topic.CJ_ASSESSMENT.value, CJAssessmentInitiateCommandV1),
    "nlp": CommandSpec(Topic.NLP.value, NlpInitiateCommandV2),
    "ai_feedback": CommandSpec(Topic.AI_FEEDBACK.value, AIFeedbackInitiateCommandV1),
}


def huleedu_profile(
    *,
    max_parallel: int | None = None,
    credits: CreditLedger | None = None,
    extra_guards: Sequence[AdmissionGuard] = (),
    catalog: Catalog = HULEEDU_CATALOG,
    deadlines: Mapping[str, float | None] | None = None,
    default_deadline_seconds: float | None = HULEEDU_DEFAULT_DEADLINE_SECONDS,
    max_resends: int = DEFAULT_MAX_RESENDS,
    strict_correlation: bool = False,
    max_command_bytes: int = DEFAULT_MAX_COMMAND_BYTES,
    max_items_per_batch: int = MAX_ITEMS_PER_BATCH,
) -> Profile:
    """The HuleEdu profile: its four pipelines, phase commands and the prompt guard.

    ``catalog`` may be any catalog over (some of) the four HuleEdu phases; the profile
    declares the commands of the phases it has.

    ``max_parallel=1`` gives the original platform's strictly sequential dispatch;
    ``credits`` adds a :class:`~pipeline_state._guards.CreditsGuard` over that ledger.
    Every phase has a deadline: :data:`HULEEDU_DEFAULT_DEADLINE_SECONDS` unless the catalog
    step sets one, and ``deadlines={"cj_assessment": 7200}`` overrides both per phase for a
    deployment (``None`` for a phase: no deadline). ``default_deadline_seconds=None`` opts
    out of the default (only the catalog's and ``deadlines``' remain: a silent worker then
    blocks its batch until an operator cancels the run). See :class:`Profile` for the rest.
    """
    # Only the catalog's phases: a profile declares no command for a phase it cannot run.
    phases = set(catalog.phases) if isinstance(catalog, Catalog) else set()
    commands = {phase: spec for phase, spec in HULEEDU_PHASE_COMMANDS.items() if phase in phases}
    guards: list[AdmissionGuard] = [PromptGuard(PROMPT_PHASES)]
    if credits is not None:
        guards.append(CreditsGuard(credits))
    guards.extend(extra_guards)
    return Profile(
        name="huleedu",
        catalog=catalog,
        phase_commands=commands,
        group_matching=CommandSpec(Topic.STUDENT_MATCHING.value, StudentMatchingInitiateCommandV1),
        guards=tuple(guards),
        max_parallel=max_parallel,
        source_service="batch_orchestrator_service",
        strict_correlation=strict_correlation,
        deadlines=deadlines or {},
        default_deadline_seconds=default_deadline_seconds,
        max_resends=max_resends,
        max_command_bytes=max_command_bytes,
        max_items_per_batch=max_items_per_batch,
        item_kind="essay",
        view_names=HULEEDU_VIEW_NAMES,
        state_names=HULEEDU_STATE_NAMES,
        fan_in=HULEEDU_FAN_IN,
    )
