"""Golden stored rows: the documents the SQL store writes for each batch, recorded by one
release and kept in ``tests/golden/data/stored/layout-<N>/`` (``N``: the document layout,
``pipeline_state_sql.codec.SCHEMA_VERSION``) so that every later release is checked against
them (``test_golden_stored.py``).

For each recorded scenario (the demo's story and the directed stories of
:mod:`tests.golden.record`) the recorder plays the stored steps on a fresh in-memory runtime
and, after each step, writes the SQL codec's document of every batch whose document changed:
``{"step": N, "batch_id": ..., "document": {...}}``, after a header naming the release that
wrote them. The rows are what a deployment has in its ``batches`` table; a later release must read
each of them (the current layout back unchanged, an older one migrated as documented) and,
starting from one, decide the next input as the recording release did.

Record the current layout (only when the stored format changes on purpose, with a
migration; the folders of older layouts stay as their release wrote them)::

    .venv/bin/python -m tests.golden.stored
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline_state_sql.codec import SCHEMA_VERSION, encode_state

from tests.golden.record import DATA_DIR, Driver, load_lines

STORED_DIR = DATA_DIR / "stored"
LAYOUTS = (1, 2, 3, 4, 5)
"""Layouts of which rows are kept: 1 (written by ``dc9d2c6``), 2, 3, 4, 5 (the current one)."""
STORED_SCENARIOS = (
    "demo-seed7-batches2",
    "directed-cancel-and-failures",
    "directed-deadlines",
    "directed-denials-and-duplicates",
    "directed-early-facts",
    "directed-fan-in-and-pruning",
    "directed-guards",
    "directed-rate-limit",
)

Line = dict[str, Any]


def scenario_lines(name: str) -> tuple[Mapping[str, Any], list[Mapping[str, Any]]]:
    """The header and the steps of the wire recording of ``name``."""
    lines = load_lines(DATA_DIR / f"{name}.jsonl")
    header, steps = lines[0], [line for line in lines[1:] if "op" in line]
    return header, steps


async def documents_after_each_step(name: str) -> list[Line]:
    """Play ``name``; after each step, the document of every batch whose document changed."""
    header, steps = scenario_lines(name)
    driver = Driver(header["profile"])
    last: dict[str, str] = {}
    rows: list[Line] = []
    for index, step in enumerate(steps):
        await driver.step(step)
        for state in await driver.rt.store.list_batches(limit=10_000):
            document = encode_state(state)
            text = json.dumps(document, sort_keys=True)
            if last.get(state.batch_id) != text:
                last[state.batch_id] = text
                rows.append({"step": index, "batch_id": state.batch_id, "document": document})
    return rows


def _release() -> str:
    done = subprocess.run(
        ["git", "describe", "--always", "--dirty"], capture_output=True, text=True, check=False
    )
    return done.stdout.strip() or "unknown"


def write_recording(
    path: Path, name: str, lines: Sequence[Line], *, sort_keys: bool = True, written_by: str | None = None
) -> None:
    """Write ``lines`` to ``path`` after a header naming the scenario and the release
    (``written_by``; by default ``git describe`` of the working tree)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        out.write(json.dumps({"scenario": name, "written_by": written_by or _release()}) + "\n")
        for line in lines:
            out.write(json.dumps(line, sort_keys=sort_keys) + "\n")


def layout_dir(layout: int) -> Path:
    """Where the rows of document layout ``layout`` are kept."""
    return STORED_DIR / f"layout-{layout}"


def main(argv: Sequence[str] | None = None) -> int:
    del argv
    for name in STORED_SCENARIOS:
        rows = asyncio.run(documents_after_each_step(name))
        write_recording(layout_dir(SCHEMA_VERSION) / f"{name}.jsonl", name, rows)
        print(f"{name}: {len(rows)} documents")
    return 0


if __name__ == "__main__":
    sys.exit(main())
