"""The generated reference pages match a fresh render of the code, and say everything.

When a definition changes (a state, a trigger, a pipeline, a wire field, an error), the
committed page is stale and ``test_docs_generated_page_is_fresh`` fails with the command
that regenerates it.
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path

import attrs
import pytest

from pipeline_state import EventEnvelope, errors
from pipeline_state._asyncapi import asyncapi_document
from pipeline_state._asyncapi_kafka import DEAD_LETTER_HEADERS, ENVELOPE_HEADERS
from pipeline_state._cli import main as cli_main
from pipeline_state._diagrams import lifecycle_mermaid, pipeline_mermaid
from pipeline_state._docsgen import (
    ABSENT_LABEL,
    ELSEWHERE_LABEL,
    REGENERATE_COMMAND,
    main,
    render_lifecycles_page,
    render_pages,
    stale_pages,
)
from pipeline_state._lifecycle import ABSENT, LIFECYCLES, Lifecycle, Refusal, Refusals, Verdict
from pipeline_state.profiles.huleedu.catalog import HULEEDU_CATALOG
from pipeline_state.profiles.huleedu.events import TOPICS

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = render_pages()


def _mermaid_blocks(text: str) -> list[str]:
    return [block + "\n" for block in re.findall(r"^```mermaid\n(.*?)\n```$", text, re.S | re.M)]


@pytest.mark.parametrize("page", sorted(PAGES))
def test_docs_generated_page_is_fresh(page: str) -> None:
    committed = DOCS / page
    assert committed.is_file(), f"docs/{page} is missing: regenerate it with `{REGENERATE_COMMAND}`"
    text = committed.read_text(encoding="utf-8")
    if text != PAGES[page]:
        diff = "".join(
            list(
                difflib.unified_diff(
                    text.splitlines(keepends=True),
                    PAGES[page].splitlines(keepends=True),
                    f"docs/{page} (committed)",
                    f"docs/{page} (fresh render)",
                )
            )[:60]
        )
        pytest.fail(
            f"docs/{page} differs from a fresh render of the code; regenerate it with "
            f"`{REGENERATE_COMMAND}` (from the repository root) and commit it.\n{diff}"
        )


def test_docs_lifecycle_diagrams_are_the_cli_output(capsys: pytest.CaptureFixture[str]) -> None:
    """The site shows exactly what ``pipeline-state diagram batch|run|phase`` prints."""
    blocks = _mermaid_blocks(PAGES["reference/lifecycles.md"])
    assert len(blocks) == len(LIFECYCLES)
    for block, (name, lifecycle) in zip(blocks, LIFECYCLES.items(), strict=True):
        assert cli_main(["diagram", name]) == 0
        assert (
            capsys.readouterr().out.rstrip("\n")
            == block.rstrip("\n")
            == lifecycle_mermaid(lifecycle).rstrip("\n")
        )


def test_docs_pipeline_diagrams_cover_every_pipeline_of_the_profile() -> None:
    blocks = _mermaid_blocks(PAGES["reference/pipelines.md"])
    assert blocks == [pipeline_mermaid(HULEEDU_CATALOG.get(name)) for name in HULEEDU_CATALOG.names]
    for name in HULEEDU_CATALOG.names:
        for step in HULEEDU_CATALOG.get(name).steps:
            for dep in step.depends_on:
                assert f"    {dep} --> {step.name}" in blocks[HULEEDU_CATALOG.names.index(name)]


def _cells(row: str) -> list[str]:
    return [cell.strip() for cell in row.strip().strip("|").split(" | ")]


def _rows(section: str) -> list[list[str]]:
    """The body rows of the first Markdown table in ``section``."""
    lines = [line for line in section.splitlines() if line.startswith("|")]
    return [_cells(line) for line in lines[2:]]


def _codes_in(cell: str) -> tuple[str, ...]:
    return tuple(code.replace("&#124;", "|") for code in re.findall(r"`([^`]*)`", cell))


def _one(cell: str) -> str:
    (code,) = _codes_in(cell)
    return code


def _subsections(page: str, name: str) -> dict[str, str]:
    """The ``### <Kind> of the <name> lifecycle`` subsections of a lifecycle's section."""
    found = dict(re.findall(rf"^### (\w+) of the {name} lifecycle\n(.*?)(?=^##)", page + "\n##", re.S | re.M))
    return {kind.lower(): text for kind, text in found.items()}


