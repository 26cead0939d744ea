"""Golden results rows: the documents the results store writes for each batch, recorded by one
release and kept in ``tests/golden/data/results/`` so that every later release is checked
against them (``test_golden_results.py``).

The inputs come from the wire recordings of :mod:`tests.golden.record`: every message of a
scenario on a topic the results projection consumes (registrations, phase outcomes and
completions, whether delivered to the pipeline service or emitted by it), in the order the
scenario saw them, each with the scenario's clock at that step. The recorder feeds them to a
:class:`~pipeline_state.profiles.huleedu.results.ResultsService` over the in-memory results
store and writes one line per input: the input, what handling said (``result``, the run ids
it ``announced``) and the document
(:func:`~pipeline_state.profiles.huleedu.results.codec.batch_to_document`) of every batch
whose document changed. Lines keep the order of keys as written (the order of a completion's
``phase_results`` is the run's plan order, and a document's keys are in the order the store
writes them). A later release must read each document back unchanged and, from a
batch restored from one, handle the next input as the recording release did.

Record (only when the stored format changes on purpose, with a migration, or to add a
scenario: name it, so the files recorded by earlier releases stay as they are)::

    .venv/bin/python -m tests.golden.results [SCENARIO ...]
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from pipeline_state._clock import ManualClock
from pipeline_state.profiles.huleedu.results import InMemoryResultsStore, ResultsService
from pipeline_state.profiles.huleedu.results.codec import batch_to_document
from pipeline_state.profiles.huleedu.results.projection import CONSUMED_TOPICS
from tests.golden.record import DATA_DIR, START, load_lines
from tests.golden.stored import STORED_SCENARIOS, write_recording

RESULTS_DIR = DATA_DIR / "results"
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
    """Record the scenarios named in ``argv`` (all of them when none is named)."""
    names = list(argv if argv is not None else sys.argv[1:]) or RESULTS_SCENARIOS
    for name in names:
        lines = asyncio.run(results_lines(name))
        write_recording(RESULTS_DIR / f"{name}.jsonl", name, lines, sort_keys=False)
        print(f"{name}: {len(lines)} inputs, {sum(len(x['documents']) for x in lines)} documents")
    return 0


if __name__ == "__main__":
    sys.exit(main())
