"""Every code block on the documentation site is included from a file or executed.

The Markdown sources under ``docs/`` are scanned (with the Markdown files they include
through ``--8<--`` snippets expanded, so an included README is checked too):

* a ``python`` block is either nothing but snippet includes of files that exist and
  compile, or it runs: ``>>>`` blocks with :mod:`doctest`; a block that defines tests
  (``Test*`` classes or ``test_*`` functions) as a pytest module in a subprocess, where at
  least one test must pass and none fail; any other block with ``exec`` in a fresh namespace
  (top-level ``await`` allowed: the block then runs in its own event loop);
* ``toml``, ``yaml`` and ``json`` blocks must parse;
* a ``python`` block of a package README included by a page (the adapters' READMEs are
  the packages' own documentation, tested with them) must compile and import only names
  that exist; it may need a broker or a database, so it is not run here;
* shell, console, text, Mermaid and unlabelled blocks are exempt (Mermaid is checked by the
  drift and browser tests); a block in any other language fails so nothing slips by.
"""

from __future__ import annotations

import ast
import asyncio
import doctest
import importlib
import inspect
import json
import os
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
_SNIPPET = re.compile(r"""^\s*-{1,}8<-{1,}\s+(?P<quote>["'])(?P<path>[^"']+)(?P=quote)\s*$""")
_PYTHON = {"python", "py", "python3", "pycon"}
_PARSED = {"toml", "yaml", "yml", "json"}
_EXEMPT = {"", "bash", "sh", "shell", "console", "text", "mermaid", "ini", "http", "sql", "dockerfile", "env"}


@dataclass(frozen=True)
class Block:
    """One fenced code block: where it starts, its language and its dedented body."""

    source: str
    line: int
    language: str
    body: str
    package_readme: bool = False

    @property
    def id(self) -> str:
        return f"{self.source}:{self.line}"


def _snippet_target(path_text: str) -> Path:
    path_text = path_text.split(":", 1)[0]  # "file.py:10:20" line ranges
    return ROOT / path_text


def _blocks(path: Path, label: str, seen: frozenset[Path] = frozenset()) -> list[Block]:
    """The fenced blocks of ``path``, plus those of the Markdown files it includes."""
    if path in seen:
        raise AssertionError(f"{label}: snippet include cycle through {path}")
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        opening = _FENCE.match(line)
        if opening is None:
            include = _SNIPPET.match(line)
            if include and include.group("path").endswith(".md"):
                target = _snippet_target(include.group("path"))
                if target.is_file():
                    shown = target.relative_to(ROOT).as_posix()
                    found += _blocks(target, f"{label} -> {shown}", seen | {path})
            index += 1
            continue
        indent, fence = opening.group("indent"), opening.group("fence")
        info = opening.group("info").strip()
        language = info.split()[0].lstrip(".{").rstrip("}").lower() if info else ""
        start = index + 1
        body: list[str] = []
        index += 1
        while index < len(lines) and not (
            lines[index].strip().startswith(fence[0] * len(fence))
            and not lines[index].strip().strip(fence[0])
        ):
            text = lines[index]
            body.append(text[len(indent) :] if text.startswith(indent) else text.lstrip())
            index += 1
        if index >= len(lines):
            raise AssertionError(f"{label}:{start}: unclosed code fence")
        readme = DOCS not in path.parents and path.name == "README.md"
        found.append(Block(label, start, language, "\n".join(body) + "\n", readme))
        index += 1
    return found


def _all_blocks() -> list[Block]:
    blocks: list[Block] = []
    for path in sorted(DOCS.rglob("*.md")):
        if "_ext" in path.parts:
            continue
        blocks += _blocks(path, path.relative_to(ROOT).as_posix())
    return blocks


BLOCKS = _all_blocks()


def _run_python(block: Block) -> None:
    namespace: dict[str, Any] = {"__name__": f"docs_block_{block.line}"}
    code = compile(block.body, block.id, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
    if code.co_flags & inspect.CO_COROUTINE:
        asyncio.run(eval(code, namespace))  # the block's top-level awaits run in a fresh loop
    else:
        exec(code, namespace)


def _defines_tests(block: Block) -> bool:
    """Whether the block is a pytest module: it defines ``Test*`` classes or ``test_*`` functions."""
    for node in ast.parse(block.body).body:
        if isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            return True
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_"):
            return True
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id.startswith("Test") for target in node.targets
        ):
            return True
    return False


def _run_pytest(block: Block, folder: Path) -> None:
    module = folder / f"test_docs_block_{block.line}.py"
    module.write_text(block.body, encoding="utf-8")
    (folder / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n", encoding="utf-8"
    )
    # Only the plugin the blocks need: autoloading every installed plugin costs seconds.
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "pytest_asyncio.plugin"]
    completed = subprocess.run(
        [*command, "--rootdir", str(folder), str(module)],
        cwd=folder,
        env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, f"{block.id}: the block's tests failed\n{output[-4000:]}"
    summary = re.search(r"(\d+) passed", output)
    assert summary is not None, output[-2000:]
    assert int(summary.group(1)) >= 1


def _check_compiles_and_imports(block: Block) -> None:
    """Compile the block and check that every ``from X import name`` names something real."""
    compile(block.body, block.id, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
    tree = ast.parse(block.body)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                importlib.import_module(alias.name)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{block.id}: {node.module} has no {alias.name!r}"


def _run_doctest(block: Block) -> None:
    parser = doctest.DocTestParser()
    test = parser.get_doctest(block.body, {}, block.id, block.source, block.line)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report: list[str] = []
    runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)


def _check_includes(block: Block) -> bool:
    """True when the block is only snippet includes; they must exist and compile."""
    lines = [line for line in block.body.splitlines() if line.strip()]
    includes = [_SNIPPET.match(line) for line in lines]
    if not lines or not all(includes):
        return False
    for match in includes:
        assert match is not None
        target = _snippet_target(match.group("path"))
        assert target.is_file(), f"{block.id}: included file {match.group('path')} does not exist"
        if target.suffix == ".py":
            compile(target.read_text(encoding="utf-8"), str(target), "exec")
    return True


def test_docs_have_code_blocks() -> None:
    """The scanner finds the site's examples (guards against a parser that finds nothing)."""
    languages = {block.language for block in BLOCKS}
    assert {"python", "mermaid", "bash"} <= languages
    assert sum(block.language == "python" for block in BLOCKS) >= 5


@pytest.mark.parametrize("block", BLOCKS, ids=[block.id for block in BLOCKS])
def test_docs_code_block_is_included_or_runs(block: Block, tmp_path: Path) -> None:
    if block.language in _PYTHON:
        if _check_includes(block):
            return
        if block.package_readme:
            _check_compiles_and_imports(block)
        elif block.body.lstrip().startswith(">>>"):
            _run_doctest(block)
        elif _defines_tests(block):
            _run_pytest(block, tmp_path)
        else:
            _run_python(block)
    elif block.language in _PARSED:
        if _check_includes(block):
            return
        if block.language == "toml":
            tomllib.loads(block.body)
        elif block.language == "json":
            json.loads(block.body)
        else:
            yaml.safe_load(block.body)
    elif block.language not in _EXEMPT:
        pytest.fail(f"{block.id}: code block with language {block.language!r} is neither run nor exempt")
