"""Tests for pipeline_state._catalog: definitions, validation, loading, plan order, pruning."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import attrs
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline_state import Catalog, Pipeline, Step
from pipeline_state._catalog import Plan, load_packaged_profile_catalog
from pipeline_state.errors import CatalogError, DefinitionError, UnknownPipelineError
from pipeline_state.profiles.huleedu.catalog import _HULEEDU_PROFILE, HULEEDU_CATALOG
from pipeline_state.profiles.huleedu.testing.strategies import catalogs

REPO_ROOT = Path(__file__).resolve().parent.parent


def one_pipeline(*steps: dict[str, Any], name: str = "p") -> dict[str, Any]:
    return {"pipelines": {name: {"steps": list(steps)}}}


# --------------------------------------------------------------------------- HuleEdu profile


@pytest.mark.parametrize(
    ("pipeline", "order"),
    [
        ("cj_assessment", ("spellcheck", "cj_assessment")),
        ("nlp", ("spellcheck", "nlp")),
        ("ai_feedback", ("spellcheck", "nlp", "ai_feedback")),
        ("comprehensive", ("spellcheck", "cj_assessment", "nlp", "ai_feedback")),
    ],
)
def test_huleedu_plan_orders(pipeline: str, order: tuple[str, ...]) -> None:
    resolved = HULEEDU_CATALOG.get(pipeline)
    assert resolved.step_names == order
    assert resolved.final_step == order[-1]
    assert resolved.roots == ("spellcheck",)
    plan = HULEEDU_CATALOG.plan(pipeline, completed=())
    assert plan.to_run_names == order
    assert plan.pruned == ()


def test_huleedu_catalog_contents() -> None:
    assert HULEEDU_CATALOG.names == ("cj_assessment", "nlp", "ai_feedback", "comprehensive")
    assert HULEEDU_CATALOG.phases == ("spellcheck", "cj_assessment", "nlp", "ai_feedback")
    comprehensive = HULEEDU_CATALOG.get("comprehensive")
    assert comprehensive.dependents("spellcheck") == ("cj_assessment", "nlp", "ai_feedback")
    assert comprehensive.dependents("nlp") == ("ai_feedback",)
    assert comprehensive.dependents("ai_feedback") == ()
    assert comprehensive.dependencies("ai_feedback") == ("spellcheck", "nlp")
    assert comprehensive.dependencies("spellcheck") == ()
    assert comprehensive.step("ai_feedback") == Step("ai_feedback", ("spellcheck", "nlp"))
    assert HULEEDU_CATALOG.step_definition("nlp") == Step("nlp", ("spellcheck",))
    assert all(step.deadline_seconds is None for step in comprehensive.steps)
    assert "nlp" in HULEEDU_CATALOG
    assert "spellcheck" not in HULEEDU_CATALOG
    assert "spellcheck" in comprehensive


def test_packaged_huleedu_toml_equals_builtin_catalog() -> None:
    path = REPO_ROOT / "pipeline_state" / "profiles" / "huleedu.toml"
    assert Catalog.from_toml(path) == HULEEDU_CATALOG
    assert Catalog.from_file(path) == HULEEDU_CATALOG
    loaded = load_packaged_profile_catalog("huleedu")
    assert loaded == HULEEDU_CATALOG
    assert loaded.names == HULEEDU_CATALOG.names
    assert hash(loaded) == hash(HULEEDU_CATALOG)


@pytest.mark.parametrize("name", ["nope", "../catalog", "", "huleedu.toml/x"])
def test_unknown_packaged_profile(name: str) -> None:
    with pytest.raises(CatalogError, match="profile"):
        load_packaged_profile_catalog(name)


def test_unknown_names_raise_unknown_pipeline_error() -> None:
    with pytest.raises(UnknownPipelineError) as excinfo:
        HULEEDU_CATALOG.get("essay_scoring")
    assert excinfo.value.name == "essay_scoring"
    assert excinfo.value.kind == "pipeline"
    with pytest.raises(UnknownPipelineError):
        HULEEDU_CATALOG.plan("essay_scoring", completed=())
    with pytest.raises(UnknownPipelineError) as excinfo:
        HULEEDU_CATALOG.get("nlp").step("cj_assessment")
    assert excinfo.value.kind == "phase"
    assert "cj_assessment" in str(excinfo.value)
    for call in (
        lambda: HULEEDU_CATALOG.get("nlp").dependents("ghost"),
        lambda: HULEEDU_CATALOG.get("nlp").dependencies("ghost"),
        lambda: HULEEDU_CATALOG.step_definition("ghost"),
    ):
        with pytest.raises(UnknownPipelineError) as excinfo:
            call()
        assert excinfo.value.kind == "phase"
        assert excinfo.value.name == "ghost"


def test_definitions_are_immutable() -> None:
    pipeline = HULEEDU_CATALOG.get("nlp")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        pipeline.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        HULEEDU_CATALOG.pipelines["x"] = pipeline  # type: ignore[index]


# --------------------------------------------------------------------------- pruning


def test_pruning_completed_dependency() -> None:
    plan = HULEEDU_CATALOG.plan("nlp", completed={"spellcheck"})
    assert plan == Plan(
        pipeline=HULEEDU_CATALOG.get("nlp"),
        to_run=(Step("nlp", ("spellcheck",)),),
        pruned=("spellcheck",),
    )
    assert plan.to_run_names == ("nlp",)


def test_pruning_everything_completed() -> None:
    every = HULEEDU_CATALOG.get("comprehensive").step_names
    plan = HULEEDU_CATALOG.plan("comprehensive", completed=set(every) | {"unrelated"})
    assert plan.to_run == ()
    assert plan.pruned == every


def test_pruning_keeps_plan_order_and_non_completed_dependents() -> None:
    # nlp is pruned, but ai_feedback (not completed) still runs; spellcheck was not completed.
    plan = HULEEDU_CATALOG.plan("comprehensive", completed=["ai_feedback", "nlp"][::-1])
    assert plan.to_run_names == ("spellcheck", "cj_assessment")
    assert plan.pruned == ("nlp", "ai_feedback")
    plan = HULEEDU_CATALOG.plan("comprehensive", completed=frozenset({"spellcheck", "nlp"}))
    assert plan.to_run_names == ("cj_assessment", "ai_feedback")
    assert plan.pruned == ("spellcheck", "nlp")


# --------------------------------------------------------------------------- dict format


def test_from_dict_full_step_and_plan_order() -> None:
    catalog = Catalog.from_dict(
        one_pipeline(
            {"name": "report", "depends_on": ["b", "a"], "deadline_seconds": 600},
            {"name": "b", "depends_on": ["a"], "deadline_seconds": 1.5},
            {"name": "a"},
            {"name": "z"},
        )
    )
    pipeline = catalog.get("p")
    # Ready at first: a (declared 3rd), z (4th) -> a. Then b (2nd) beats z; then report (1st)
    # beats z. The declaration order only breaks ties among steps that are ready.
    assert pipeline.step_names == ("a", "b", "report", "z")
    assert pipeline.step("report").deadline_seconds == 600.0
    assert isinstance(pipeline.step("report").deadline_seconds, float)
    assert pipeline.step("b").deadline_seconds == 1.5
    assert pipeline.dependencies("report") == ("a", "b")
    assert pipeline.roots == ("a", "z")
    assert pipeline.final_step == "z"


def test_declaration_order_breaks_ties() -> None:
    first = Catalog.from_dict(one_pipeline({"name": "x"}, {"name": "y"}, {"name": "w"}))
    second = Catalog.from_dict(one_pipeline({"name": "w"}, {"name": "y"}, {"name": "x"}))
    assert first.get("p").step_names == ("x", "y", "w")
    assert second.get("p").step_names == ("w", "y", "x")
    assert first != second


def test_constructing_objects_directly() -> None:
    pipeline = Pipeline("p", (Step("b", ("a",)), Step("a")))
    assert pipeline.step_names == ("a", "b")
    catalog = Catalog([pipeline])
    assert catalog == Catalog({"p": pipeline})
    assert catalog == Catalog.from_dict(one_pipeline({"name": "b", "depends_on": ["a"]}, {"name": "a"}))
    with pytest.raises(CatalogError, match="does not match"):
        Catalog({"q": pipeline})
    with pytest.raises(CatalogError, match="duplicate pipeline"):
        Catalog([pipeline, pipeline])


def test_same_phase_in_several_pipelines_with_dependencies_in_other_order() -> None:
    catalog = Catalog.from_dict(
        {
            "pipelines": {
                "one": {"steps": [{"name": "a"}, {"name": "b"}, {"name": "c", "depends_on": ["a", "b"]}]},
                "two": {"steps": [{"name": "b"}, {"name": "a"}, {"name": "c", "depends_on": ["b", "a"]}]},
            }
        }
    )
    assert catalog.step_definition("c").depends_on == ("a", "b")
    assert catalog.phases == ("a", "b", "c")


def test_catalog_errors_are_definition_errors() -> None:
    with pytest.raises(DefinitionError):
        Catalog.from_dict({})


# --------------------------------------------------------------------------- validation

INVALID: list[tuple[str, Any, str, str | None, str | None]] = [
    # id, data, message fragment, error.pipeline, error.step
    ("not-a-mapping", ["pipelines"], "must be a mapping", None, None),
    ("missing-pipelines", {"pipeline": {}}, "no 'pipelines'", None, None),
    ("pipelines-not-mapping", {"pipelines": ["nlp"]}, "'pipelines' must be a mapping", None, None),
    ("no-pipelines", {"pipelines": {}}, "no pipelines", None, None),
    ("pipeline-not-mapping", {"pipelines": {"nlp": ["spellcheck"]}}, "must be a mapping", "nlp", None),
    ("pipeline-name-not-string", {"pipelines": {3: {"steps": [{"name": "a"}]}}}, "int 3", None, None),
    ("pipeline-unknown-key", {"pipelines": {"nlp": {"steps": [], "stpes": []}}}, "'stpes'", "nlp", None),
    ("no-steps-key", {"pipelines": {"nlp": {}}}, "no steps", "nlp", None),
    ("empty-steps", one_pipeline(name="nlp"), "no steps", "nlp", None),
    (
        "steps-not-list",
        {"pipelines": {"nlp": {"steps": "spellcheck"}}},
        "'steps' must be a list",
        "nlp",
        None,
    ),
    ("step-not-mapping", {"pipelines": {"p": {"steps": ["spellcheck"]}}}, "'spellcheck'", "p", None),
    ("step-without-name", one_pipeline({"depends_on": ["a"]}), "without a name", "p", None),
    ("step-name-not-string", one_pipeline({"name": 42}), "int 42", "p", None),
    ("step-name-empty", one_pipeline({"name": " "}), "must not be empty", "p", None),
    (
        "duplicate-step",
        one_pipeline({"name": "spellcheck"}, {"name": "nlp"}, {"name": "spellcheck"}),
        "duplicate step 'spellcheck'",
        "p",
        "spellcheck",
    ),
    (
        "unknown-dependency",
        one_pipeline({"name": "nlp", "depends_on": ["spellchek"]}),
        "'nlp' depends on unknown step 'spellchek'",
        "p",
        "nlp",
    ),
    (
        "self-dependency",
        one_pipeline({"name": "a"}, {"name": "nlp", "depends_on": ["a", "nlp"]}),
        "'nlp' depends on itself",
        "p",
        "nlp",
    ),
    (
        "two-cycle",
        one_pipeline({"name": "a", "depends_on": ["b"]}, {"name": "b", "depends_on": ["a"]}),
        "dependency cycle: a -> b -> a",
        "p",
        "a",
    ),
    (
        "three-cycle-behind-a-root",
        one_pipeline(
            {"name": "root"},
            {"name": "tail", "depends_on": ["y"]},
            {"name": "x", "depends_on": ["root", "z"]},
            {"name": "y", "depends_on": ["x"]},
            {"name": "z", "depends_on": ["y"]},
        ),
        "dependency cycle: x -> z -> y -> x",
        "p",
        "x",
    ),
    ("deadline-zero", one_pipeline({"name": "a", "deadline_seconds": 0}), "deadline_seconds", "p", "a"),
    ("deadline-negative", one_pipeline({"name": "a", "deadline_seconds": -5}), "-5", "p", "a"),
    ("deadline-string", one_pipeline({"name": "a", "deadline_seconds": "600"}), "'600'", "p", "a"),
    ("deadline-bool", one_pipeline({"name": "a", "deadline_seconds": True}), "True", "p", "a"),
    ("deadline-inf", one_pipeline({"name": "a", "deadline_seconds": float("inf")}), "inf", "p", "a"),
    ("deadline-nan", one_pipeline({"name": "a", "deadline_seconds": float("nan")}), "nan", "p", "a"),
    (
        "unknown-step-key",
        one_pipeline({"name": "a", "timeout": 5}),
        "unknown key 'timeout' in step 'a'",
        "p",
        "a",
    ),
    (
        "depends-on-string",
        one_pipeline({"name": "a"}, {"name": "b", "depends_on": "a"}),
        "depends_on must be a list",
        "p",
        "b",
    ),
    (
        "dependency-not-string",
        one_pipeline({"name": "b", "depends_on": [1]}),
        "got 1",
        "p",
        "b",
    ),
    (
        "repeated-dependency",
        one_pipeline({"name": "a"}, {"name": "b", "depends_on": ["a", "a"]}),
        "dependency 'a' more than once",
        "p",
        "b",
    ),
    (
        "phase-with-different-dependencies",
        {
            "pipelines": {
                "first": {"steps": [{"name": "a"}, {"name": "b", "depends_on": ["a"]}]},
                "second": {"steps": [{"name": "a"}, {"name": "b"}]},
            }
        },
        "phase 'b' depends on [] here but on ['a'] in pipeline 'first'",
        "second",
        "b",
    ),
]


@pytest.mark.parametrize(
    ("data", "fragment", "pipeline", "step"),
    [pytest.param(*case[1:], id=case[0]) for case in INVALID],
)
def test_from_dict_rejects(data: Any, fragment: str, pipeline: str | None, step: str | None) -> None:
    with pytest.raises(CatalogError) as excinfo:
        Catalog.from_dict(data)
    error = excinfo.value
    assert fragment in str(error)
    assert error.pipeline == pipeline
    assert error.step == step
    if pipeline is not None:
        assert f"pipeline {pipeline}" in str(error)


@pytest.mark.parametrize(
    ("build", "fragment"),
    [
        (lambda: Step(""), "must not be empty"),
        (lambda: Step("a", ("b", "b")), "more than once"),
        (lambda: Step("a", ["b"]), "must be a tuple"),  # type: ignore[arg-type]
        (lambda: Step("a", deadline_seconds=-1.0), "deadline_seconds"),
        (lambda: Pipeline("p", ()), "no steps"),
        (lambda: Pipeline("p", (Step("a"), Step("a"))), "duplicate step 'a'"),
        (lambda: Pipeline("p", (Step("a", ("a",)),)), "depends on itself"),
        (lambda: Pipeline("p", (Step("a", ("b",)),)), "unknown step 'b'"),
        (lambda: Pipeline("p", (Step("a", ("b",)), Step("b", ("a",)))), "cycle"),
        (lambda: Pipeline("p", [Step("a")]), "must be a tuple"),  # type: ignore[arg-type]
    ],
)
def test_direct_construction_is_validated(build: Any, fragment: str) -> None:
    with pytest.raises(CatalogError, match=fragment):
        build()


# --------------------------------------------------------------------------- files

TOML_TEXT = """
title = "ignored top-level key"

