"""Profiles: the vocabulary a deployment plugs into the generic engine.

A :class:`Profile` names the pipelines (a :class:`~pipeline_state.catalog.Catalog`), the
command each phase is started with, the admission guards, the dispatch policy and the
limits the engine keeps: phase deadlines and re-sends, the size of the commands it builds
and how strictly it matches correlation ids. :func:`huleedu_profile` builds the default
profile shipped with the library.

**Commands that can always be published.** A phase command carries its items inline
(``essays_to_process``). Every inbound id and list is bounded (:mod:`pipeline_state.events`),
so the largest command a profile can build is known in advance: :func:`command_size_bound`
of ``max_items_per_batch`` items. Building a profile checks that it fits
``max_command_bytes`` (default :data:`DEFAULT_MAX_COMMAND_BYTES`, under the producer's
1 MiB request limit) and raises :class:`~pipeline_state.errors.DefinitionError` naming the
numbers otherwise. As defense in depth (a state stored before the bounds existed), the
engine measures a command whose item count could exceed the limit before emitting it, and a
command that does is never built: the phase fails at once with ``command_too_large``.

**Deadlines.** A phase's deadline is, in order: the deployment's ``deadlines[phase]``
(``None`` there means no deadline), the catalog step's ``deadline_seconds``, then
``default_deadline_seconds`` (``None``: no deadline). When it passes without an outcome the
sweeper re-sends the phase's command with the same event id up to ``max_resends`` times,
each with a fresh deadline, and then fails the phase with ``timeout``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType

import attrs

from .catalog import HULEEDU_CATALOG, Catalog, Step
from .errors import DefinitionError
from .events import (
    MAX_ESSAYS_PER_BATCH,
    MAX_ITEM_ID_LENGTH,
    AIFeedbackInitiateCommandV1,
    CJAssessmentInitiateCommandV1,
    NlpInitiateCommandV2,
    PhaseInitiateCommand,
    SpellcheckInitiateCommandV1,
    StudentMatchingInitiateCommandV1,
    Topic,
)
from .guards import AdmissionGuard, CreditLedger, CreditsGuard, PromptGuard

__all__ = [
    "COMMAND_OVERHEAD_BYTES",
    "DEFAULT_MAX_COMMAND_BYTES",
    "DEFAULT_MAX_RESENDS",
    "HULEEDU_DEFAULT_DEADLINE_SECONDS",
    "ITEM_REF_MAX_BYTES",
    "CommandSpec",
    "Profile",
    "command_size_bound",
    "huleedu_profile",
]

DEFAULT_MAX_COMMAND_BYTES = 900_000
"""Default upper bound on an encoded phase command (its envelope as UTF-8 JSON): below
aiokafka's default ``max_request_size`` of 1,048,576 bytes, with room for the record's key,
headers and batch framing."""

COMMAND_OVERHEAD_BYTES = 8_192
"""What a phase command may take besides its item list, at most: the envelope (ids, topic,
timestamp, source, metadata) and every other field (batch id, class id, language, course
code) at their bounds, four bytes per character: about 4.5 kB, rounded up."""

ITEM_REF_MAX_BYTES = len('{"essay_id":"","text_storage_id":""},') + 2 * MAX_ITEM_ID_LENGTH * 4
"""The most one item of ``essays_to_process`` takes as UTF-8 JSON: two ids of
:data:`~pipeline_state.events.MAX_ITEM_ID_LENGTH` characters, at most 4 bytes each (ids hold
no control characters, the only ones JSON escapes to more)."""

DEFAULT_MAX_RESENDS = 2
"""How many times an overdue phase's command is re-sent before the phase fails."""

HULEEDU_DEFAULT_DEADLINE_SECONDS = 3_600.0
"""Deadline of every phase of the shipped HuleEdu profile (one hour); with
:data:`DEFAULT_MAX_RESENDS` re-sends a silent phase fails after three hours."""


def command_size_bound(items: int) -> int:
    """The most bytes a phase command of ``items`` items can take (see the module)."""
    return COMMAND_OVERHEAD_BYTES + items * ITEM_REF_MAX_BYTES


@attrs.frozen
class CommandSpec:
    """The topic and payload model of the command that starts a phase."""

    topic: str
    model: type[PhaseInitiateCommand]


def _check_max_parallel(_: object, __: attrs.Attribute[int | None], value: int | None) -> None:
    if value is not None and value < 1:
        raise DefinitionError("profile", f"max_parallel must be at least 1, got {value}")


def _check_seconds(where: str, value: object) -> float | None:
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise DefinitionError(
            "profile", f"{where} must be a positive number of seconds or None, got {value!r}"
        )
    return float(value)


def _freeze(value: Mapping[str, float | None]) -> Mapping[str, float | None]:
    return MappingProxyType(dict(value))


