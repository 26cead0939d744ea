"""Issue 13: ``pipeline-state paths --profile SPEC`` prints the transition coverage of any
profile: the media example's, with exactly the transitions its wire cannot reach named."""

from __future__ import annotations

import json

import pytest
from test_paths_second_profile import EXAMPLE, UNREACHABLE

from pipeline_state._cli import main

__all__: list[str] = []


def test_paths_explores_the_profile_named_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["paths", "--profile", f"{EXAMPLE}:MEDIA", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1  # some declared transitions are out of the media wire's reach
    assert report["search_complete"] is True
    assert report["crashes"] == []
    assert report["complete"] is False
    missing = {
        f"{lifecycle}: {t['trigger']} {t['source']} -> {t['dest']}"
        for lifecycle, found in report["lifecycles"].items()
        for t in found["missing"]
    }
    assert missing == UNREACHABLE


def test_paths_refuses_a_spec_that_names_no_profile(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["paths", "--profile", f"{EXAMPLE}:NO_SUCH_NAME"]) == 2  # bad input, not coverage
    assert "NO_SUCH_NAME" in capsys.readouterr().err
