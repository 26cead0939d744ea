"""The generated reference pages match a fresh render of the code, and say everything.

When a definition changes (a state, a trigger, a pipeline, a wire field, an error), the
committed page is stale and ``test_docs_generated_page_is_fresh`` fails with the command
that regenerates it.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import pytest

from pipeline_state import HULEEDU_CATALOG, TOPICS, errors
from pipeline_state.cli import main as cli_main
from pipeline_state.diagrams import lifecycle_mermaid, pipeline_mermaid, transition_table
from pipeline_state.docsgen import REGENERATE_COMMAND, main, render_pages, stale_pages
from pipeline_state.events import EventEnvelope
from pipeline_state.lifecycle import LIFECYCLES

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


def test_docs_every_state_and_transition_is_in_a_table() -> None:
    page = PAGES["reference/lifecycles.md"]
    for lifecycle in LIFECYCLES.values():
        section = page.split(f"### States of the {lifecycle.name} lifecycle", 1)[1]
        states, transitions = section.split(f"### Transitions of the {lifecycle.name} lifecycle", 1)
        for state in lifecycle.states:
            assert re.search(rf"^\| `{state}` \|", states, re.M), (lifecycle.name, state)
        rows = re.findall(r"^\| `(\w+)` \| `(\w+)` \| `(\w+)` \|$", transitions.split("\n## ", 1)[0], re.M)
        assert rows == transition_table(lifecycle)


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


def test_docs_error_reference_has_the_tree_and_every_error() -> None:
    page = PAGES["reference/errors.md"]
    assert "PipelineStateError\n├── DefinitionError" in page
    for name in errors.__all__:
        assert f"| [`{name}`][pipeline_state.errors.{name}] |" in page


def test_docs_generated_pages_start_with_the_banner() -> None:
    for page, text in PAGES.items():
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
