"""Issue 12.3: every generated shortest path, replayed.

Each shortest path of the exploration is driven through the real ``PipelineService`` in
memory (the service must decide exactly what ``decide`` did, keep the same state, log the
same moves, and answer a redelivered step as a duplicate), on SQLite (the same verdicts,
outbox messages, states and transition log as in memory) and through the reference model
(agreement on everything it describes). Replaying the paths that are no other's prefix,
checking after every step, replays them all; on SQLite each step of their prefix tree is
replayed once, each branch on a copy of the database. Bounded simple paths are replayed in
memory and through the reference model.
"""

from __future__ import annotations

from pathlib import Path as FilePath

from paths_support import Trace, check_steps, reference_problems, replay_memory, replay_tree_sqlite

from pipeline_state.testing import Exploration, simple_paths
from pipeline_state.testing.paths import Path, abstract_key, maximal_paths

__all__: list[str] = []


async def test_every_shortest_path_replays_in_memory_as_decided(exploration: Exploration) -> None:
    paths = exploration.maximal_paths()
    assert sum(len(p) for p in paths) >= len(exploration.states) - 1
    for path in paths:
        check_steps(path, await replay_memory(path), "memory")


async def test_every_shortest_path_replays_on_sqlite_as_decided_and_as_in_memory(
    exploration: Exploration, tmp_path: FilePath
) -> None:
    paths = exploration.maximal_paths()
    traces, logs = await replay_tree_sqlite(paths, tmp_path)
    for path in paths:
        sqlite = Trace(tuple(traces[id(s)] for s in path.steps), logs[id(path.steps[-1])])
        check_steps(path, sqlite, "sqlite")
        memory = await replay_memory(path)
        for index, (mine, theirs) in enumerate(zip(sqlite.steps, memory.steps, strict=True)):
            assert mine == theirs, (
                f"step {index + 1} ({mine.label}) differs on SQLite from memory:\n{path.describe()}\n"
                f"sqlite: {mine}\nmemory: {theirs}"
            )
        assert sqlite.log == memory.log, f"transition logs differ:\n{path.describe()}"


def test_every_shortest_path_agrees_with_the_reference_model(exploration: Exploration) -> None:
    described: dict[str, int] = {}
    total = 0
    for path in exploration.maximal_paths():
        count, problems = reference_problems(path)
        assert not problems, f"{problems}\n{path.describe()}"
        total += len(path)
        for step in path.steps[:count]:
            kind = step.label.split(":")[0]
            described[kind] = described.get(kind, 0) + 1
    # Not vacuous: most steps are described, and every kind of input the model knows.
    assert sum(described.values()) * 2 > total, described
    for kind in ("register_guest", "register_regular", "provision", "group_confirmed", "items_ready"):
        assert described.get(kind), kind
    for kind in ("request", "outcome", "expire_overdue", "expire_early", "cancel_run", "retry"):
        assert described.get(kind), kind


async def test_bounded_simple_paths_never_revisit_a_state_and_replay_in_memory() -> None:
    paths = list(simple_paths(max_depth=8, max_paths=300))
    assert len(paths) == 300
    for path in paths:
        assert 1 <= len(path) <= 8
        keys = [abstract_key(None), *(abstract_key(s.state) for s in path.steps)]
        assert len(set(keys)) == len(keys), path.describe()
    longest: list[Path] = maximal_paths(paths)
    assert max(len(p) for p in longest) == 8
    for path in longest:
        check_steps(path, await replay_memory(path), "memory (simple path)")
        _, problems = reference_problems(path)
        assert not problems, f"{problems}\n{path.describe()}"
