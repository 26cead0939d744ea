"""Hostile or careless definitions of a profile that is not the shipped one (the bakery of
:mod:`tests.bakery_kit`): each mistake is refused when the profile is built, with a
:class:`~pipeline_state.DefinitionError` (or its ``CatalogError``) naming it, never a
traceback from deep inside, never accepted to fail later.

Were defects (fixed): an integer deadline too large for a float raised ``OverflowError``
(also out of ``pipeline-state diagram``); ``deadlines=5`` a bare ``TypeError``; a profile
name with a line break, a bidi override or 5,000 characters was accepted; ``state_names``
could show a state under another state's engine name (a swap) or name one state twice (the
last kept silently); a step name of up to 200 characters was accepted although the stores
keep it prefixed in 200-character fields.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pytest

from pipeline_state._catalog import MAX_STEP_NAME_LENGTH
from pipeline_state._cli import main
from pipeline_state._model import RECORDED_PIPELINE_PREFIX
from pipeline_state._waiting import _PHASE
from pipeline_state._wire import MAX_ID_LENGTH
from tests.bakery_kit import bakery, one, refused


@pytest.mark.parametrize(
    ("catalog", "culprits"),
    [
        (one([{"name": "a", "depends_on": ["b"]}, {"name": "b", "depends_on": ["a"]}]), ("cycle",)),
        (one([{"name": "a", "depends_on": ["a"]}]), ("itself",)),
        (one([{"name": "a"}, {"name": "b", "depends_on": ["nope"]}]), ("unknown", "nope")),
        (one([{"name": "a"}, {"name": "a"}]), ("duplicate",)),
        (one([]), ("no steps",)),
        ({"pipelines": {}}, ("no pipelines",)),
        (one([{"name": "a\u2028b"}]), ("control",)),
        (one([{"name": "a\u2066b"}]), ("control",)),
        (one([{"name": "\ud800"}]), ("control",)),
        (one([{"name": "a"}], pipeline="x\x1b[31m"), ("control",)),
        (one([{"name": "a", "deadline_seconds": 0}]), ("deadline_seconds",)),
        (one([{"name": "a", "deadline_seconds": -5}]), ("deadline_seconds",)),
        (one([{"name": "a", "deadline_seconds": -0.0}]), ("deadline_seconds",)),
        (one([{"name": "a", "deadline_seconds": math.nan}]), ("deadline_seconds",)),
        (one([{"name": "a", "deadline_seconds": math.inf}]), ("deadline_seconds",)),
        (one([{"name": "a", "deadline_seconds": "5"}]), ("deadline_seconds",)),
        (one([{"name": "a"}, {"name": "b", "depends_on": "a"}]), ("depends_on",)),
        (one([{"name": "a"}, {"name": "b", "depends_on": [["a"]]}]), ("dependency names",)),
        ({"pipelines": {"p": None}}, ("mapping",)),
    ],
)
def test_hostile_catalogs_of_a_custom_profile_are_refused_when_built(
    catalog: dict[str, Any], culprits: tuple[str, ...]
) -> None:
    refused(lambda: bakery(catalog), *culprits)


@pytest.mark.parametrize(
    ("names", "culprits"),
    [
        ({"ready_for_pipeline_execution": "x", "processing_pipelines": "x"}, ("'x'",)),
        ({"ready_for_pipeline_execution": "start_run"}, ("start_run",)),
        ({"ready_for_pipeline_execution": "cancelled"}, ("cancelled",)),
        ({"nonsense": "x"}, ("nonsense",)),
        ({"ready_for_pipeline_execution": "a\nb"}, ("ready_for_pipeline_execution",)),
        ({"ready_for_pipeline_execution": "y" * 101}, ("100",)),
        ({"ready_for_pipeline_execution": 5}, ("non-empty strings",)),
    ],
)
def test_state_names_that_collide_or_cannot_travel_are_refused(
    names: dict[str, Any], culprits: tuple[str, ...]
) -> None:
    refused(lambda: bakery(state_names=names), *culprits)


def test_a_huge_catalog_builds_fast_and_a_cycle_in_it_is_named() -> None:
    chain = [{"name": "s0"}] + [{"name": f"s{i}", "depends_on": [f"s{i - 1}"]} for i in range(1, 2000)]
    wide = [{"name": f"w{i}"} for i in range(300)] + [
        {"name": "sink", "depends_on": [f"w{i}" for i in range(300)]}
    ]
    started = time.monotonic()
    profile = bakery({"pipelines": {"chain": {"steps": chain}, "wide": {"steps": wide}}})
    assert len(profile.phase_commands) == 2301
    assert time.monotonic() - started < 10
    looped = [dict(s) for s in chain]
    looped[0] = {"name": "s0", "depends_on": ["s1999"]}
    refused(lambda: bakery({"pipelines": {"chain": {"steps": looped}}}), "cycle")


@pytest.mark.parametrize(
    "where",
    ["catalog step", "profile deadlines", "default_deadline_seconds"],
)
def test_a_huge_integer_deadline_is_refused_not_an_overflow_error(where: str) -> None:
    """An integer deadline beyond the float range (YAML and Python ints are unbounded) is
    refused like 0, nan, inf and eleven years. Was a defect (fixed): ``math.isfinite`` on it
    raised ``OverflowError``."""
    huge = 10**400
    if where == "catalog step":
        refused(lambda: bakery(one([{"name": "a", "deadline_seconds": huge}])), "deadline")
    elif where == "profile deadlines":
        refused(lambda: bakery(deadlines={"proof": huge}), "deadlines")
    else:
        refused(lambda: bakery(default_deadline_seconds=huge), "default_deadline_seconds")


def test_diagram_of_a_yaml_catalog_with_a_huge_deadline_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``pipeline-state diagram pipelines --catalog x.yaml`` answers a 400-digit deadline
    with one line and exit 2. Was a defect (fixed): a traceback (``OverflowError``)."""
    catalog = tmp_path / "huge.yaml"
    catalog.write_text(
        "pipelines:\n  p:\n    steps:\n      - name: a\n        deadline_seconds: 1" + "0" * 400 + "\n"
    )
    assert main(["diagram", "pipelines", "--catalog", str(catalog)]) == 2
    assert "deadline_seconds" in capsys.readouterr().err


