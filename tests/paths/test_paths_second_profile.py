"""Issue 13.3: the path generator walks any profile. The media profile of
``examples/custom_catalog.py`` (its own inbound wire, no groups, no validation step) is
explored to the end; every transition its inputs can reach is reached, every shortest path
replays through the real service in memory and on SQLite exactly as decided."""

from __future__ import annotations

from pathlib import Path as FilePath

import pytest
from paths_support import Trace, check_steps, replay_memory, replay_tree_sqlite

from pipeline_state.profiles import load_profile
from pipeline_state.testing import Exploration, coverage, explore

__all__: list[str] = []

EXAMPLE = FilePath(__file__).resolve().parents[2] / "examples" / "custom_catalog.py"


# What the media wire cannot ask for: it has no group (so no group path and no cancel
# from its states), no validation errors (no critical failure of batch or run), and its
# commands always fit (no abort).
UNREACHABLE = {
    "batch: provision_regular awaiting_content_validation -> awaiting_group_validation",
    "batch: confirm_associations awaiting_group_validation -> group_validation_completed",
    "batch: items_ready group_validation_completed -> ready_for_pipeline_execution",
    "batch: fail_critically awaiting_content_validation -> failed_critically",
    "batch: fail_critically awaiting_group_validation -> failed_critically",
    "batch: fail_critically group_validation_completed -> failed_critically",
    "batch: fail_critically ready_for_pipeline_execution -> failed_critically",
    "batch: fail_critically processing_pipelines -> failed_critically",
    "batch: cancel awaiting_group_validation -> cancelled",
    "batch: cancel group_validation_completed -> cancelled",
    "run: fail active -> failed_critically",
    "phase: abort dispatch_initiated -> failed",
}


@pytest.fixture(scope="module")
def media_exploration() -> Exploration:
    return explore(load_profile(f"{EXAMPLE}:MEDIA"), intake_profile=None)


def test_the_media_profile_is_explored_to_the_end(media_exploration: Exploration) -> None:
    assert media_exploration.complete
    assert media_exploration.crashes == ()
    assert not media_exploration.violations
    cov = coverage(media_exploration)
    assert {str(t) for t in cov.missing} == UNREACHABLE
    assert all(not lc.undeclared for lc in cov.lifecycles)
    # Its own topics, never HuleEdu's.
    topics = {step.topic for path in media_exploration.maximal_paths() for step in path.steps}
    assert {t for t in topics if not t.startswith("operator.")} == {
        "media.season.opened.v1",
        "media.sources.uploaded.v1",
        "media.release.requested.v1",
        "media.step.finished.v1",
    }


async def test_every_media_path_replays_in_memory_and_on_sqlite(
    media_exploration: Exploration, tmp_path: FilePath
) -> None:
    paths = media_exploration.maximal_paths()
    traces, logs = await replay_tree_sqlite(paths, tmp_path)
    for path in paths:
        memory = await replay_memory(path)
        check_steps(path, memory, "memory")
        sqlite = Trace(tuple(traces[id(s)] for s in path.steps), logs[id(path.steps[-1])])
        check_steps(path, sqlite, "sqlite")
        assert sqlite == memory, f"SQLite and memory differ:\n{path.describe()}"
