"""Golden results rows: the documents the results store writes for each batch, recorded by one
release and kept in ``tests/golden/data/results/layout-<N>/`` (``N``: the document layout,
``pipeline_state.profiles.huleedu.results.codec.DOCUMENT_SCHEMA``) so that every later
release is checked against them (``test_golden_results.py``).

The inputs come from the wire recordings of :mod:`tests.golden.record`: every message of a
scenario on a topic the results projection consumes (:data:`CONSUMED_TOPICS`: in layout 2
registrations, phase commands, phase outcomes, skipped phases and completions; layout 1
consumed registrations, phase outcomes and completions only), whether delivered to the
pipeline service or emitted by it, in the order the scenario saw them, each with the
scenario's clock at that step. The recorder feeds them to a
:class:`~pipeline_state.profiles.huleedu.results.ResultsService` over the in-memory results
store and writes one line per input: the input, what handling said (``result``, the run ids
it ``announced``) and the document
(:func:`~pipeline_state.profiles.huleedu.results.codec.batch_to_document`) of every batch
whose document changed. Lines keep the order of keys as written (the order of a completion's
``phase_results`` is the run's plan order, and a document's keys are in the order the store
writes them). A later release must read each document (the current layout back unchanged,
an older one migrated as documented) and, from a batch restored from one, handle the next
input as the recording release did.

Record the current layout (only when the stored format changes on purpose, with a
migration, or to add a scenario: name it, so the files recorded earlier stay as they are;
the folders of older layouts stay as their release wrote them)::

    .venv/bin/python -m tests.golden.results [--written-by RELEASE] [SCENARIO ...]

``--written-by`` names the recording release in the headers (by default ``git describe``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline_state._clock import ManualClock
from pipeline_state.profiles.huleedu.results import InMemoryResultsStore, ResultsService
from pipeline_state.profiles.huleedu.results.codec import DOCUMENT_SCHEMA, batch_to_document
from pipeline_state.profiles.huleedu.results.projection import CONSUMED_TOPICS
from tests.golden.record import DATA_DIR, START, load_lines
from tests.golden.stored import STORED_SCENARIOS, write_recording

RESULTS_ROOT = DATA_DIR / "results"
RESULTS_LAYOUTS = (1, 2)
"""Layouts of which results rows are kept: 1 (written by ``b301a74`` and ``4fc364c``), 2 (the
current one)."""


def results_layout_dir(layout: int) -> Path:
    """Where the results rows of document layout ``layout`` are kept."""
    return RESULTS_ROOT / f"layout-{layout}"


RESULTS_DIR = results_layout_dir(1)
"""The layout-1 recordings (the folder the upgrade tests of the results read them from)."""
RESULTS_SCENARIOS = (*STORED_SCENARIOS, "walk-24", "walk-39")
"""The stories of the golden state rows, and two walks that complete many runs."""

Line = dict[str, Any]


def results_inputs(name: str) -> Iterator[Line]:
    """The messages of the wire recording ``name`` that the results projection consumes."""
    for step in load_lines(DATA_DIR / f"{name}.jsonl")[1:]:
        if "op" not in step:
            continue
        delivered: list[tuple[str, Any]] = []
        if step["op"] == "deliver":
            delivered.append((step["topic"], step["message"]))
        elif step["op"] == "deliver_many":
            delivered.extend((topic, message) for topic, message in step["messages"])
        delivered.extend((out["topic"], json.loads(out["value"])) for out in step.get("out", ()))
        for topic, message in delivered:
            if topic in CONSUMED_TOPICS:
                yield {"clock": step["clock"], "topic": topic, "message": message}


class ResultsDriver:
    """A results service over a fresh in-memory store on a manual clock."""

    def __init__(self) -> None:
        self.clock = ManualClock(START)
        self.store = InMemoryResultsStore()
        self.service = ResultsService(self.store, clock=self.clock)

    async def handle(self, line: Mapping[str, Any]) -> Line:
        """Handle the input of ``line``; returns what handling said."""
        at = datetime.fromisoformat(line["clock"])
        if at != self.clock.now():
            self.clock.set(at)
        handled = await self.service.handle_message(line["topic"], json.loads(json.dumps(line["message"])))
        return {"result": handled.result, "announced": list(handled.announced)}


async def results_lines(name: str) -> list[Line]:
    """Feed the results inputs of ``name``; one line per input (see the module doc)."""
    driver = ResultsDriver()
    last: dict[str, str] = {}
    lines: list[Line] = []
    for line in results_inputs(name):
        said = await driver.handle(line)
        documents: dict[str, Any] = {}
        for batch in await driver.store.list_batches(limit=10_000):
            document = batch_to_document(batch)
            text = json.dumps(document)
            if last.get(batch.batch_id) != text:
                last[batch.batch_id] = text
                documents[batch.batch_id] = document
        lines.append({**line, **said, "documents": documents})
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Record, in the current layout, the scenarios named in ``argv`` (all of them when none
    is named)."""
    parser = argparse.ArgumentParser(prog="python -m tests.golden.results")
    parser.add_argument("--written-by", help="the recording release (default: git describe)")
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.scenarios) - set(RESULTS_SCENARIOS))
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(unknown)} (add them to RESULTS_SCENARIOS)")
    for name in args.scenarios or RESULTS_SCENARIOS:
        lines = asyncio.run(results_lines(name))
        path = results_layout_dir(DOCUMENT_SCHEMA) / f"{name}.jsonl"
        write_recording(path, name, lines, sort_keys=False, written_by=args.written_by)
        print(f"{name}: {len(lines)} inputs, {sum(len(x['documents']) for x in lines)} documents")
    return 0


if __name__ == "__main__":
    sys.exit(main())
