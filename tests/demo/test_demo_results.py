"""The demo's results view: the read model the result aggregator builds, shown at the end and
checked against the completions; a broken aggregator fails the story."""

from __future__ import annotations

import io
import re
from collections.abc import Sequence

import pytest

from pipeline_state import InMemoryBus
from pipeline_state._cli import main
from pipeline_state.ports import OutboxMessage
from pipeline_state.profiles.huleedu.demo import play
from pipeline_state.profiles.huleedu.demo.platform import Platform
from pipeline_state.profiles.huleedu.demo.render import Renderer
from pipeline_state.profiles.huleedu.demo.results import ResultsDesk
from pipeline_state.profiles.huleedu.events import Topic


def demo_output(capsys: pytest.CaptureFixture[str]) -> str:
    code = main(["demo", "--plain"])
    out = capsys.readouterr().out
    assert code == 0, out
    return out


def results_section(out: str) -> list[str]:
    start = out.index(" results ")
    lines = out[start:].splitlines()[1:]
    return [line for line in lines if not line.startswith(("OK:", "FAILED:", "  - "))]


def test_the_demo_ends_with_the_results_view(capsys: pytest.CaptureFixture[str]) -> None:
    out = demo_output(capsys)
    assert out.index(" history ") < out.index(" results ")
    section = results_section(out)
    titles = [line for line in section if line.startswith("batch-")]
    assert len(titles) == 2
    assert re.match(
        r"batch-01 \| \w+ \| teacher-\d+ \| guest \| \d+ essays succeeded, \d+ failed \| 3 runs$", titles[0]
    )
    assert re.match(r"batch-02 \| \w+ \| teacher-\d+ \| class-\w+ \| ", titles[1])
    # Per phase: status, counts and seconds; every phase that ran shows up once per batch.
    phases = [
        line.split()
        for line in section
        if line.split()[:1] in (["spellcheck"], ["cj_assessment"], ["nlp"], ["ai_feedback"])
    ]
    assert [row[0] for row in phases] == ["spellcheck", "cj_assessment", "nlp", "ai_feedback"] * 2
    assert all(row[2].isdigit() and row[3].isdigit() and float(row[4]) > 0 for row in phases)
    (klass,) = [line for line in section if line.startswith("class ")]
    assert re.match(r"class class-\w+ \| 1 batch: \w+ 1 \| \d+ essays succeeded, \d+ failed$", klass)
    assert "announced: 6 BatchResultsReadyV1 | 6 batch_results_ready notifications" in out


async def test_the_results_view_matches_the_completions_for_more_batches() -> None:
    platform = Platform(3)
    desk = ResultsDesk(platform.runtime.clock)
    checks = await play(3, 4, Renderer(plain=True, file=io.StringIO()), platform=platform, results=desk)
    assert checks.ok, checks.violations
    ready = desk.announcements(Topic.RESULTS_READY.value)
    assert len(ready) == len({m.event_id for m in ready}) == 4 * 3
    batches = await desk.batch_views(f"batch-{i:02d}" for i in range(1, 5))
    assert [len(view["runs"]) for view in batches] == [3, 3, 3, 3]
    assert sum(o.result == "duplicate" for o in desk.observed) == 1


class DeafDesk(ResultsDesk):
    """An aggregator that forgot to subscribe to registrations: it never learns the owners."""

    @property
    def topics(self) -> tuple[str, ...]:
        return tuple(t for t in self.service.topics if t != Topic.ESSAYS_REGISTERED.value)


async def test_the_demo_notices_an_aggregator_that_never_learns_the_owner() -> None:
    platform = Platform(7)
    checks = await play(
        7,
        2,
        Renderer(plain=True, file=io.StringIO()),
        platform=platform,
        results=DeafDesk(platform.runtime.clock),
    )
    assert "batch-01 results: owner: expected ('teacher-43', None), got (None, None)" in checks.violations
    assert "results: BatchResultsReadyV1 events (one per run): expected 6, got 0" in checks.violations
    assert any(v.startswith("results: classes:") for v in checks.violations)


class EchoBus(InMemoryBus):
    """A transport that delivers every message twice (at-least-once, no deduplication)."""

    async def publish(self, messages: Sequence[OutboxMessage]) -> Sequence[BaseException | None]:
        await super().publish(messages)
        return await super().publish(messages)


async def test_the_demo_notices_announcements_made_twice() -> None:
    platform = Platform(7)
    desk = ResultsDesk(platform.runtime.clock)
    desk.bus = EchoBus()
    desk.relay.publisher = desk.bus
    out = io.StringIO()
    checks = await play(7, 2, Renderer(plain=True, file=out), platform=platform, results=desk)
    assert "results: BatchResultsReadyV1 events (one per run): expected 6, got 12" in checks.violations
    assert "results: distinct BatchResultsReadyV1 event ids: expected 12, got 6" in checks.violations
    assert any(v.startswith("results: runs notified (once each)") for v in checks.violations)
    assert "FAILED:" in out.getvalue()