[[pipelines.cj_assessment.steps]]
name = "spellcheck"

[[pipelines.cj_assessment.steps]]
name = "cj_assessment"
depends_on = ["spellcheck"]
deadline_seconds = 600
"""

YAML_TEXT = """
pipelines:
  cj_assessment:
    steps:
      - name: spellcheck
      - name: cj_assessment
        depends_on: [spellcheck]
        deadline_seconds: 600
"""

EXPECTED_FILE_CATALOG = Catalog.from_dict(
    one_pipeline(
        {"name": "spellcheck"},
        {"name": "cj_assessment", "depends_on": ["spellcheck"], "deadline_seconds": 600.0},
        name="cj_assessment",
    )
)


@pytest.mark.parametrize(
    ("filename", "text"),
    [("catalog.toml", TOML_TEXT), ("catalog.yaml", YAML_TEXT), ("catalog.YML", YAML_TEXT)],
)
def test_load_files(tmp_path: Path, filename: str, text: str) -> None:
    path = tmp_path / filename
    path.write_text(text, encoding="utf-8")
    catalog = Catalog.from_file(path)
    assert catalog == EXPECTED_FILE_CATALOG
    assert catalog.get("cj_assessment").step("cj_assessment").deadline_seconds == 600.0
    loader = Catalog.from_toml if filename.endswith(".toml") else Catalog.from_yaml
    assert loader(str(path)) == EXPECTED_FILE_CATALOG


@pytest.mark.parametrize(
    ("filename", "text", "loader"),
    [
        ("bad.toml", "[[pipelines.p.steps]\nname = ", Catalog.from_toml),
        ("bad.yaml", "pipelines: {p: [unclosed", Catalog.from_yaml),
        ("bad.yaml", "pipelines:\n  p:\n    steps:\n  - name: x\n    bad: [", Catalog.from_yaml),
    ],
)
def test_broken_files_wrap_the_parser_error(tmp_path: Path, filename: str, text: str, loader: Any) -> None:
    path = tmp_path / filename
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CatalogError, match="cannot parse") as excinfo:
        loader(path)
    assert filename in str(excinfo.value)
    assert excinfo.value.__cause__ is not None


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "catalog.toml"
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(CatalogError, match="cannot parse") as excinfo:
        Catalog.from_toml(path)
    assert isinstance(excinfo.value.__cause__, UnicodeDecodeError)


@pytest.mark.parametrize("filename", ["missing.toml", "missing.yaml"])
def test_missing_file(tmp_path: Path, filename: str) -> None:
    with pytest.raises(CatalogError, match="cannot read") as excinfo:
        Catalog.from_file(tmp_path / filename)
    assert filename in str(excinfo.value)
    assert isinstance(excinfo.value.__cause__, FileNotFoundError)


def test_unsupported_suffix(tmp_path: Path) -> None:
    path = tmp_path / "catalog.json"
    path.write_text("{}", encoding="utf-8")
    with pytest.raises(CatalogError, match=r"\.toml, \.yaml or \.yml"):
        Catalog.from_file(path)


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just a string\n"])
def test_yaml_file_that_is_not_a_mapping(tmp_path: Path, text: str) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CatalogError, match="must contain a mapping"):
        Catalog.from_yaml(path)


def test_invalid_file_content_names_the_file_and_keeps_context(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(
        textwrap.dedent(
            """
            pipelines:
              nlp:
                steps:
                  - name: nlp
                    depends_on: [spellcheck]
            """
        ),
        encoding="utf-8",
    )
    with pytest.raises(CatalogError, match="unknown step 'spellcheck'") as excinfo:
        Catalog.from_file(path)
    assert str(path) in str(excinfo.value)
    assert excinfo.value.pipeline == "nlp"
    assert excinfo.value.step == "nlp"


# --------------------------------------------------------------------------- properties

NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_0123456789", min_size=1, max_size=8)


@st.composite
def random_dags(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Steps in a random declaration order; step i only depends on steps j < i (a DAG)."""
    names = draw(st.lists(NAMES, min_size=1, max_size=12, unique=True))
    steps = []
    for i, name in enumerate(names):
        deps = draw(st.lists(st.sampled_from(names[:i]), unique=True)) if i else []
        steps.append({"name": name, "depends_on": deps})
    return draw(st.permutations(steps))


