"""Definition checks of custom profiles, found by an attack. A broken catalog or profile must
fail when it is built, with a DefinitionError naming the culprit, never later while
events are handled ("Definition errors are raised while building definitions, never while
handling events", pipeline_state/errors.py)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pytest

from pipeline_state import (
    Catalog,
    CommandSpec,
    InMemoryRuntime,
    Profile,
)
from pipeline_state._catalog import Pipeline, Step
from pipeline_state._snapshot import ViewNames
from pipeline_state.ports import EVERY_DEPENDENCY, LAST_DEPENDENCY, Outgoing
from pipeline_state.profiles.huleedu.events import (
    INBOUND_TOPICS,
    BatchPipelineCompletedV1,
    PhaseInitiateCommand,
    Topic,
)
from pipeline_state.profiles.huleedu.outbound import HULEEDU_OUTBOUND
from pipeline_state.testing import Envelopes
from tests.bakery_kit import refused

DIAMOND = [
    {"name": "a"},
    {"name": "b", "depends_on": ["a"]},
    {"name": "c", "depends_on": ["a"]},
    {"name": "d", "depends_on": ["b", "c"]},
]


def catalog(pipelines: dict[str, list[dict[str, Any]]]) -> Catalog:
    return Catalog.from_dict({"pipelines": {name: {"steps": steps} for name, steps in pipelines.items()}})


def build(pipelines: dict[str, list[dict[str, Any]]] | None = None, **kw: Any) -> Profile:
    cat = catalog(pipelines or {"diamond": DIAMOND})
    commands = {
        p: CommandSpec(f"prof.phase{i}.start.v1", PhaseInitiateCommand) for i, p in enumerate(cat.phases)
    }
    kw.setdefault("fan_in", LAST_DEPENDENCY)
    kw.setdefault("phase_commands", commands)
    return Profile(name=kw.pop("name", "prof"), catalog=cat, **kw)


# -- held: the catalog refuses broken graphs at construction -------------------------------------
@pytest.mark.parametrize(
    ("pipelines", "culprits"),
    [
        (
            {
                "p": [
                    {"name": "a", "depends_on": ["c"]},
                    {"name": "b", "depends_on": ["a"]},
                    {"name": "c", "depends_on": ["b"]},
                ]
            },
            ("cycle", "a"),
        ),
        ({"p": [{"name": "a"}, {"name": "b", "depends_on": ["ghost"]}]}, ("unknown step", "ghost")),
        ({"p": [{"name": "a", "depends_on": ["a"]}]}, ("depends on itself",)),
        ({"p": [{"name": "a"}, {"name": "a"}]}, ("duplicate step", "a")),
        ({"p": [{"name": "a"}, {"name": "b", "depends_on": ["a", "a"]}]}, ("more than once",)),
        ({"p": []}, ("no steps",)),
        (
            {
                "one": [{"name": "a"}, {"name": "b", "depends_on": ["a"]}],
                "two": [{"name": "a"}, {"name": "x"}, {"name": "b", "depends_on": ["x"]}],
            },
            ("same dependencies", "b"),
        ),
        ({"manual:p": [{"name": "a"}]}, ("manual:",)),
        ({"p" * 201: [{"name": "a"}]}, ("200",)),
        ({"p": [{"name": "a\x00"}]}, ("control",)),
        ({"p": [{"name": "a\u202e"}]}, ("control",)),
        ({"p": [{"name": "   "}]}, ("empty",)),
        ({"p": [{"name": "a", "deadline_seconds": math.inf}]}, ("deadline_seconds",)),
        ({"p": [{"name": "a", "deadline_seconds": 0}]}, ("deadline_seconds",)),
        ({"p": [{"name": "a", "deadline_seconds": 11 * 365 * 86_400}]}, ("ten years",)),
        ({"p": [{"name": "a", "deadline_seconds": True}]}, ("deadline_seconds",)),
        ({"p": [{"name": "a", "retries": 3}]}, ("unknown key",)),
    ],
)
def test_broken_catalogs_fail_at_construction(
    pipelines: dict[str, list[dict[str, Any]]], culprits: Sequence[str]
) -> None:
    refused(lambda: catalog(pipelines), *culprits)


def test_a_cycle_deep_in_a_wide_graph_is_found_and_a_long_chain_builds() -> None:
    chain = [{"name": "s0"}] + [{"name": f"s{i}", "depends_on": [f"s{i - 1}"]} for i in range(1, 300)]
    assert catalog({"p": chain}).get("p").final_step == "s299"
    looped = [dict(s) for s in chain]
    looped[0] = {"name": "s0", "depends_on": ["s299"]}
    refused(lambda: catalog({"p": looped}), "cycle")


def test_duplicate_pipelines_and_empty_catalogs_are_refused() -> None:
    one = Pipeline("p", (Step("a"),))
    refused(lambda: Catalog([one, one]), "duplicate pipeline")
    refused(lambda: Catalog.from_dict({"pipelines": {}}), "no pipelines")
    refused(lambda: Pipeline("p", ()), "no steps")


# -- held: the profile refuses absurd settings at construction -------------------------------------
@pytest.mark.parametrize(
    ("changes", "culprits"),
    [
        ({"max_parallel": 0}, ("max_parallel",)),
        ({"max_parallel": -3}, ("max_parallel",)),
        ({"max_parallel": True}, ("max_parallel",)),
        ({"max_parallel": 1.5}, ("max_parallel",)),
        ({"max_resends": -1}, ("max_resends",)),
        ({"max_resends": True}, ("max_resends",)),
        ({"max_resends": 2.0}, ("max_resends",)),
        ({"default_deadline_seconds": math.nan}, ("default_deadline_seconds",)),
        ({"default_deadline_seconds": -1}, ("default_deadline_seconds",)),
        ({"default_deadline_seconds": 1e300}, ("default_deadline_seconds",)),
        ({"deadlines": {"ghost": 5}}, ("ghost",)),
        ({"deadlines": {"a": 0}}, ("deadlines['a']",)),
        ({"max_items_per_batch": 0}, ("max_items_per_batch",)),
        ({"max_items_per_batch": 1_001}, ("max_items_per_batch",)),
        ({"max_command_bytes": 8_192}, ("max_command_bytes",)),
        ({"max_command_bytes": 20_000}, ("max_command_bytes", "items")),
        ({"strict_correlation": "yes"}, ("strict_correlation",)),
        ({"source_service": "x" * 201}, ("source_service",)),
        ({"item_kind": "a\nb"}, ("item_kind",)),
    ],
)
def test_absurd_profile_settings_fail_at_construction(
    changes: dict[str, Any], culprits: Sequence[str]
) -> None:
    refused(lambda: build(**changes), *culprits)


def test_command_mistakes_fail_at_construction() -> None:
    good = build().phase_commands
    missing = {k: v for k, v in good.items() if k != "d"}
    refused(lambda: build(phase_commands=missing), "no command declared", "d")
    extra = {**good, "zz": CommandSpec("prof.zz.v1", PhaseInitiateCommand)}
    refused(lambda: build(phase_commands=extra), "zz")
    shared = {**good, "d": CommandSpec(good["a"].topic, PhaseInitiateCommand)}
    refused(lambda: build(phase_commands=shared), "share the command topic")
    inbound = {**good, "d": CommandSpec(Topic.PHASE_OUTCOME.value, PhaseInitiateCommand)}
    refused(lambda: build(phase_commands=inbound), "read its own commands back")
    # the default fan-in lists every dependency's ref: d's model has no room for it
    refused(lambda: build(fan_in=EVERY_DEPENDENCY), "several dependencies", "'d'")


# -- defects -------------------------------------------------------------------------------------------
def test_a_step_named_like_a_recorded_run_is_refused_at_construction() -> None:
    """Was a defect (fixed): a step could be called ``manual:...`` (only pipelines were
    refused the prefix that names the runs an operator records), but retrying it builds a
    pipeline named after the phase, which the catalog then refused: a CatalogError raised
    while an operator's command was handled. The step's name is now refused when built."""
    refused(
        lambda: build({"p": [{"name": "manual:clean"}, {"name": "score", "depends_on": ["manual:clean"]}]}),
        "step name 'manual:clean'",
        "manual:",
    )


def test_a_command_topic_on_the_dead_letter_topic_of_a_consumed_topic_is_refused() -> None:
    """Was a defect (fixed): the consumer parks bad messages of a consumed topic on
    ``<topic>.DLQ``; a phase whose command went there would have received every dead letter
    of that topic as a command. Such a profile is now refused when built."""
    good = build().phase_commands
    dlq = f"{Topic.PHASE_OUTCOME.value}.DLQ"
    assert Topic.PHASE_OUTCOME.value in INBOUND_TOPICS
    commands = {**good, "d": CommandSpec(dlq, PhaseInitiateCommand)}
    refused(lambda: build(phase_commands=commands), dlq, "dead letters")


@pytest.mark.parametrize(
    ("names", "culprit"),
    [
        (ViewNames(owner="status"), "'status'"),
        (ViewNames(items="batch_id"), "'batch_id'"),
        (ViewNames(items="version"), "'version'"),
        (ViewNames(owner="who", group_id="who"), "must differ"),
        (ViewNames(group_id="group\nid"), "group_id"),
        (ViewNames(items=" "), "items"),
        (ViewNames(owner="created_at"), "'created_at'"),
        (ViewNames(owner="expected_item_count"), "expected"),
    ],
)
def test_view_names_that_collide_with_the_engine_keys_are_refused(names: ViewNames, culprit: str) -> None:
    """Was a defect (fixed): a profile whose view key was one of the engine's own keys (or
    another view key) silently overwrote it in every batch view (the runtime's snapshot and
    the HTTP API: ``owner="status"`` showed the owner as the status). Refused when built."""
    refused(lambda: build(view_names=names), "view_names", culprit)


async def test_distinct_view_names_key_the_view() -> None:
    """Keys a profile may choose still key the view, beside the engine's own."""
    profile = build(view_names=ViewNames(owner="teacher", group_id="class_id", items="essay_count"))
    rt, env = InMemoryRuntime(profile), Envelopes(profile=profile)
    await rt.deliver(*env.register("b1", item_ids=["e1"], prompt=None))
    await rt.deliver(*env.provisioned("b1", ["e1"]))
    view = await rt.snapshot("b1")
    assert (view["batch_id"], view["essay_count"]) == ("b1", 1)
    assert {"teacher", "class_id", "status", "version"} <= view.keys()


