"""Hostile input, found by an attack: user-supplied catalogs and profiles, and what is generated from them.

Tests whose docstring starts "Was a defect" failed before the fix that came with them and
say what the behaviour is now; "Held" ones are attacks the code withstood, kept as guards.
"""

from __future__ import annotations

import asyncio
import re
import textwrap
from pathlib import Path as FilePath
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from paths_support import check_steps, reference_problems, replay_memory

from pipeline_state import Catalog, CommandSpec, InMemoryRuntime, Profile, asyncapi_document
from pipeline_state._cli import main
from pipeline_state._docsgen import render_pipelines_page
from pipeline_state._profile_reference import render_profile_page
from pipeline_state.errors import CatalogError, DefinitionError, PipelineStateError
from pipeline_state.ports import LAST_DEPENDENCY
from pipeline_state.profiles.huleedu.events import (
    PhaseInitiateCommand,
    StudentMatchingInitiateCommandV1,
    Topic,
)
from pipeline_state.testing import Envelopes, ProfileMachine, coverage, explore
from pipeline_state.testing.asyncapi import refs_in, resolve

__all__: list[str] = []


def _profile(pipelines: dict[str, Any], **kw: Any) -> Profile:
    catalog = Catalog.from_dict({"pipelines": pipelines})
    commands = {p: CommandSpec(f"media.t{i}.v1", PhaseInitiateCommand) for i, p in enumerate(catalog.phases)}
    kw.setdefault("fan_in", LAST_DEPENDENCY)
    return Profile(
        name="media", catalog=catalog, source_service="media_orchestrator", phase_commands=commands, **kw
    )


async def _run_once(profile: Profile, pipeline: str) -> list[str]:
    """Register, provision, request ``pipeline`` and answer every command; return the
    problems seen (empty when the run completed once and the batch is ready again)."""
    rt, env = InMemoryRuntime(profile), Envelopes(profile=profile)
    await rt.deliver(*env.register("s1", item_ids=["ep-1", "ep-2"], category="MEDIA", prompt=None))
    await rt.deliver(*env.provisioned("s1", ["ep-1", "ep-2"]))
    problems: list[str] = []
    try:
        pending = await rt.deliver(*env.request("s1", pipeline))
    except PipelineStateError as exc:
        return [f"the request for the accepted pipeline cannot be sent or handled: {exc}"]
    except Exception as exc:
        return [f"the request raised {type(exc).__name__}: {exc}"]
    for _ in range(1000):
        commands = [m for m in pending if env.phase_of(m)]
        if not commands:
            break
        pending.remove(commands[0])
        try:
            pending += await rt.deliver(*env.answer(commands[0]))
        except PipelineStateError as exc:
            problems.append(f"the outcome of phase {env.phase_of(commands[0])!r} cannot be delivered: {exc}")
            break
    state = await rt.service.get_batch("s1")
    if state.active_run is not None or len(state.history) != 1:
        problems.append(f"run did not complete: status {state.status.value}, history {len(state.history)}")
    return problems


# ---------------------------------------------------------------- names the wire cannot carry


@pytest.mark.parametrize(
    "phase", ["x" * 201, "line\nbreak", "nul\x00char"], ids=["201-chars", "newline", "nul"]
)
def test_phase_name_the_wire_cannot_carry_is_refused_at_load(phase: str) -> None:
    """Was a defect: A phase name longer than MAX_ID_LENGTH (200) or with a control character can
    never come back in an outcome (``phase_name`` is an ``Id`` on the wire), so a run of it
    is accepted, its command dispatched, and it then blocks its batch in
    ``processing_pipelines`` for ever (this profile has no deadline). Correct: the catalog
    (or the profile) refuses the name at load time with a CatalogError/DefinitionError;
    if it is accepted, the run must complete."""
    try:
        profile = _profile({"reindex": {"steps": [{"name": phase}]}})
    except (CatalogError, DefinitionError):
        return
    assert asyncio.run(_run_once(profile, "reindex")) == []


def test_pipeline_name_the_wire_cannot_carry_is_refused_at_load() -> None:
    """Was a defect: A pipeline name of 201 characters is accepted, but ``requested_pipeline`` is
    an ``Id`` (at most 200): the pipeline can never be requested. Correct: refused at load
    with a CatalogError naming the bound."""
    name = "p" * 201
    try:
        profile = _profile({name: {"steps": [{"name": "s"}]}})
    except (CatalogError, DefinitionError):
        return
    assert asyncio.run(_run_once(profile, name)) == []


# ---------------------------------------------------------------- deadlines out of range