def _check_lifecycle_tables(page: str, lifecycle: Lifecycle) -> None:
    """Assert that the page's tables say exactly what ``lifecycle`` declares."""
    name = lifecycle.name
    parts = _subsections(page, name)
    assert list(parts) == ["states", "transitions", "guards", "effects", "refusals"][: len(parts)]

    states = _rows(parts["states"])
    assert [_one(row[0]) for row in states] == list(lifecycle.states), name
    for row in states:
        state = _one(row[0])
        assert ("initial" in row[1]) == (state == lifecycle.initial), (name, state)
        assert ("final" in row[1]) == lifecycle.is_final(state), (name, state)

    shown: list[tuple[str, tuple[str, ...], str, tuple[str, ...], tuple[str, ...], tuple[str, ...], str]] = []
    for trigger, sources, dest, guard_cell, effects, note in _rows(parts["transitions"]):
        before: tuple[str, ...] = ()
        after: tuple[str, ...] = ()
        for part in effects.split("; "):
            if part.startswith("before: "):
                before = _codes_in(part)
            elif part.startswith("after: "):
                after = _codes_in(part)
        origin = (ABSENT,) if sources.startswith(ABSENT_LABEL) else _codes_in(sources)
        shown.append((_one(trigger), origin, _one(dest), _codes_in(guard_cell), before, after, note))
    declared = [(t.trigger, t.sources, t.dest, t.guards, t.before, t.after) for t in lifecycle.transitions]
    assert [row[:6] for row in shown] == declared, name
    for line, t in zip(shown, lifecycle.transitions, strict=True):
        assert " ".join(t.doc.split()) in line[6], (name, t)
        alternatives = max(len(lifecycle.alternatives(s, t.trigger)) for s in t.sources)
        assert ("alternatives" in line[6]) == (alternatives > 1), (name, t)

    guards = _rows(parts.get("guards", ""))
    assert [_one(row[0]) for row in guards] == list(lifecycle.guards), name
    for guard_name, doc, verdict, reasons, users in guards:
        guard = lifecycle.guards[_one(guard_name)]
        assert doc == (" ".join(guard.doc.split()) or "—"), guard
        assert _one(verdict) == guard.verdict.value, guard
        assert _codes_in(reasons) == guard.reasons, guard
        assert ("examples" in reasons) == guard.open_reasons, guard
        expected = tuple(dict.fromkeys(t.trigger for t in lifecycle.transitions if guard.name in t.guards))
        assert _codes_in(users) == expected, guard

    effects_rows = _rows(parts.get("effects", ""))
    assert [_one(row[0]) for row in effects_rows] == list(lifecycle.effects), name
    for effect_name, doc, users in effects_rows:
        effect = lifecycle.effects[_one(effect_name)]
        assert doc == (" ".join(effect.doc.split()) or "—"), effect
        runs = re.findall(r"`(\w+)` \((before|after)\)", users)
        expected_runs = [
            (t.trigger, "before" if effect.name in t.before else "after")
            for t in lifecycle.transitions
            if effect.name in t.effects
        ]
        assert runs == list(dict.fromkeys(expected_runs)), effect

    refusals: dict[tuple[str, str], tuple[str, str, str]] = {}
    for trigger, state, verdict, reason, detail in _rows(parts["refusals"]):
        where = {ABSENT_LABEL: ABSENT, ELSEWHERE_LABEL: "*"}
        key = (_one(trigger), where[state] if state in where else _one(state))
        assert key not in refusals, key
        refusals[key] = (
            _one(verdict),
            "" if reason == "—" else _one(reason),
            "" if detail == "—" else _one(detail),
        )
    assert {trigger for trigger, _ in refusals} == set(lifecycle.triggers), name
    for trigger in lifecycle.triggers:
        assert (trigger, "*") in refusals, (name, trigger)
        for state in (ABSENT, *lifecycle.states):
            allowed = bool(lifecycle.alternatives(state, trigger))
            if allowed:
                assert (trigger, state) not in refusals, (name, trigger, state)
                continue
            refusal = lifecycle.refusal(state, trigger)
            answer = refusals.get((trigger, state), refusals[(trigger, "*")])
            assert answer == (refusal.verdict.value, refusal.reason, refusal.detail), (name, trigger, state)


def test_docs_every_state_transition_guard_effect_and_refusal_is_in_a_table() -> None:
    page = PAGES["reference/lifecycles.md"]
    for lifecycle in LIFECYCLES.values():
        _check_lifecycle_tables(page, lifecycle)
        assert " ".join(lifecycle.doc.split()) in page


def test_docs_lifecycle_tables_fail_when_the_page_and_the_definitions_disagree() -> None:
    batch, run, phase = (LIFECYCLES[name] for name in ("batch", "run", "phase"))
    start = next(t for t in batch.transitions if t.trigger == "start_run")
    finish = next(t for t in run.transitions if t.trigger == "finish")
    mutants = {
        "a guard's verdict": attrs.evolve(
            batch,
            guards={
                **batch.guards,
                "admitted": attrs.evolve(batch.guards["admitted"], verdict=Verdict.IGNORE),
            },
        ),
        "a transition's guards": attrs.evolve(
            batch,
            transitions=tuple(
                attrs.evolve(t, guards=("admitted", "plan_resolved")) if t is start else t
                for t in batch.transitions
            ),
        ),
        "an effect's timing": attrs.evolve(
            batch,
            transitions=tuple(
                attrs.evolve(t, before=(), after=("attach_prompt", "accept_run")) if t is start else t
                for t in batch.transitions
            ),
        ),
        "a refusal's reason": attrs.evolve(
            batch,
            refusals={**batch.refusals, "register": Refusals(Refusal(Verdict.IGNORE, "registered_twice"))},
        ),
        "the order of alternatives": attrs.evolve(
            run, transitions=(*(t for t in run.transitions if t is not finish), finish)
        ),
        "the order of states": attrs.evolve(phase, states=phase.states[::-1]),
    }
    for what, mutant in mutants.items():
        page = render_lifecycles_page({**LIFECYCLES, mutant.name: mutant})
        original = LIFECYCLES[mutant.name]
        try:
            _check_lifecycle_tables(page, original)
        except AssertionError:
            continue
        pytest.fail(f"the tables did not notice a changed {what}")


