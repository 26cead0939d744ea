"""The hand-written pages keep their promises: the quick start is the README's, its service
runs, and the navigation lists every page."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def _bash_blocks(text: str) -> list[list[str]]:
    return [
        [line.strip() for line in block.splitlines() if line.strip()]
        for block in re.findall(r"^```bash\n(.*?)^```", text, re.S | re.M)
    ]


def test_docs_quick_start_has_the_readme_commands() -> None:
    readme = _bash_blocks((ROOT / "README.md").read_text(encoding="utf-8"))[0]
    index = _bash_blocks((DOCS / "index.md").read_text(encoding="utf-8"))[0]
    assert len(readme) == 2
    assert index == readme


def test_docs_quick_start_includes_the_service_in_20_lines() -> None:
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    assert '--8<-- "examples/service_in_20_lines.py"' in index
    example = ROOT / "examples" / "service_in_20_lines.py"
    assert example.is_file(), "examples/service_in_20_lines.py is included by the quick start"
    assert len(example.read_text(encoding="utf-8").splitlines()) <= 45


def test_docs_quick_start_service_runs(capsys: pytest.CaptureFixture[str]) -> None:
    runpy.run_path(str(ROOT / "examples" / "service_in_20_lines.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "ready_for_pipeline_execution" in out.splitlines()[-1]


def test_docs_navigation_lists_every_page() -> None:
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = config.split("\nnav:", 1)[1]
    listed = set(re.findall(r":\s+(\S+\.md)\s*$", nav, re.M))
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md") if "_ext" not in p.parts}
    assert pages == listed


@pytest.mark.parametrize("adapter", ["sql", "kafka", "http", "service"])
def test_docs_adapter_page_includes_the_package_readme_when_there_is_one(adapter: str) -> None:
    """An adapter's README is its configuration reference: the site includes it, not a copy."""
    readme = ROOT / "adapters" / f"pipeline_state_{adapter}" / "README.md"
    page = (DOCS / "adapters" / f"{adapter}.md").read_text(encoding="utf-8")
    include = f'--8<-- "adapters/pipeline_state_{adapter}/README.md"'
    if readme.is_file():
        assert include in page, f"docs/adapters/{adapter}.md should include {readme.relative_to(ROOT)}"
    else:
        assert include not in page
        assert "## Configuration" in page