@pytest.mark.parametrize("where", ["catalog", "profile.deadlines", "default_deadline_seconds"])
def test_huge_deadline_is_refused_at_load_not_at_every_request(where: str) -> None:
    """Was a defect: ``deadline_seconds=1e12`` (positive and finite, so accepted) makes every
    request of the pipeline raise ``OverflowError: date value out of range`` when the phase
    is dispatched (now + deadline is past datetime.max): a traceback at run time, the run
    never starts. Correct: a deadline the clock cannot add is refused when the catalog or
    profile is built (CatalogError/DefinitionError), or the request runs normally."""
    step: dict[str, Any] = {"name": "s"}
    kw: dict[str, Any] = {}
    if where == "catalog":
        step["deadline_seconds"] = 1e12
    elif where == "profile.deadlines":
        kw["deadlines"] = {"s": 1e12}
    else:
        kw["default_deadline_seconds"] = 1e12
    try:
        profile = _profile({"p": {"steps": [step]}}, **kw)
    except (CatalogError, DefinitionError):
        return
    assert asyncio.run(_run_once(profile, "p")) == []


# ---------------------------------------------------------------- YAML duplicates dropped


def test_yaml_catalog_with_a_duplicate_pipeline_is_refused(tmp_path: FilePath) -> None:
    """Was a defect: A YAML catalog that defines pipeline ``a`` twice loads silently with only the
    second definition (``yaml.safe_load`` keeps the last duplicate key): the first
    definition is lost without a word. TOML refuses the same file. Correct: CatalogError
    naming the duplicate key (the contract: a duplicate definition is an error)."""
    path = tmp_path / "dup.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            pipelines:
              a:
                steps:
                  - name: ingest
              a:
                steps:
                  - name: index
            """
        )
    )
    with pytest.raises(CatalogError):
        Catalog.from_file(path)


def test_yaml_step_with_a_duplicate_key_is_refused(tmp_path: FilePath) -> None:
    """Was a defect: ``{name: ingest, name: index}`` in a YAML step loads as a step ``index``;
    the step ``ingest`` the author wrote first is dropped silently. Correct: CatalogError."""
    path = tmp_path / "dup_step.yaml"
    path.write_text("pipelines:\n  a:\n    steps:\n      - name: ingest\n        name: index\n")
    with pytest.raises(CatalogError):
        Catalog.from_file(path)


# ---------------------------------------------------------------- --profile tracebacks


_BAD_MODULES = {
    "raises_at_import": "raise RuntimeError('boom at import')\n",
    "syntax_error": "def broken(:\n",
    "factory_raises": "def PROFILE():\n    raise ValueError('factory failed')\n",
    "factory_needs_args": "def PROFILE(catalog):\n    return catalog\n",
}


@pytest.mark.parametrize("kind", sorted(_BAD_MODULES))
@pytest.mark.parametrize("command", ["demo", "paths"])
def test_bad_profile_spec_gives_one_line_not_a_traceback(
    kind: str, command: str, tmp_path: FilePath, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was a defect: ``pipeline-state demo|paths --profile FILE.py:PROFILE`` where the file raises
    at import, has a syntax error, or names a factory that raises or needs arguments:
    ``load_profile`` (pipeline_state/profiles/__init__.py) only turns ``ImportError`` into
    a DefinitionError, so everything else escapes ``main`` as a traceback (exit 1 from
    the interpreter). Correct: one ``error: ...`` line on stderr naming the spec and the
    cause, and the bad-input exit code, 2."""
    module = tmp_path / f"{kind}.py"
    module.write_text(_BAD_MODULES[kind])
    try:
        code = main([command, "--profile", f"{module}:PROFILE"])
    except Exception as exc:
        pytest.fail(f"traceback instead of one line: {type(exc).__name__}: {exc}")
    err = capsys.readouterr().err
    assert code == 2  # a bad spec is bad input for both commands
    assert len(err.strip().splitlines()) == 1, err
    assert "PROFILE" in err, err


def test_relative_module_spec_gives_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """Was a defect: ``--profile .relative:NAME`` makes importlib raise TypeError ("the 'package'
    argument is required"), which escapes as a traceback. Correct: exit 2, one line."""
    try:
        code = main(["demo", "--profile", ".relative:NAME"])
    except Exception as exc:
        pytest.fail(f"traceback instead of one line: {type(exc).__name__}: {exc}")
    assert code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


# ---------------------------------------------------------------- generated output injection


