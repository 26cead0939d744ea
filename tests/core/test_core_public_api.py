"""The public surface: the generated API page is the single list, and it matches what imports;
names that left the top level still resolve, with a warning, for one release; the core
imports no I/O library."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import textwrap
import types
import warnings
from pathlib import Path

import pytest

import pipeline_state
from pipeline_state._api_reference import PUBLIC_MODULES, defined_in, kind_of, summary_of

PAGE = Path(__file__).resolve().parents[2] / "docs" / "reference" / "api.md"
_SECTION = re.compile(r"^## `([\w.]+)`$")
_ROW = re.compile(r"^\| `(\w+)` \| ([\w ]+) \| `([\w.]+)` \| (.*) \|$")


def listed(page: str) -> dict[str, list[tuple[str, str, str, str]]]:
    """The page's rows by module section: ``(name, kind, defined in, summary)``."""
    sections: dict[str, list[tuple[str, str, str, str]]] = {}
    rows: list[tuple[str, str, str, str]] | None = None
    for line in page.splitlines():
        if heading := _SECTION.match(line):
            rows = sections.setdefault(heading.group(1), [])
        elif (row := _ROW.match(line)) and rows is not None:
            name, kind, home, summary = row.groups()
            rows.append((name, kind, home, summary))
    return sections


def api_problems(page: str) -> list[str]:
    """Where the page and what imports disagree (empty: they match)."""
    problems = []
    sections = listed(page)
    if list(sections) != list(PUBLIC_MODULES):
        problems.append(f"sections {list(sections)} are not the public modules {list(PUBLIC_MODULES)}")
    for module_name, rows in sections.items():
        module = importlib.import_module(module_name)
        names = [row[0] for row in rows]
        exported = set(getattr(module, "__all__", ()))
        if len(names) != len(set(names)):
            problems.append(f"{module_name}: a name is listed twice")
        problems += [f"{module_name}.{n}: in __all__, not listed" for n in sorted(exported - set(names))]
        problems += [f"{module_name}.{n}: listed, not in __all__" for n in sorted(set(names) - exported)]
        for name, kind, home, summary in rows:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("error")  # a listed name is never a deprecated one
                    obj = getattr(importlib.import_module(module_name), name)
                    source = getattr(importlib.import_module(home), name)
            except (ImportError, AttributeError, DeprecationWarning) as exc:
                problems.append(f"{module_name}.{name}: does not import ({exc})")
                continue
            if obj is not source:
                problems.append(f"{module_name}.{name} is not {home}.{name}")
            if defined_in(module, name) != home:
                problems.append(f"{module_name}.{name}: defined in {defined_in(module, name)}, listed {home}")
            if kind_of(obj) != kind:
                problems.append(f"{module_name}.{name}: a {kind_of(obj)}, listed as a {kind}")
            if summary_of(module, name) != summary:
                problems.append(f"{module_name}.{name}: its docstring no longer says {summary!r}")
    return problems


def test_the_api_page_lists_exactly_what_imports() -> None:
    assert api_problems(PAGE.read_text(encoding="utf-8")) == []


TAMPERED = [
    (("| `PipelineService` |", "| `PipelineServices` |"), "PipelineServices: does not import"),
    (("| `Catalog` | class |", "| `Catalog` | protocol |"), "a class, listed as a protocol"),
    (("`pipeline_state._relay` | Publishes", "`pipeline_state._memory` | Publishes"), "OutboxRelay: does"),
    (("The real UTC clock.", "A clock."), "SystemClock: its docstring no longer says"),
    (("## `pipeline_state.errors`", "## `pipeline_state._decide`"), "sections"),
    (("| `Store` | protocol |", "| `Stores` | protocol |"), "ports.Store: in __all__, not listed"),
]


@pytest.mark.parametrize(("edit", "problem"), TAMPERED)
def test_the_api_check_finds_a_page_that_differs(edit: tuple[str, str], problem: str) -> None:
    page = PAGE.read_text(encoding="utf-8")
    changed = page.replace(*edit)
    assert changed != page
    found = api_problems(changed)
    assert any(problem in line for line in found), found


def test_nothing_else_is_public_at_the_top_level() -> None:
    public = {
        name
        for name, value in vars(pipeline_state).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == set(pipeline_state.__all__) - {"__version__"}
    namespace: dict[str, object] = {}
    exec("from pipeline_state import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(pipeline_state.__all__)
    assert len(pipeline_state.__all__) <= 40  # a service author's surface, not the whole library


@pytest.mark.parametrize("name", sorted(pipeline_state._MOVED))
def test_a_name_that_left_the_top_level_resolves_with_a_warning(name: str) -> None:
    home = pipeline_state._MOVED[name]
    expected = getattr(importlib.import_module(home), name)
    assert name not in pipeline_state.__all__
    assert name not in dir(pipeline_state)
    with pytest.warns(DeprecationWarning, match=rf"from {re.escape(home)} import {name}\b"):
        value = getattr(pipeline_state, name)
    assert value is expected
    assert name not in dir(pipeline_state)  # not cached: every use warns


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nonexistent'"):
        pipeline_state.Nonexistent  # noqa: B018


def test_errors_share_one_root() -> None:
    errors = [getattr(pipeline_state, n) for n in pipeline_state.__all__ if n.endswith("Error")]
    assert errors
    assert all(issubclass(e, pipeline_state.PipelineStateError) for e in errors)


BLOCKED = (
    "sqlalchemy",
    "aiosqlite",
    "asyncpg",
    "aiokafka",
    "fastapi",
    "httpx",
    "uvicorn",
    "starlette",
    "rich",
)


def test_core_imports_and_runs_with_io_libraries_blocked() -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, sys

        BLOCKED = {BLOCKED!r}

        class Blocker:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"blocked import of {{name}}")
                return None

        sys.meta_path.insert(0, Blocker())

        import pipeline_state
        from pipeline_state import InMemoryRuntime
        from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

        async def main():
            rt, env = InMemoryRuntime(), HuleEduEnvelopes()
            ids = env.item_ids("b1", 2)
            await rt.deliver(*env.register("b1", items=2))
            await rt.deliver(*env.provisioned("b1", ids))
            corr = "6a1f6c33-3f7b-4d58-9a49-7b2b4a0e5c11"
            await rt.deliver(*env.request("b1", "nlp", correlation_id=corr))
            await rt.deliver(*env.outcome("b1", "spellcheck", corr, processed=ids))
            out = await rt.deliver(*env.outcome("b1", "nlp", corr, processed=ids))
            assert out[0]["value"]["data"]["final_status"] == "completed_successfully", out
            snap = await rt.snapshot("b1")
            assert snap["status"] == "ready_for_pipeline_execution", snap

        asyncio.run(main())
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        assert not loaded, loaded
        print("ok")
        """
    )

    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_the_blocker_really_blocks() -> None:
    script = (
        "import sys\n"
        "class B:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'httpx': raise ImportError('blocked')\n"
        "sys.meta_path.insert(0, B())\n"
        "import httpx\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "blocked" in proc.stderr