def test_docs_lifecycle_page_says_which_wire_values_are_never_entered() -> None:
    page = PAGES["reference/lifecycles.md"]
    phase = page.split("## Phase execution lifecycle", 1)[1]
    for value in ("in_progress", "skipped_by_user_config"):
        assert value not in LIFECYCLES["phase"].states
        assert f"`{value}`" in phase.split("### Transitions", 1)[0]
    assert "never enters them" in phase


def test_docs_wire_contract_lists_every_topic_and_field() -> None:
    page = PAGES["reference/wire-contract.md"]
    for topic, spec in TOPICS.items():
        assert f"| `{topic}` | [`{spec.model.__name__}`]" in page
        section = page.split(f"### `{spec.model.__name__}`", 1)[1].split("\n### ", 1)[0]
        assert f"topic `{topic}` · key `{spec.key_field}`" in section
        schema = spec.model.model_json_schema()
        for field in schema["properties"]:
            required = "yes" if field in schema.get("required", ()) else "no"
            assert re.search(rf"^\| `{field}` \| .+ \| {required} \|", section, re.M), (topic, field)
    for field in EventEnvelope.model_fields:
        assert f"| `{field}` |" in page.split("## Envelope", 1)[1].split("## Inbound", 1)[0]


def test_docs_asyncapi_page_shows_every_operation_and_the_json_is_the_document() -> None:
    document = asyncapi_document()
    assert json.loads(PAGES["reference/asyncapi.json"]) == document
    page = PAGES["reference/asyncapi.md"]
    assert "[`asyncapi.json`](asyncapi.json)" in page
    for operation in document["operations"].values():
        topic = operation["channel"]["$ref"].removeprefix("#/channels/")
        message = document["components"]["messages"]["DeadLetter" if topic.endswith(".DLQ") else topic]
        row = f"| `{topic}` | {operation['action']} ({operation['tags'][0]['name']}) | "
        (line,) = [line for line in page.splitlines() if line.startswith(row)]
        assert f"`{message['name']}`" in line
        if topic.endswith(".DLQ"):
            assert line.endswith("| The original record's key, unchanged. |")
            continue
        key = message["bindings"]["kafka"]["x-key-location"].removeprefix("$message.payload#/")
        assert line.endswith(f"| `{key.replace('/', '.')}` |")
    headers = page.split("## Headers", 1)[1].split("\n## ", 1)[0]
    for name in ENVELOPE_HEADERS:
        assert f"| `{name}` |" in headers
    letters = page.split("## Dead letters", 1)[1].split("\n## ", 1)[0]
    for name in DEAD_LETTER_HEADERS:
        assert f"| `{name}` |" in letters


def test_docs_error_reference_has_the_tree_and_every_error() -> None:
    page = PAGES["reference/errors.md"]
    assert "PipelineStateError\n├── DefinitionError" in page
    for name in errors.__all__:
        assert f"| [`{name}`][pipeline_state.errors.{name}] |" in page


def test_docs_generated_pages_start_with_the_banner() -> None:
    for page, text in PAGES.items():
        if page.endswith(".json"):  # a document a page links to: JSON has no comments
            continue
        assert text.startswith("<!-- Generated from the code by"), page
        assert REGENERATE_COMMAND in text.splitlines()[0]


def test_docs_docsgen_check_and_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    assert stale_pages(docs) == sorted(PAGES, key=list(PAGES).index)
    assert main(["--check", "--docs-dir", str(docs)]) == 1
    assert REGENERATE_COMMAND in capsys.readouterr().err

    assert main(["--docs-dir", str(docs)]) == 0
    assert stale_pages(docs) == []
    assert main(["--check", "--docs-dir", str(docs)]) == 0

    page = docs / "reference" / "lifecycles.md"
    page.write_text(page.read_text(encoding="utf-8").replace("start_run", "begin_run"), encoding="utf-8")
    assert stale_pages(docs) == ["reference/lifecycles.md"]
    capsys.readouterr()
    assert main(["--docs-dir", str(docs)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {page}"
    assert stale_pages(docs) == []


def test_docs_docsgen_refuses_a_missing_docs_folder(tmp_path: Path) -> None:
    assert main(["--docs-dir", str(tmp_path / "nowhere")]) == 2