def test_diagram_pipelines_name_cannot_inject_mermaid(
    tmp_path: FilePath, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was a defect: ``pipeline-state diagram pipelines`` writes ``%% pipeline {name}`` raw
    (pipeline_state/_cli.py:_diagram): a pipeline name holding a newline ends the Mermaid
    comment and its next line is read as Mermaid (here a ``click`` directive with a
    javascript: URL). Correct: such a name is refused when the catalog loads (exit != 0),
    or the comment line is written on one line (whitespace collapsed as the labels are)."""
    path = tmp_path / "evil.yaml"
    path.write_text('pipelines:\n  "p\\nclick s javascript:alert(1)":\n    steps:\n      - name: s\n')
    code = main(["diagram", "pipelines", "--catalog", str(path)])
    out = capsys.readouterr().out
    if code != 0:
        return
    assert not any(line.startswith("click ") for line in out.splitlines()), out


def test_pipelines_page_anchors_are_unique_and_not_empty() -> None:
    """Was a defect: render_pipelines_page (pipeline_state/_docsgen.py:_anchor) derives each
    section's id from the name by replacing non-[0-9a-z] runs with ``-``: pipelines
    ``a-b`` and ``a b`` both get ``#a-b`` (two sections with one id; the summary table
    links both to the first) and a name without ASCII letters (``ä``) gets an empty id
    (``{ # }``, link ``(#)``). Correct: one distinct, non-empty anchor per pipeline."""
    profile = _profile(
        {
            "a-b": {"steps": [{"name": "x"}]},
            "a b": {"steps": [{"name": "y"}]},
            "ä": {"steps": [{"name": "z"}]},
        }
    )
    page = render_pipelines_page(profile)
    anchors = re.findall(r"^## .* \{ #(.*) \}$", page, flags=re.M)
    assert len(anchors) == 3
    assert all(a.strip() for a in anchors), anchors
    assert len(set(anchors)) == 3, anchors


def test_profile_page_escapes_pipes_in_table_cells() -> None:
    """Was a defect (low): render_profile_page (pipeline_state/_profile_reference.py:_code) writes
    phase names raw into table cells, while _docsgen._code escapes ``|`` as ``&#124;``
    "so that it survives a Markdown table cell". A phase ``x|y`` splits the commands
    table row into one more cell than the header (GFM). Correct: the same escaping as
    _docsgen (every row has as many cells as its header)."""
    page = render_profile_page(_profile({"p": {"steps": [{"name": "x|y"}]}}))
    rows = [line for line in page.splitlines() if line.startswith("| `x")]
    assert rows, page
    for row in rows:
        assert "x|y" not in row, row


def test_asyncapi_refs_are_json_pointers_that_resolve() -> None:
    """Was a defect: The profile accepts a command topic with ``/`` or ``~`` (only length and
    control characters are checked), and asyncapi_document (pipeline_state/_asyncapi.py)
    puts the topic raw into ``$ref``s (``#/channels/media/s~x.v1``), which are JSON
    Pointers: ``/`` must be written ``~1`` and ``~`` ``~0``. The refs then point nowhere
    (the kit's own ``resolve`` fails on them). Correct: escape each topic as a JSON Pointer
    token, or refuse topic names Kafka itself refuses ([A-Za-z0-9._-]) when the profile
    is built."""
    try:
        catalog = Catalog.from_dict({"pipelines": {"p": {"steps": [{"name": "s"}]}}})
        profile = Profile(
            name="w", catalog=catalog, phase_commands={"s": CommandSpec("media/s~x.v1", PhaseInitiateCommand)}
        )
    except DefinitionError:
        return
    document = asyncapi_document(profile)
    broken = []
    for ref in refs_in(document):
        try:
            resolve(document, ref)
        except AssertionError as exc:
            broken.append(str(exc))
    assert not broken, broken


# ---------------------------------------------------------------- attacks that held


@pytest.mark.parametrize(
    "pipelines",
    [
        {"p": {"steps": [{"name": "a", "depends_on": ["b"]}, {"name": "b", "depends_on": ["a"]}]}},
        {"p": {"steps": [{"name": "a", "depends_on": ["a"]}]}},
        {"p": {"steps": [{"name": "a"}, {"name": "a"}]}},
        {"p": {"steps": [{"name": ""}]}},
        {"p": {"steps": [{"name": "   "}]}},
        {"": {"steps": [{"name": "a"}]}},
        {"p": {"steps": []}},
        {"p": {"steps": [{"name": "a", "depends_on": ["nope"]}]}},
        {"manual:x": {"steps": [{"name": "a"}]}},
        {"p": {"steps": [{"name": "manual:a"}]}},
        {"p": {"steps": [{"name": "a", "depends_on": "b"}, {"name": "b"}]}},
        {"p": {"steps": [{"name": "a", "deadline_seconds": float("nan")}]}},
        {"p": {"steps": [{"name": "a", "deadline_seconds": True}]}},
        {"p": {"steps": [{"name": "a", "extra": 1}]}},
        {
            "p": {"steps": [{"name": "a"}, {"name": "b", "depends_on": ["a"]}]},
            "q": {"steps": [{"name": "a"}, {"name": "b"}]},
        },
    ],
)
def test_bad_catalogs_are_refused_at_load(pipelines: dict[str, Any]) -> None:
    """Held: cycles, self-dependency, duplicates, empty names, no steps, unknown deps, the
    reserved ``manual:`` prefix (of a pipeline or a step), wrong types, bad deadlines,
    unknown keys and one phase with two dependency sets are all refused with a CatalogError
    when loaded."""
    with pytest.raises(CatalogError):
        Catalog.from_dict({"pipelines": pipelines})


def test_mermaid_labels_escape_metacharacters(tmp_path: FilePath, capsys: pytest.CaptureFixture[str]) -> None:
    """Held: quotes, arrows, HTML and keywords in step names stay inside their labels."""
    path = tmp_path / "meta.yaml"
    path.write_text(
        "pipelines:\n  p:\n    steps:\n"
        "      - name: 'a\"] --> b[\"c'\n"
        "      - name: '<script>alert(1)</script>'\n        depends_on: ['a\"] --> b[\"c']\n"
        "      - name: end\n"
    )
    assert main(["diagram", "p", "--catalog", str(path)]) == 0
    out = capsys.readouterr().out
    assert "<script>" not in out
    assert '"a"]' not in out
    assert re.search(r"^\s+n_end\[", out, flags=re.M)


@pytest.mark.parametrize("shape", ["chain", "fan_in", "complete"])
def test_large_dags_stay_bounded(shape: str) -> None:
    """Held: a 200-phase chain, a 199-wide fan-in and a 120-phase complete DAG load and run
    to exactly one completion in well under a few seconds."""
    if shape == "chain":
        steps = [{"name": "p0"}] + [{"name": f"p{i}", "depends_on": [f"p{i - 1}"]} for i in range(1, 200)]
    elif shape == "fan_in":
        steps = [{"name": f"r{i}"} for i in range(199)] + [
            {"name": "sink", "depends_on": [f"r{i}" for i in range(199)]}
        ]
    else:
        steps = [{"name": f"q{i}", "depends_on": [f"q{j}" for j in range(i)]} for i in range(120)]
    profile = _profile({"big": {"steps": steps}})
    assert asyncio.run(_run_once(profile, "big")) == []


def _hostile_profile() -> Profile:
    steps = [
        {"name": 'ä|b"<x>', "deadline_seconds": 30},
        {"name": "y:manual", "depends_on": ['ä|b"<x>']},
        {"name": "--> %% {}", "depends_on": ['ä|b"<x>']},
        {"name": "end", "depends_on": ["y:manual", "--> %% {}"]},
    ]
    return _profile(
        {"dia`mond": {"steps": steps}, "short": {"steps": steps[:2]}},
        group_matching=CommandSpec(Topic.STUDENT_MATCHING.value, StudentMatchingInitiateCommandV1),
        max_resends=1,
        max_items_per_batch=2,
        max_command_bytes=8192 + 2 * 4000,
    )


async def test_paths_of_a_hostile_named_diamond_agree_with_the_reference() -> None:
    """Held: on a custom diamond catalog whose valid names carry unicode, quotes, pipes,
    colons, ``-->``, ``%%``, ``{}`` and a Mermaid keyword, the path generator explores
    to the end with no crash or broken invariant, reaches everything but ``abort``, and
    every shortest path replays in memory as decided and agrees with the reference model."""
    exploration = explore(_hostile_profile(), intake_profile=None)
    assert exploration.complete
    assert not exploration.crashes
    assert not exploration.violations
    assert [str(t) for t in coverage(exploration).missing] == ["phase: abort dispatch_initiated -> failed"]
    for path in exploration.maximal_paths():
        _, problems = reference_problems(path)
        assert not problems, f"{problems}\n{path.describe()}"
        check_steps(path, await replay_memory(path), "memory")


_Machine = ProfileMachine.for_profile(
    _profile(
        {
            "full": {
                "steps": [
                    {"name": "a", "deadline_seconds": 5},
                    {"name": "b", "depends_on": ["a"]},
                    {"name": "c", "depends_on": ["a"]},
                    {"name": "d", "depends_on": ["b", "c"]},
                ]
            },
            "part": {"steps": [{"name": "a", "deadline_seconds": 5}, {"name": "c", "depends_on": ["a"]}]},
        }
    )
)
TestHeldCustomCatalogPromises = _Machine.TestCase
TestHeldCustomCatalogPromises.settings = settings(
    max_examples=15, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
"""Held: every accepted run of a custom diamond catalog completes exactly once, the batch is
ready after, a redelivery is a duplicate (ProfileMachine's invariants)."""