@pytest.mark.parametrize("shown", ["awaiting\x00content", "awaiting\u202econtent", "x" * 5_000, "x" * 101])
def test_state_names_no_envelope_or_store_can_carry_are_refused(shown: str) -> None:
    """Was a defect (fixed): a state's shown name was only checked to be non-empty, yet it
    travels in denial details and waiting facts' keys (``batch_state:<name>``, kept in a
    200-character column): a NUL, a bidi override or 5,000 characters were published. It now
    follows the id rule, at most 100 characters (room for the key's prefix)."""
    refused(lambda: build(state_names={"awaiting_content_validation": shown}), "state_names", "100")


def test_a_valid_state_name_is_still_shown() -> None:
    profile = build(state_names={"awaiting_content_validation": "waiting for content"})
    assert profile.state_names.show("awaiting_content_validation") == "waiting for content"


class _EchoOutbound:
    """The default wording, except that completions go to a topic the profile consumes."""

    def registered(self, state: Any) -> Any:
        return HULEEDU_OUTBOUND.registered(state)

    def phase_skipped(self, *args: Any) -> Any:
        return HULEEDU_OUTBOUND.phase_skipped(*args)

    def denied(self, *args: Any) -> Any:
        return HULEEDU_OUTBOUND.denied(*args)

    def notify(self, notice: Any) -> Any:
        return HULEEDU_OUTBOUND.notify(notice)

    def completed(self, state: Any, summary: Any) -> Any:
        [event] = HULEEDU_OUTBOUND.completed(state, summary)
        return (
            Outgoing(
                Topic.PIPELINE_REQUEST.value,
                event.key,
                BatchPipelineCompletedV1,
                event.data,
                event.correlation_id,
            ),
        )


def test_an_event_topic_the_profile_consumes_is_refused() -> None:
    """Was a defect (fixed): a command on a consumed topic was refused ("it would read its
    own commands back"), but an announced event on a consumed topic was not: the service
    would have read its own completion events back. Refused when built."""
    refused(lambda: build(outbound=_EchoOutbound()), Topic.PIPELINE_REQUEST.value, "read its own events back")