def reference_plan_order(steps: list[dict[str, Any]]) -> list[str]:
    """Obvious O(n²) model: repeatedly take the first declared step whose deps are done."""
    done: list[str] = []
    while len(done) < len(steps):
        chosen = next(s for s in steps if s["name"] not in done and all(d in done for d in s["depends_on"]))
        done.append(chosen["name"])
    return done


def ancestors(steps: list[dict[str, Any]], name: str) -> set[str]:
    deps = {s["name"]: s["depends_on"] for s in steps}
    seen: set[str] = set()
    stack = list(deps[name])
    while stack:
        current = stack.pop()
        if current not in seen:
            seen.add(current)
            stack.extend(deps[current])
    return seen


@given(random_dags())
@settings(max_examples=200, deadline=None)
def test_plan_order_is_a_deterministic_topological_order(steps: list[dict[str, Any]]) -> None:
    pipeline = Catalog.from_dict(one_pipeline(*steps)).get("p")
    order = pipeline.step_names
    assert sorted(order) == sorted(s["name"] for s in steps)
    position = {name: i for i, name in enumerate(order)}
    for step in steps:
        for dep in step["depends_on"]:
            assert position[dep] < position[step["name"]]
    assert list(order) == reference_plan_order(steps)
    # Same input, built again (also from copies with fresh objects) -> same output.
    again = Catalog.from_dict(json.loads(json.dumps(one_pipeline(*steps)))).get("p")
    assert again == pipeline
    assert again.step_names == order
    assert pipeline.final_step == order[-1]
    assert pipeline.roots == tuple(name for name in order if not pipeline.step(name).depends_on)


