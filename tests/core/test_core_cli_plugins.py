"""The core's command line finds the commands of installed packages through entry points
(``pipeline_state.commands``) and never imports an adapter to build its parser."""

from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap
from importlib.metadata import EntryPoint
from types import SimpleNamespace
from typing import Any

import pytest

from pipeline_state import _cli as cli


def _only(monkeypatch: pytest.MonkeyPatch, *entries: EntryPoint) -> None:
    def found(*, group: str) -> list[EntryPoint]:
        return [e for e in entries if e.group == group]

    monkeypatch.setattr(cli, "entry_points", found)


def test_serve_and_the_operator_commands_come_from_the_service_entry_point() -> None:
    (entry,) = [e for e in cli.entry_points(group=cli.COMMANDS_GROUP) if e.name == "service"]
    assert entry.value == "pipeline_state_service.cli"
    choices = cli.build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert {"demo", "diagram", "paths", "serve", "batch", "dlq"} <= set(choices)


def test_without_plugins_only_the_core_commands_exist(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _only(monkeypatch)
    with pytest.raises(SystemExit) as exited:
        cli.main(["serve", "--kafka", "localhost:9092"])
    assert exited.value.code == 2
    assert "invalid choice: 'serve'" in capsys.readouterr().err
    assert cli.main(["diagram", "batch"]) == 0


def test_a_plugin_adds_its_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[str] = []

    def add_commands(sub: Any) -> None:
        hello = cli.versioned(sub.add_parser("hello", help="say hello"))
        hello.add_argument("name")
        hello.set_defaults(func=lambda args: ran.append(args.name) or 0)

    def reference_lines(parser: argparse.ArgumentParser) -> list[str]:
        return ["# hello"]

    plugin = SimpleNamespace(add_commands=add_commands, reference_lines=reference_lines)
    entry = EntryPoint("hello", "somewhere:plugin", cli.COMMANDS_GROUP)
    monkeypatch.setattr(EntryPoint, "load", lambda self: plugin)
    _only(monkeypatch, entry)
    assert cli.main(["hello", "world"]) == 0
    assert ran == ["world"]


def test_building_the_parser_imports_no_adapter() -> None:
    script = textwrap.dedent(
        """
        import sys
        from pipeline_state._cli import build_parser
        build_parser()
        adapters = ("pipeline_state_sql", "pipeline_state_kafka", "pipeline_state_http")
        drivers = ("sqlalchemy", "aiokafka", "fastapi")
        print(sorted(m for m in sys.modules if m.split(".")[0] in adapters + drivers))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
