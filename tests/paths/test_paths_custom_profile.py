"""``pipeline-state paths`` and the path generator of pipeline_state.testing on
custom profiles: the bakery (tests/bakery_kit.py, its own wire), and
its catalog on the shipped wire so the reference model can judge every shortest path."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from paths_support import check_steps, reference_problems, replay_memory

from pipeline_state import Catalog, CommandSpec, Profile
from pipeline_state._cli import main
from pipeline_state.ports import LAST_DEPENDENCY
from pipeline_state.profiles.huleedu.events import PhaseInitiateCommand
from pipeline_state.testing import coverage, explore
from tests.bakery_kit import CATALOG, bakery

BAKERY = bakery()
DEFINITIONS = Path(__file__).resolve().parents[1] / "bakery_kit.py"
GROUP_PATH = {
    "batch: provision_regular awaiting_content_validation -> awaiting_group_validation",
    "batch: confirm_associations awaiting_group_validation -> group_validation_completed",
    "batch: items_ready group_validation_completed -> ready_for_pipeline_execution",
}


def test_paths_cli_prints_the_bakery_coverage_and_exits_1_naming_what_it_cannot_reach(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The bakery consumes no group facts, no validation errors and has no deadline: the
    command prints every lifecycle's coverage and exits 1 naming those transitions."""
    assert main(["paths", "--profile", f"{DEFINITIONS}:bakery", "--max-depth", "16"]) == 1
    out = capsys.readouterr().out
    for lifecycle in ("batch", "run", "phase"):
        assert f"{lifecycle}: " in out
    assert "declared transition(s) unreachable" in out
    for missing in GROUP_PATH | {"phase: expire dispatch_initiated -> failed"}:
        assert missing in out, missing
    assert "CRASH" not in out
    assert "invariant" not in out


def test_paths_on_a_big_catalog_stops_at_max_states_and_says_it_was_cut(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 300-step chain has far more abstract states than a run of the command should visit
    (the default bound took minutes): ``--max-states`` stops the search, the output says it
    was cut, and what it did not reach is named (exit 1). Was a defect (fixed): only the
    depth could be bounded from the command line."""
    module = tmp_path / "chain_profile.py"
    module.write_text(
        "from tests.bakery_kit import bakery\n"
        "steps = [{'name': 's0'}] + [{'name': f's{i}', 'depends_on': [f's{i - 1}']} for i in range(1, 300)]\n"
        "chain = bakery({'pipelines': {'chain': {'steps': steps}}})\n"
    )
    started = time.monotonic()
    assert main(["paths", "--profile", f"{module}:chain", "--max-states", "40"]) == 1
    assert time.monotonic() - started < 60  # ~4 s; without the bound, hours
    out = capsys.readouterr().out
    assert "40 abstract states" in out
    assert "(cut by the bounds)" in out
    assert "declared transition(s) unreachable" in out
    assert main(["paths", "--max-states", "0"]) == 2
    assert "--max-states must be >= 1" in capsys.readouterr().err


def test_paths_json_report_of_the_bakery(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["paths", "--profile", f"{DEFINITIONS}:bakery", "--json", "--max-depth", "16"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["complete"] is False
    assert report["crashes"] == []
    assert report["violations"] == []
    missing = {
        f"{name}: {t['trigger']} {t['source'] or '(absent)'} -> {t['dest']}"
        for name, lc in report["lifecycles"].items()
        for t in lc["missing"]
    }
    assert missing >= GROUP_PATH
    assert all(not lc["undeclared_moves"] for lc in report["lifecycles"].values())


@pytest.mark.parametrize(
    "settings",
    [
        {"default_deadline_seconds": 5, "max_parallel": 1, "max_resends": 1},
        {"strict_correlation": True, "deadlines": {"glaze": 3}, "max_resends": 0},
        {"state_names": {"ready_for_pipeline_execution": "idle", "processing_pipelines": "baking"}},
    ],
)
def test_exploring_bakery_variants_never_crashes_or_breaks_an_invariant(
    settings: dict[str, object],
) -> None:
    started = time.monotonic()
    exploration = explore(bakery(**settings), intake_profile=None, max_depth=12, max_states=3000)
    assert not exploration.crashes, exploration.crashes[0].error
    assert not exploration.violations, {k: v.detail for k, v in exploration.violations.items()}
    assert time.monotonic() - started < 60  # ~7 s on a loaded 2-core machine


def _on_shipped_wire() -> Profile:
    catalog = Catalog.from_dict(CATALOG)
    commands = {
        p: CommandSpec(f"bakery.{i}.start.v1", PhaseInitiateCommand) for i, p in enumerate(catalog.phases)
    }
    return Profile(
        name="bakery-shipped-wire",
        catalog=catalog,
        phase_commands=commands,
        fan_in=LAST_DEPENDENCY,
        deadlines={"decorate": 7},
        max_parallel=1,
        max_resends=1,
        max_items_per_batch=2,
        max_command_bytes=8192 + 2 * 4000,
    )


async def test_bakery_catalog_paths_replay_and_agree_with_the_reference_model() -> None:
    exploration = explore(_on_shipped_wire(), intake_profile=None, max_depth=14, max_states=1500)
    assert not exploration.crashes
    assert not exploration.violations
    fired = {str(t) for t in exploration.fired}
    assert "phase: expire dispatch_initiated -> failed" in fired
    assert "phase: dispatch pending_dependencies -> skipped_due_to_dependency_failure" in fired
    paths = exploration.maximal_paths()[:150]
    for path in paths:
        _, problems = reference_problems(path)
        assert not problems, f"{problems}\n{path.describe()}"
        check_steps(path, await replay_memory(path), "memory")
    assert "phase: abort dispatch_initiated -> failed" in {str(t) for t in coverage(exploration).missing}
