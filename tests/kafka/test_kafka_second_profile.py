"""``pipeline-state serve --profile`` (issue 13.3): a real ``serve`` process runs the media
profile of ``examples/custom_catalog.py`` against the broker. It consumes the media wire,
publishes the media commands and the release report, and consumes nothing of HuleEdu's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kafka_harness import ServeProcess
from pipeline_state_kafka import ProducerLike
from pipeline_state_kafka.testing import Collector, LocalBroker, send_envelopes

from pipeline_state import InMemoryRuntime
from pipeline_state.profiles import load_profile
from pipeline_state.testing import Envelopes

pytestmark = pytest.mark.kafka

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_catalog.py"


MEDIA = load_profile(f"{EXAMPLE}:MEDIA")
MEDIA_OUT = [
    *(spec.topic for spec in MEDIA.phase_commands.values()),
    "media.release.report.v1",
    "media.step.skipped.v1",
    "media.request.refused.v1",
]


async def test_serve_runs_the_profile_it_is_given(
    broker: LocalBroker, prefix: str, producer: ProducerLike, tmp_path: Path
) -> None:
    env, reference = Envelopes(profile=MEDIA), InMemoryRuntime(MEDIA)
    episodes = env.item_ids("s1", 2)
    serve = ServeProcess(
        broker.bootstrap,
        f"sqlite+aiosqlite:///{tmp_path / 'media.db'}",
        prefix,
        env={"PIPELINE_STATE_PROFILE": f"{EXAMPLE}:MEDIA"},
        log_file=tmp_path / "serve.log",
    ).start()
    expected: list[dict[str, Any]] = []

    async def deliver(delivery: tuple[str, dict[str, Any]]) -> list[dict[str, Any]]:
        emitted = await reference.deliver(*delivery)
        expected.extend(emitted)
        await send_envelopes(producer, [delivery], topic_prefix=prefix, key_field="season_id")
        await serve.wait_handled({delivery[1]["event_id"]})
        return emitted

    try:
        await serve.wait_ready()
        async with Collector(broker.bootstrap, MEDIA_OUT, topic_prefix=prefix) as out:
            await deliver(env.register("s1", item_ids=episodes))
            await deliver(env.provisioned("s1", episodes))
            pending = await deliver(env.request("s1", "preview"))
            while pending:
                message = pending.pop(0)
                phase = env.phase_of(message)
                if phase is not None:  # transcode loses the first episode
                    lost = episodes[:1] if phase == "transcode" else []
                    pending += await deliver(env.answer(message, failed=lost))
            want = {m["value"]["event_id"] for m in expected}
            await out.wait_for(
                lambda c: want <= {r.event_id for r in c.records}, within=30, what="media output"
            )
            got = sorted((r.topic, r.key, r.event_id) for r in out.records)
            assert got == sorted((m["topic"], m["key"], m["value"]["event_id"]) for m in expected)
            topics = [r.topic for r in out.records]
            assert topics.count("media.release.report.v1") == 1
            assert {"media.transcode.start.v1", "media.thumbnails.start.v1"} <= set(topics)
            (report,) = [r.value for r in out.records if r.topic == "media.release.report.v1"]
            assert report is not None
            assert report["data"]["outcome"] == "completed_with_failures"
        # It subscribed to the media topics only (HuleEdu's seven are not the media service's).
        assigned = serve.find(
            lambda line: line.get("msg") == "partitions assigned" and line.get("consumer") == "inbound"
        )
        assert assigned
        assert assigned[-1]["topics"] == len(MEDIA.inbound.names) == 4
        handled = {
            line["msg"] for line in serve.find(lambda line: str(line.get("msg", "")).startswith("handled "))
        }
        assert handled == {f"handled {t}" for t in MEDIA.inbound.names}
    finally:
        serve.close()