@given(random_dags())
@settings(max_examples=200, deadline=None)
def test_dependents_is_the_transitive_closure(steps: list[dict[str, Any]]) -> None:
    pipeline = Catalog.from_dict(one_pipeline(*steps)).get("p")
    order = pipeline.step_names
    for step in steps:
        name = step["name"]
        expected = {other["name"] for other in steps if name in ancestors(steps, other["name"])}
        assert set(pipeline.dependents(name)) == expected
        assert pipeline.dependents(name) == tuple(n for n in order if n in expected)
        assert set(pipeline.dependencies(name)) == set(step["depends_on"])
        assert pipeline.dependencies(name) == tuple(n for n in order if n in step["depends_on"])


@given(random_dags(), st.data())
@settings(max_examples=200, deadline=None)
def test_pruning_partitions_the_plan(steps: list[dict[str, Any]], data: st.DataObject) -> None:
    pipeline = Catalog.from_dict(one_pipeline(*steps)).get("p")
    completed = data.draw(st.sets(st.sampled_from([s["name"] for s in steps] + ["elsewhere"])))
    plan = pipeline.plan(completed)
    assert plan.pruned == tuple(n for n in pipeline.step_names if n in completed)
    assert plan.to_run_names == tuple(n for n in pipeline.step_names if n not in completed)
    assert plan.pipeline is pipeline