@attrs.frozen
class Profile:
    """Everything deployment-specific the engine needs; validated when built.

    ``strict_correlation``: an outcome whose correlation id belongs to no run of the batch
    is ignored as ``stale_run`` (the old rule) instead of being applied to the active run
    and flagged ``correlation_mismatch``. The other settings are described in the module.
    """

    name: str
    catalog: Catalog
    phase_commands: Mapping[str, CommandSpec]
    student_matching: CommandSpec | None = None
    guards: tuple[AdmissionGuard, ...] = ()
    max_parallel: int | None = attrs.field(default=None, validator=_check_max_parallel)
    source_service: str = "pipeline-state"
    strict_correlation: bool = False
    deadlines: Mapping[str, float | None] = attrs.field(factory=dict, converter=_freeze)
    default_deadline_seconds: float | None = None
    max_resends: int = DEFAULT_MAX_RESENDS
    max_command_bytes: int = DEFAULT_MAX_COMMAND_BYTES
    max_items_per_batch: int = MAX_ESSAYS_PER_BATCH
    measure_above_items: int = attrs.field(init=False, default=0)
    """Commands of more items than this are measured before they are built (derived)."""

    def __attrs_post_init__(self) -> None:
        missing = [phase for phase in self.catalog.phases if phase not in self.phase_commands]
        if missing:
            raise DefinitionError(self.name, f"no command declared for phases {missing}")
        unknown = [phase for phase in self.deadlines if phase not in self.catalog.phases]
        if unknown:
            raise DefinitionError(self.name, f"deadlines name phases that are not in the catalog: {unknown}")
        for phase, seconds in self.deadlines.items():
            _check_seconds(f"deadlines[{phase!r}]", seconds)
        default = _check_seconds("default_deadline_seconds", self.default_deadline_seconds)
        object.__setattr__(self, "default_deadline_seconds", default)
        if (
            isinstance(self.max_resends, bool)
            or not isinstance(self.max_resends, int)
            or self.max_resends < 0
        ):
            raise DefinitionError(
                self.name, f"max_resends must be a whole number >= 0, got {self.max_resends!r}"
            )
        items = self.max_items_per_batch
        if isinstance(items, bool) or not isinstance(items, int) or not 1 <= items <= MAX_ESSAYS_PER_BATCH:
            raise DefinitionError(
                self.name,
                f"max_items_per_batch must be between 1 and {MAX_ESSAYS_PER_BATCH} (the wire bound), "
                f"got {items!r}",
            )
        limit = self.max_command_bytes
        if isinstance(limit, bool) or not isinstance(limit, int) or limit <= COMMAND_OVERHEAD_BYTES:
            raise DefinitionError(
                self.name,
                f"max_command_bytes must be a whole number above {COMMAND_OVERHEAD_BYTES}, got {limit!r}",
            )
        worst = command_size_bound(items)
        if worst > limit:
            fits = (limit - COMMAND_OVERHEAD_BYTES) // ITEM_REF_MAX_BYTES
            raise DefinitionError(
                self.name,
                f"a phase command of max_items_per_batch={items} items may take up to {worst} bytes "
                f"({COMMAND_OVERHEAD_BYTES} + {items} x {ITEM_REF_MAX_BYTES}), more than "
                f"max_command_bytes={limit}: allow at most {fits} items or raise max_command_bytes",
            )
        object.__setattr__(
            self, "measure_above_items", (limit - COMMAND_OVERHEAD_BYTES) // ITEM_REF_MAX_BYTES
        )

    def is_phase(self, name: str) -> bool:
        return name in self.phase_commands

    def deadline_for(self, step: Step) -> float | None:
        """The deadline (seconds) of ``step`` in a run: the deployment's ``deadlines``,
        else the catalog's, else ``default_deadline_seconds``; ``None`` for none."""
        if step.name in self.deadlines:
            return self.deadlines[step.name]
        if step.deadline_seconds is not None:
            return step.deadline_seconds
        return self.default_deadline_seconds


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
    max_items_per_batch: int = MAX_ESSAYS_PER_BATCH,
) -> Profile:
    """The HuleEdu profile: its four pipelines, phase commands and the prompt guard.

    ``max_parallel=1`` gives the original platform's strictly sequential dispatch;
    ``credits`` adds a :class:`~pipeline_state.guards.CreditsGuard` over that ledger.
    Every phase has a deadline: :data:`HULEEDU_DEFAULT_DEADLINE_SECONDS` unless the catalog
    step sets one, and ``deadlines={"cj_assessment": 7200}`` overrides both per phase for a
    deployment (``None`` for a phase: no deadline). ``default_deadline_seconds=None`` opts
    out of the default (only the catalog's and ``deadlines``' remain: a silent worker then
    blocks its batch until an operator cancels the run). See :class:`Profile` for the rest.
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
        strict_correlation=strict_correlation,
        deadlines=deadlines or {},
        default_deadline_seconds=default_deadline_seconds,
        max_resends=max_resends,
        max_command_bytes=max_command_bytes,
        max_items_per_batch=max_items_per_batch,
    )
