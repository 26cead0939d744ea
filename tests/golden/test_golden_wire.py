"""Golden wire test: every message the engine emits, byte for byte, for a fixed set of
scenarios (the demo's story, directed stories and seeded random walks; see
:mod:`tests.golden.record`).

Each ``data/<scenario>.jsonl`` holds the scenario's inputs (with the instant of the manual
clock for each) and what each input did: the handling result (applied, ignored or denied
with its reason, deferred, duplicate, the error class raised) and every Kafka record it
emitted (topic, key, headers, exact value bytes). The test plays the stored inputs on a
fresh in-memory runtime and requires every line to come out identical.

A failure names the scenario, the first differing step and message. If the change of the
wire is intended, regenerate with ``.venv/bin/python -m tests.golden.record`` and review
the diff of ``tests/golden/data/``.
"""

from __future__ import annotations

import pytest

from tests.golden.record import (
    DATA_DIR,
    FORMAT,
    REGENERATE_HINT,
    SCENARIOS,
    describe_difference,
    dump_line,
    load_lines,
    replay,
)

NAMES = [s.name for s in SCENARIOS]


def test_every_scenario_has_its_recording() -> None:
    stored = sorted(p.stem for p in DATA_DIR.glob("*.jsonl"))
    missing = sorted(set(NAMES) - set(stored))
    extra = sorted(set(stored) - set(NAMES))
    assert not missing, f"recordings missing for {missing}\n{REGENERATE_HINT}"
    assert not extra, f"recordings of no scenario: {extra}\n{REGENERATE_HINT}"


@pytest.mark.parametrize("name", NAMES)
async def test_wire_is_unchanged(name: str) -> None:
    path = DATA_DIR / f"{name}.jsonl"
    expected = load_lines(path)
    header, *steps, _end = expected
    assert header.get("format") == FORMAT, f"{path}: recorded in format {header.get('format')}, not {FORMAT}"
    assert header.get("scenario") == name, f"{path}: header names {header.get('scenario')!r}"
    assert path.read_text(encoding="utf-8") == "".join(dump_line(line) + "\n" for line in expected), (
        f"{path} was edited by hand (it is not in the recorder's canonical form)\n{REGENERATE_HINT}"
    )
    actual = await replay(header, steps)
    problem = describe_difference(name, expected, actual)
    if problem is not None:
        pytest.fail(f"{problem}\n\n{REGENERATE_HINT}", pytrace=False)


def test_the_recorder_plays_every_scenario_again_unchanged(capsys: pytest.CaptureFixture[str]) -> None:
    """The recorder that regenerates the files runs (its walks look at the engine's state,
    so a change of the state's shape can break it without breaking the replay above) and,
    in check mode, finds the same lines as stored. Was a defect (fixed): it raised
    ``AttributeError`` on the renamed item reference since ``ItemRef`` replaced the essay
    reference, so nobody could regenerate the recordings."""
    from tests.golden.record import main

    assert main(["--check"]) == 0, capsys.readouterr().err
    assert f"{len(NAMES)} scenarios" in capsys.readouterr().out