def test_deadlines_that_are_not_a_mapping_are_a_definition_error() -> None:
    """``deadlines=5`` is a DefinitionError naming the setting. Was a defect (fixed): a bare
    ``TypeError`` out of the attrs converter."""
    refused(lambda: bakery(deadlines=5), "deadlines")


@pytest.mark.parametrize("name", ["bake\nry", "x" * 5000, "bakery\u202e"])
def test_a_profile_name_that_is_not_short_text_is_refused(name: str) -> None:
    """A profile's name is short text, like ``source_service``: it lands in AsyncAPI titles,
    generated page headings and logs. Was a defect (fixed): only emptiness was checked."""
    refused(lambda: bakery(name=name), "name")


def test_a_state_shown_under_another_state_s_engine_name_is_refused() -> None:
    """A swap (ready shown as ``processing_pipelines`` and processing shown as
    ``ready_for_pipeline_execution``) is refused: ``batch show`` would print a ready batch as
    ``processing_pipelines`` above a transition log (engine names) ending in
    ``-> ready_for_pipeline_execution``. Was a defect (fixed): accepted."""
    swap = {
        "ready_for_pipeline_execution": "processing_pipelines",
        "processing_pipelines": "ready_for_pipeline_execution",
    }
    refused(lambda: bakery(state_names=swap), "processing_pipelines")


def test_a_state_renamed_twice_is_refused_not_silently_the_last() -> None:
    """``state_names`` given as pairs naming one state twice is refused. Was a defect
    (fixed): the last name was kept silently."""
    pairs = (("ready_for_pipeline_execution", "idle"), ("ready_for_pipeline_execution", "waiting"))
    refused(lambda: bakery(state_names=pairs), "ready_for_pipeline_execution")


def test_a_step_name_longer_than_the_stores_keep_prefixed_is_refused() -> None:
    """The longest step name fits every field a store keeps it in with a prefix: an early
    outcome's inbox result and a recorded run's pipeline name."""
    assert len("deferred:" + _PHASE) + MAX_STEP_NAME_LENGTH <= MAX_ID_LENGTH
    assert len(RECORDED_PIPELINE_PREFIX) + MAX_STEP_NAME_LENGTH <= MAX_ID_LENGTH
    longest = "s" * MAX_STEP_NAME_LENGTH
    assert longest in bakery(one([{"name": longest}])).catalog.phases
    refused(lambda: bakery(one([{"name": longest + "s"}])), str(MAX_STEP_NAME_LENGTH))