@st.composite
def random_cyclic_graphs(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A random DAG plus one back edge: an ancestor of some step is made to depend on it."""
    steps = draw(random_dags().filter(lambda s: any(step["depends_on"] for step in s)))
    with_deps = [step for step in steps if step["depends_on"]]
    target = draw(st.sampled_from(with_deps))
    ancestor = draw(st.sampled_from(sorted(ancestors(steps, target["name"]))))
    for step in steps:
        if step["name"] == ancestor:
            step["depends_on"] = [*step["depends_on"], target["name"]]
    return steps


@given(random_cyclic_graphs())
@settings(max_examples=200, deadline=None)
def test_back_edge_raises_cycle_error_listing_a_real_cycle(steps: list[dict[str, Any]]) -> None:
    with pytest.raises(CatalogError, match="cycle") as excinfo:
        Catalog.from_dict(one_pipeline(*steps))
    problem = excinfo.value.problem
    path = problem.split("dependency cycle: ", 1)[1].split(" (", 1)[0].split(" -> ")
    assert len(path) >= 3
    assert path[0] == path[-1]
    assert len(set(path[:-1])) == len(path) - 1
    deps = {s["name"]: s["depends_on"] for s in steps}
    for current, nxt in itertools.pairwise(path):
        assert nxt in deps[current]
    assert excinfo.value.step == path[0]
    assert excinfo.value.pipeline == "p"


def test_plan_order_is_independent_of_the_hash_seed() -> None:
    script = textwrap.dedent(
        """
        import json, random
        from pipeline_state import Catalog
        rng = random.Random(1234)
        names = [f"step_{rng.randrange(10**6)}_{i}" for i in range(40)]
        steps = [{"name": n, "depends_on": rng.sample(names[:i], k=min(i, rng.randrange(4)))}
                 for i, n in enumerate(names)]
        rng.shuffle(steps)
        catalog = Catalog.from_dict({"pipelines": {"p": {"steps": steps}}})
        pipeline = catalog.get("p")
        print(json.dumps([pipeline.step_names, catalog.phases,
                          [pipeline.dependents(n) for n in pipeline.step_names]]))
        """
    )
    outputs = set()
    for seed in ("0", "1", "12345", "random"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        result = subprocess.run(
            [sys.executable, "-c", script],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        outputs.add(result.stdout)
    assert len(outputs) == 1


# --------------------------------------------------------------------------- to_dict


def test_to_dict_of_the_huleedu_catalog_is_its_declaration_and_round_trips() -> None:
    data = HULEEDU_CATALOG.to_dict()

    assert data == _HULEEDU_PROFILE  # declared in plan order already, no deadlines
    assert Catalog.from_dict(data) == HULEEDU_CATALOG
    assert load_packaged_profile_catalog("huleedu").to_dict() == data


def test_to_dict_keeps_deadlines_per_pipeline_plan_order_and_dependency_order() -> None:
    catalog = Catalog.from_dict(
        {
            "pipelines": {
                "release": {
                    "steps": [
                        {"name": "publish", "depends_on": ["thumbs", "captions"]},
                        {"name": "captions", "depends_on": ["ingest"], "deadline_seconds": 60},
                        {"name": "thumbs", "depends_on": ["ingest"]},
                        {"name": "ingest", "deadline_seconds": 5},
                    ]
                },
                "preview": {"steps": [{"name": "ingest", "deadline_seconds": 7.5}]},
            }
        }
    )

    data = catalog.to_dict()

    assert data == {
        "pipelines": {
            "release": {
                "steps": [
                    {"name": "ingest", "deadline_seconds": 5.0},
                    {"name": "captions", "depends_on": ["ingest"], "deadline_seconds": 60.0},
                    {"name": "thumbs", "depends_on": ["ingest"]},
                    {"name": "publish", "depends_on": ["thumbs", "captions"]},
                ]
            },
            "preview": {"steps": [{"name": "ingest", "deadline_seconds": 7.5}]},
        }
    }
    again = Catalog.from_dict(data)
    assert again == catalog
    assert again.names == catalog.names
    assert again.get("release").step_names == catalog.get("release").step_names
    assert again.get("release").step("publish").depends_on == ("thumbs", "captions")
    assert again.get("preview").step("ingest").deadline_seconds == 7.5
    # A copy: changing it leaves the catalog alone.
    data["pipelines"]["release"]["steps"].clear()
    assert catalog.get("release").step_names == ("ingest", "captions", "thumbs", "publish")


def test_to_dict_writes_files_the_loaders_read_back(tmp_path: Path) -> None:
    catalog = Catalog.from_dict(
        one_pipeline({"name": "a", "deadline_seconds": 30}, {"name": "b", "depends_on": ["a"]})
    )
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(catalog.to_dict()))
    (tmp_path / "c.json").write_text(json.dumps(catalog.to_dict()))

    assert Catalog.from_file(tmp_path / "c.yaml") == catalog
    assert Catalog.from_dict(json.loads((tmp_path / "c.json").read_text())) == catalog


@given(random_dags())
@settings(max_examples=200, deadline=None)
def test_to_dict_round_trips_random_dags(steps: list[dict[str, Any]]) -> None:
    catalog = Catalog.from_dict(one_pipeline(*steps))
    data = catalog.to_dict()
    assert Catalog.from_dict(data) == catalog
    assert Catalog.from_dict(json.loads(json.dumps(data))) == catalog
    assert Catalog.from_dict(data).to_dict() == data


@given(catalogs())
@settings(max_examples=200, deadline=None)
def test_to_dict_round_trips_generated_catalogs_with_deadlines(catalog: Catalog) -> None:
    again = Catalog.from_dict(catalog.to_dict())
    assert again == catalog
    for name, pipeline in catalog.pipelines.items():
        assert [s.deadline_seconds for s in again.get(name).steps] == [
            s.deadline_seconds for s in pipeline.steps
        ]
