"""Profiles: the vocabulary a deployment plugs into the generic engine.

A :class:`Profile` names the pipelines (a :class:`~pipeline_state.catalog.Catalog`), the
command each phase is started with, the admission guards and the dispatch policy.
:func:`huleedu_profile` builds the default profile shipped with the library.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs

from .catalog import HULEEDU_CATALOG, Catalog
from .errors import DefinitionError
from .events import (
    AIFeedbackInitiateCommandV1,
    CJAssessmentInitiateCommandV1,
    NlpInitiateCommandV2,
    PhaseInitiateCommand,
    SpellcheckInitiateCommandV1,
    StudentMatchingInitiateCommandV1,
    Topic,
)
from .guards import AdmissionGuard, CreditLedger, CreditsGuard, PromptGuard

__all__ = ["CommandSpec", "Profile", "huleedu_profile"]


@attrs.frozen
class CommandSpec:
    """The topic and payload model of the command that starts a phase."""

    topic: str
    model: type[PhaseInitiateCommand]


def _check_max_parallel(_: object, __: attrs.Attribute[int | None], value: int | None) -> None:
    if value is not None and value < 1:
        raise DefinitionError("profile", f"max_parallel must be at least 1, got {value}")


@attrs.frozen
class Profile:
    """Everything deployment-specific the engine needs; validated when built."""

    name: str
    catalog: Catalog
    phase_commands: Mapping[str, CommandSpec]
    student_matching: CommandSpec | None = None
    guards: tuple[AdmissionGuard, ...] = ()
    max_parallel: int | None = attrs.field(default=None, validator=_check_max_parallel)
    source_service: str = "pipeline-state"

    def __attrs_post_init__(self) -> None:
        missing = [phase for phase in self.catalog.phases if phase not in self.phase_commands]
        if missing:
            raise DefinitionError(self.name, f"no command declared for phases {missing}")

    def is_phase(self, name: str) -> bool:
        return name in self.phase_commands


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
) -> Profile:
    """The HuleEdu profile: its four pipelines, phase commands and the prompt guard.

    ``max_parallel=1`` gives the original platform's strictly sequential dispatch;
    ``credits`` adds a :class:`~pipeline_state.guards.CreditsGuard` over that ledger.
    """
    guards: list[AdmissionGuard] = [PromptGuard()]
    if credits is not None:
        guards.append(CreditsGuard(credits))
    guards.extend(extra_guards)
    return Profile(
        name="huleedu",
        catalog=catalog,
        phase_commands=HULEEDU_PHASE_COMMANDS,
        student_matching=CommandSpec(Topic.STUDENT_MATCHING.value, StudentMatchingInitiateCommandV1),
        guards=tuple(guards),
        max_parallel=max_parallel,
        source_service="batch_orchestrator_service",
    )
