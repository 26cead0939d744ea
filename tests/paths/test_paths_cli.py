"""Issue 12.3: ``pipeline-state paths`` prints the transition coverage of each lifecycle and
exits non-zero naming any declared transition that no generated path reaches."""

from __future__ import annotations

import io
import json

import pytest

from pipeline_state._cli import main
from pipeline_state._lifecycle import LIFECYCLES, PHASE_LIFECYCLE, Lifecycle, Transition, define_lifecycle
from pipeline_state.ports import PhaseStatus
from pipeline_state.testing import Exploration, declared_transitions
from pipeline_state.testing.paths import paths_command

__all__: list[str] = []


def _with_teleport() -> dict[str, Lifecycle]:
    """The shipped lifecycles, the phase one declaring a transition the engine never makes,
    and a toy lifecycle the engine knows nothing of."""
    phase = define_lifecycle(
        "phase",
        states=PHASE_LIFECYCLE.states,
        initial=PHASE_LIFECYCLE.initial,
        final=PHASE_LIFECYCLE.final,
        transitions=(
            *PHASE_LIFECYCLE.transitions,
            Transition("teleport", PhaseStatus.PENDING_DEPENDENCIES, PhaseStatus.COMPLETED_SUCCESSFULLY),
        ),
        guards=PHASE_LIFECYCLE.guards.values(),
        effects=PHASE_LIFECYCLE.effects.values(),
        refusals=PHASE_LIFECYCLE.refusals,
    )
    toy = define_lifecycle(
        "toy",
        states=("on", "off"),
        initial="on",
        final=("off",),
        transitions=(Transition("flip", "on", "off"),),
    )
    return {**LIFECYCLES, "phase": phase, "toy": toy}


def test_an_unreachable_declared_transition_fails_the_command_naming_it(exploration: Exploration) -> None:
    out = io.StringIO()
    code = paths_command(out, lifecycles=_with_teleport(), exploration=exploration)
    text = out.getvalue()
    assert code == 1
    assert "UNREACHED teleport pending_dependencies -> completed_successfully" in text
    assert "UNREACHED flip on -> off" in text
    assert "2 declared transition(s) unreachable: phase: teleport pending_dependencies -> " in text
    assert "toy: flip on -> off" in text
    phase = len(declared_transitions()["phase"])
    assert f"phase: {phase}/{phase + 1} declared transitions reached" in text
    assert "toy: 0/1 declared transitions reached" in text


def test_the_json_report_names_the_unreachable_transitions(exploration: Exploration) -> None:
    out = io.StringIO()
    code = paths_command(out, as_json=True, lifecycles=_with_teleport(), exploration=exploration)
    report = json.loads(out.getvalue())
    assert code == 1
    assert report["complete"] is False
    assert report["lifecycles"]["phase"]["missing"] == [
        {"trigger": "teleport", "source": "pending_dependencies", "dest": "completed_successfully"}
    ]
    assert report["lifecycles"]["toy"]["missing"] == [{"trigger": "flip", "source": "on", "dest": "off"}]
    assert report["states"] == len(exploration.states)
    assert report["search_complete"] is True
    assert report["crashes"] == []


def test_the_shipped_lifecycles_are_fully_reached(
    exploration: Exploration, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["paths", "--json", "--show-paths"])
    report = json.loads(capsys.readouterr().out)
    assert report["complete"] is True, {n: lc["missing"] for n, lc in report["lifecycles"].items()}
    assert code == 0
    for name, keys in declared_transitions().items():
        lifecycle = report["lifecycles"][name]
        assert lifecycle["declared"] == len(keys)
        assert lifecycle["missing"] == []
        assert lifecycle["undeclared_moves"] == []
    assert report["states"] == len(exploration.states)
    register = report["paths"]["batch: register (absent) -> awaiting_content_validation"]
    assert register == ["register_guest"]

    out = io.StringIO()
    assert paths_command(out, show_paths=True, exploration=exploration) == 0
    text = out.getvalue()
    for name, keys in declared_transitions().items():
        assert f"{name}: {len(keys)}/{len(keys)} declared transitions reached" in text
    assert "UNREACHED" not in text
    assert " 1. register_legacy" in text  # the path of phase: abort


def test_a_search_cut_short_says_so_and_names_what_it_missed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["paths", "--max-depth", "2"]) == 1
    text = capsys.readouterr().out
    assert "(cut by the bounds)" in text
    assert "UNREACHED finish active -> completed_successfully" in text
    assert main(["paths", "--max-depth", "0"]) == 2
