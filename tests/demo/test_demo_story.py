"""The simulated platform and the demo's self-checks, in process."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from pipeline_state import Catalog, InMemoryRuntime
from pipeline_state.profiles.huleedu.demo import play, run_demo
from pipeline_state.profiles.huleedu.demo.platform import (
    Message,
    PhaseService,
    Platform,
    Reply,
    SimulationError,
)
from pipeline_state.profiles.huleedu.demo.render import Renderer, short_topic
from pipeline_state.profiles.huleedu.demo.verify import Checks
from pipeline_state.profiles.huleedu.events import (
    EssayProcessingInputRefV1,
    NlpInitiateCommandV2,
    SpellcheckInitiateCommandV1,
    Topic,
)
from pipeline_state.profiles.huleedu.profile import huleedu_profile

# nlp no longer depends on spellcheck: a run of nlp does not prune it, and nlp receives the
# batch's original content. The demo must notice.
NO_PRUNING = Catalog.from_dict(
    {
        "pipelines": {
            "cj_assessment": {
                "steps": [{"name": "spellcheck"}, {"name": "cj_assessment", "depends_on": ["spellcheck"]}]
            },
            "nlp": {"steps": [{"name": "spellcheck"}, {"name": "nlp"}]},
            "ai_feedback": {
                "steps": [
                    {"name": "spellcheck"},
                    {"name": "nlp"},
                    {"name": "ai_feedback", "depends_on": ["spellcheck", "nlp"]},
                ]
            },
        }
    }
)


async def test_the_demo_notices_a_phase_fed_the_wrong_essays() -> None:
    out = io.StringIO()
    runtime = InMemoryRuntime(huleedu_profile(catalog=NO_PRUNING))
    checks = await play(7, 1, Renderer(plain=True, file=out), platform=Platform(7, runtime=runtime))
    assert [v.split(":")[0:2] for v in checks.violations] == [["batch-01 nlp", " essays_to_process of nlp"]]
    assert "FAILED: 1 of" in out.getvalue()


class RedispatchingRuntime(InMemoryRuntime):
    """A broken engine: it sends spellcheck again whenever nlp is requested."""

    async def deliver(self, topic: str, envelope: Mapping[str, Any] | str | bytes) -> list[dict[str, Any]]:
        out = await super().deliver(topic, envelope)
        assert isinstance(envelope, Mapping)
        if topic == Topic.PIPELINE_REQUEST.value and envelope["data"]["requested_pipeline"] == "nlp":
            nlp = [m for m in out if m["topic"] == Topic.NLP.value]
            out += [{**m, "topic": Topic.SPELLCHECK.value} for m in nlp]
        return out


def test_the_demo_fails_its_story_when_spellcheck_is_dispatched_again(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def story() -> Checks:
        return await play(7, 1, Renderer(plain=True), platform=Platform(7, runtime=RedispatchingRuntime()))

    checks = asyncio.run(story())
    assert (
        "batch-01 nlp: dispatched phases: expected ('nlp',), got ('nlp', 'spellcheck')" in checks.violations
    )
    assert not checks.ok
    assert "FAILED:" in capsys.readouterr().out


async def test_the_standard_story_passes_every_check() -> None:
    out = io.StringIO()
    checks = await play(7, 2, Renderer(plain=True, file=out))
    assert checks.ok, checks.violations
    assert checks.passed > 100
    assert out.getvalue().rstrip().endswith(f"OK: the story checked out ({checks.passed} checks).")


def test_rich_output_runs_and_fits_100_columns() -> None:
    out = io.StringIO()
    assert run_demo(seed=7, batches=2, plain=False, file=out) == 0
    text = out.getvalue()
    assert "→ emitted" in text
    assert "skipped: already_completed" in text
    assert max(len(line) for line in text.splitlines()) <= 100


def spellcheck_command(count: int) -> Message:
    platform = Platform(0)
    refs = [EssayProcessingInputRefV1(essay_id=f"e{i}", text_storage_id=f"e{i}.raw") for i in range(count)]
    payload = SpellcheckInitiateCommandV1(batch_id="b1", essays_to_process=refs, language="en")
    return platform.envelope(Topic.SPELLCHECK.value, payload, sender="tests")


def make_spellchecker(rate: float, seed: int = 1) -> PhaseService:
    return PhaseService(
        "spellcheck",
        Topic.SPELLCHECK.value,
        name="spellchecker_service",
        seed=seed,
        failure_rate=rate,
        working_time=(1.0, 2.0),
    )


def test_a_phase_service_always_lets_one_essay_through() -> None:
    service = make_spellchecker(1.0)
    (reply,) = service.react(spellcheck_command(4))
    outcome = reply.payload.model_dump(mode="json")
    assert outcome["phase_status"] == "completed_with_failures"
    assert outcome["processed_essays"] == [{"essay_id": "e0", "text_storage_id": "e0.spellcheck"}]
    assert outcome["failed_essay_ids"] == ["e1", "e2", "e3"]
    assert reply.topic == Topic.PHASE_OUTCOME.value
    assert 1.0 <= reply.delay <= 2.0
    assert service.jobs[0].processed == (("e0", "e0.spellcheck"),)


def test_a_phase_service_is_deterministic_per_seed() -> None:
    def failures(seed: int) -> list[tuple[str, ...]]:
        service = make_spellchecker(0.1, seed)
        for _ in range(10):
            service.react(spellcheck_command(4))
        return [job.failed for job in service.jobs]

    assert failures(3) == failures(3)
    assert failures(3) != failures(4)
    assert any(failures(3))
    assert not all(failures(3))


ECHO = NlpInitiateCommandV2(batch_id="b1", essays_to_process=[], language="en")


class Echo:
    """A broken service that answers every NLP command with another one."""

    name = "echo"
    topics = (Topic.NLP.value,)

    def react(self, message: Message) -> Sequence[Reply]:
        return [Reply(Topic.NLP.value, ECHO, 1.0)]


async def test_a_platform_that_does_not_settle_is_stopped() -> None:
    platform = Platform(0)
    platform.add(Echo())
    platform.send(Topic.NLP.value, ECHO, sender="tests")
    with pytest.raises(SimulationError, match="did not settle within 5 messages"):
        await platform.run_until_idle(max_steps=5)
    assert platform.now == 4.0


@pytest.mark.parametrize(
    ("topic", "short"),
    [
        (Topic.PHASE_OUTCOME.value, "phase.outcome"),
        (Topic.NLP.value, "nlp.cmd"),
        ("media.thumbnails.start.v1", "thumbnails.start"),
        ("huleedu.something.new.v3", "something.new"),
    ],
)
def test_short_topic_names(topic: str, short: str) -> None:
    assert short_topic(topic) == short
