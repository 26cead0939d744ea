"""Found by an attack: a user's own profile (the MEDIA profile of examples/custom_catalog.py)
run end to
end by ``pipeline-state serve --profile FILE.py:NAME`` over the test broker and a SQL store,
then inspected with the operator CLI against the store it wrote (same ``--profile``).

Tests named ``test_held_*`` before were attacks that held; the others failed before the fix
that came with them and say in their docstring what was wrong."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
from kafka_harness import ServeProcess, wait_until
from pipeline_state_kafka import ProducerLike
from pipeline_state_kafka.testing import Collector, LocalBroker, free_port, send_envelopes
from prometheus_client.parser import text_string_to_metric_families

from pipeline_state.profiles import load_profile
from pipeline_state.testing import Envelopes

pytestmark = pytest.mark.kafka

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_catalog.py"
SPEC = f"{EXAMPLE}:MEDIA"
MEDIA = load_profile(SPEC)
REPORT = "media.release.report.v1"
SKIPPED = "media.step.skipped.v1"
REFUSED = "media.request.refused.v1"
COMMANDS = [spec.topic for spec in MEDIA.phase_commands.values()]
MEDIA_OUT = [*COMMANDS, REPORT, SKIPPED, REFUSED]
DLQS = [f"{t}.DLQ" for t in MEDIA.inbound.names]
TOKENS = {
    "PIPELINE_STATE_HTTP_API_TOKEN": "api-secret",
    "PIPELINE_STATE_HTTP_INTERNAL_TOKEN": "internal-secret",
    "PIPELINE_STATE_HTTP_OPS_TOKEN": "ops-secret",
    "PIPELINE_STATE_METRICS_STORE_SECONDS": "0.2",
}


@attrs.frozen
class Ran:
    code: int
    out: str
    err: str


async def cli(*argv: str, env: dict[str, str] | None = None) -> Ran:
    """``python -m pipeline_state._cli ...`` in a child process (its real exit code)."""
    command = [sys.executable, "-m", "pipeline_state._cli", *argv]
    done = await asyncio.to_thread(
        subprocess.run,
        command,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return Ran(done.returncode, done.stdout, done.stderr)


def media_serve(
    broker: LocalBroker, store: str, prefix: str, tmp_path: Path, *, http: int | None = None, **extra: str
) -> ServeProcess:
    serve = ServeProcess(
        broker.bootstrap,
        store,
        prefix,
        env={"PIPELINE_STATE_PROFILE": SPEC, **TOKENS, **extra},
        log_file=tmp_path / "serve.log",
    )
    if http is not None:
        serve.command += ["--http", f"127.0.0.1:{http}"]
    return serve.start()


class Driver:
    """Sends the media wire and answers every media command it sees on the broker (each
    command event id once), failing the items ``fail(phase)`` names, holding the phases
    ``hold`` names."""

    def __init__(
        self,
        env: Envelopes,
        producer: ProducerLike,
        prefix: str,
        out: Collector,
        *,
        fail: Callable[[str, list[str]], list[str]] | None = None,
        hold: frozenset[str] = frozenset(),
    ) -> None:
        self.env, self.producer, self.prefix, self.out = env, producer, prefix, out
        self.fail = fail or (lambda _phase, _ids: [])
        self.hold = hold
        self.answered: set[str] = set()
        self.commands: list[dict[str, Any]] = []

    async def send(self, *deliveries: tuple[str, dict[str, Any]]) -> None:
        await send_envelopes(self.producer, deliveries, topic_prefix=self.prefix, key_field="season_id")

    async def pump(self) -> None:
        for record in list(self.out.records):
            if record.topic not in COMMANDS or record.event_id in self.answered or record.value is None:
                continue
            message = {"topic": record.topic, "key": record.key, "value": record.value}
            phase = self.env.phase_of(message)
            assert phase is not None
            if phase in self.hold:
                continue
            self.answered.add(str(record.event_id))
            self.commands.append(message)
            sent = self.env.sent_item_ids(message)
            await self.send(self.env.answer(message, failed=self.fail(phase, sent)))

    async def until(
        self, predicate: Callable[[Collector], bool], *, within: float = 40, what: str = ""
    ) -> None:
        async def done() -> bool:
            await self.pump()
            return predicate(self.out)

        await wait_until(done, within=within, what=what)


def reports(out: Collector, season: str | None = None) -> list[Any]:
    return [r for r in out.unique(REPORT) if season is None or r.key == season]


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


# -- the release pipeline (parallel branches, a fan-in) over SQLite, with HTTP ---------------


async def test_completion_latency_metric_times_a_custom_profiles_runs(
    broker: LocalBroker, prefix: str, producer: ProducerLike, tmp_path: Path
) -> None:
    """(Preconditions, which held: a release run of the media profile - transcode, then
    thumbnails and captions in parallel, then publish, a fan-in - completes once with one
    release report from ``media_orchestrator``; the publish command lists each episode's
    files; every command carries the run's correlation id; ``/asyncapi.json`` describes the
    media wire; no metric label names a HuleEdu topic.) Was a defect: ``/metrics`` is
    documented (docs/operations.md) to time "from consuming a run's last outcome to the relay
    publishing its completion"; the media run's completion (its release report) was both
    consumed-after-last-outcome and published by this process, so
    ``pipeline_state_completion_latency_seconds_count`` must be 1.

    Observed: it stays 0 for every custom profile: the consumer's ``Handled.completions`` are
    the messages on ``COMPLETION_TOPICS``, a set built from the HuleEdu outbound's
    ``ENGINE_EVENT_TOPICS`` (adapters/pipeline_state_kafka/handlers.py:63), so a profile's
    own completion topic is never recognised and its completions are never timed."""
    port = free_port()
    store = f"sqlite+aiosqlite:///{tmp_path / 'media.db'}"
    serve = media_serve(broker, store, prefix, tmp_path, http=port)
    env = Envelopes(profile=MEDIA, source_service="media_upload")
    eps = env.item_ids("s1", 3)
    try:
        await serve.wait_ready()
        async with (
            Collector(broker.bootstrap, [*MEDIA_OUT, *DLQS], topic_prefix=prefix) as out,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http,
        ):
            drive = Driver(
                env, producer, prefix, out, fail=lambda phase, _ids: eps[:1] if phase == "captions" else []
            )
            await drive.send(env.register("s1", item_ids=eps, prompt=None), env.provisioned("s1", eps))
            await drive.send(env.request("s1", "release"))
            await drive.until(lambda c: bool(reports(c, "s1")), what="the release report")
            await asyncio.sleep(1.0)  # any duplicate completion would show up by now
            await drive.pump()
            (report,) = reports(out, "s1")
            assert report.data["outcome"] == "completed_with_failures"
            assert report.data["steps_done"] == ["transcode", "thumbnails", "captions", "publish"]
            assert report.data["episodes_done"] == 2
            assert report.data["episodes_failed"] == 1
            assert not [r for r in out.records if r.topic.endswith(".DLQ")]
            publish = [m for m in drive.commands if m["topic"] == "media.publish.start.v1"]
            assert len(publish) == 1
            episodes = publish[0]["value"]["data"]["episodes"]
            assert [e["episode_id"] for e in episodes] == eps[1:]
            assert [s["step"] for s in episodes[0]["sources"]] == ["thumbnails", "captions"]
            # the commands carry the run's correlation id and are keyed by the batch
            assert report.value["source_service"] == "media_orchestrator"
            corr = report.value["correlation_id"]
            assert {m["value"]["correlation_id"] for m in drive.commands} == {corr}

            # /asyncapi.json describes the media profile (held)
            doc = (await http.get("/asyncapi.json", headers={"Authorization": "Bearer api-secret"})).json()
            assert "media" in doc["info"]["title"]
            assert not [c for c in doc["channels"] if "huleedu" in c]
            assert {f"{t}" for t in MEDIA_OUT} <= set(doc["channels"])

            async def scraped() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
                got = await http.get("/metrics", headers={"Authorization": "Bearer ops-secret"})
                assert got.status_code == 200
                return parse_metrics(got.text)

            async def settled() -> bool:
                s = await scraped()
                return (
                    s.get(("pipeline_state_active_runs", frozenset()), -1) == 0
                    and s.get(("pipeline_state_outbox_pending", frozenset()), -1) == 0
                )

            await wait_until(settled, what="no active run and nothing pending in the metrics")
            samples = await scraped()
            handled = sum(
                v
                for (n, labels), v in samples.items()
                if n == "pipeline_state_messages_total" and ("topic", "media.step.finished.v1") in labels
            )
            assert handled == 4
            assert not [n for (n, labels) in samples if any("huleedu" in v for _k, v in labels)]
            assert samples.get(("pipeline_state_completion_latency_seconds_count", frozenset()), 0) == 1
    finally:
        serve.close()


# -- the operator CLI against a store the media serve wrote ------------------------------------


async def test_ops_cli_stalled_cancel_retry_on_a_media_store(
    broker: LocalBroker, prefix: str, producer: ProducerLike, tmp_path: Path
) -> None:
    """Held: with ``--profile`` the operator CLI lists the stalled media run, cancels it (one
    release report, outcome ``cancelled``, published by serve's relay on the media topic),
    retries one phase (its command on the media topic, answered, one more report); repeats
    are duplicates and nothing is dead-lettered."""
    db = tmp_path / "media.db"
    store = f"sqlite+aiosqlite:///{db}"
    serve = media_serve(broker, store, prefix, tmp_path)
    env = Envelopes(profile=MEDIA)
    eps = env.item_ids("s2", 2)
    ops = ["--store", store, "--profile", SPEC]
    try:
        await serve.wait_ready()
        async with Collector(broker.bootstrap, [*MEDIA_OUT, *DLQS], topic_prefix=prefix) as out:
            drive = Driver(env, producer, prefix, out, hold=frozenset({"captions"}))
            await drive.send(env.register("s2", item_ids=eps, prompt=None), env.provisioned("s2", eps))
            await drive.send(env.request("s2", "release"))
            await drive.until(
                lambda c: bool(c.on("media.captions.start.v1")) and bool(c.on("media.thumbnails.start.v1")),
                what="captions commanded",
            )
            await drive.until(lambda c: len(drive.answered) == 2, what="thumbnails answered")

            stalled = await cli("runs", "stalled", "--older-than", "0", "--json", *ops)
            assert stalled.code == 0, stalled.err
            (row,) = json.loads(stalled.out)
            assert row["batch_id"] == "s2"
            assert row["pipeline"] == "release"

            cancelled = await cli("run", "cancel", "s2", "--as", "ops-1", "--json", *ops)
            assert cancelled.code == 0, cancelled.err
            assert json.loads(cancelled.out)["result"] == "applied"
            await drive.until(lambda c: bool(reports(c, "s2")), what="the cancelled report")
            again = await cli("run", "cancel", "s2", "--as", "ops-1", "--json", *ops)
            assert json.loads(again.out)["result"] == "duplicate"

            retried = await cli("phase", "retry", "s2", "captions", "--as", "ops-1", "--json", *ops)
            assert retried.code == 0, retried.err
            drive.hold = frozenset()
            await drive.until(lambda c: len(reports(c, "s2")) == 2, what="the retry's report")
            await asyncio.sleep(1.0)
            await drive.pump()
            first, second = reports(out, "s2")
            assert first.data["outcome"] == "cancelled"
            assert second.data["pipeline"] == "captions" or second.data["steps_done"] == ["captions"]
            assert len(out.unique("media.captions.start.v1")) == 2
            assert not [r for r in out.records if r.topic.endswith(".DLQ")]
    finally:
        serve.close()


async def test_batch_show_of_a_media_batch_speaks_the_profile_not_huleedu(
    broker: LocalBroker, prefix: str, producer: ProducerLike, tmp_path: Path
) -> None:
    """``pipeline-state batch show`` is documented (ops/views.py ``batch_document``) to print
    "the batch as the HTTP API shows it", and docs/own-domain.md says the batch view's keys are
    the profile's (``Profile.view_names``; the media profile keeps the engine's ``owner``,
    ``group_id``, ``item_count``). Given ``--profile`` the media batch must be shown with
    those keys.

    Observed: the JSON has HuleEdu's ``user_id``, ``class_id``, ``essay_count`` and
    ``expected_essay_count``, and the text says ``essays 2/2``: ``batch_document`` calls
    ``snapshot(state)`` without the profile's names, so the default (HuleEdu) profile's keys
    and state names are used (adapters/pipeline_state_service/ops/views.py:57 and :62, :72)."""
    store = f"sqlite+aiosqlite:///{tmp_path / 'media.db'}"
    serve = media_serve(broker, store, prefix, tmp_path)
    env = Envelopes(profile=MEDIA)
    eps = env.item_ids("s3", 2)
    try:
        await serve.wait_ready()
        deliveries = [env.register("s3", item_ids=eps, prompt=None), env.provisioned("s3", eps)]
        await send_envelopes(producer, deliveries, topic_prefix=prefix, key_field="season_id")
        await serve.wait_handled({d[1]["event_id"] for d in deliveries})
    finally:
        serve.close()
    shown = await cli("batch", "show", "s3", "--json", "--store", store, "--profile", SPEC)
    assert shown.code == 0, shown.err
    doc = json.loads(shown.out)
    assert doc["status"] == "ready_for_pipeline_execution"
    leaked = sorted(k for k in doc if "essay" in k or k in ("user_id", "class_id"))
    assert leaked == [], f"HuleEdu keys in a media batch's view: {leaked}"
    assert (doc.get("owner"), doc.get("item_count")) == ("owner-1", 2)


# -- topics, hostile and early input, the dead-letter topics -----------------------------------


async def _topics(bootstrap: str) -> set[str]:
    from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def test_topics_hostile_early_input_and_dlq_reinject(
    broker: LocalBroker, prefix: str, producer: ProducerLike, tmp_path: Path
) -> None:
    """Held: serve creates exactly the media topics (prefixed: 4 inbound, their 4 DLQs, the 4
    commands and 3 events), nothing of HuleEdu's; bytes that are not JSON and a payload
    that violates the media schema are parked on the prefixed ``<topic>.DLQ``; a request and
    an outcome that arrive before their season wait (the request applies once the season is
    ready; the orphan outcome is dead-lettered by the sweeper after the waiting window, with
    what it waited for); ``dlq reinject --profile`` re-injects a media letter once."""
    from pipeline_state_kafka.dlq import DeadLetterWriter, ParkedFact

    from pipeline_state.errors import StoreUnavailableError

    db = tmp_path / "media.db"
    store = f"sqlite+aiosqlite:///{db}"
    serve = media_serve(broker, store, prefix, tmp_path, PIPELINE_STATE_WAITING_WINDOW_SECONDS="2")
    env = Envelopes(profile=MEDIA)
    eps = env.item_ids("s4", 2)
    try:
        await serve.wait_ready()
        mine = {t for t in await _topics(broker.bootstrap) if t.startswith(prefix)}
        want = {
            *(f"{prefix}{t}" for t in MEDIA.inbound.names),
            *(f"{prefix}{t}.DLQ" for t in MEDIA.inbound.names),
            *(f"{prefix}{t}" for t in MEDIA_OUT),
        }
        assert mine == want, sorted(mine ^ want)
        async with Collector(broker.bootstrap, [*MEDIA_OUT, *DLQS], topic_prefix=prefix) as out:
            drive = Driver(env, producer, prefix, out)
            await producer.send(f"{prefix}media.step.finished.v1", b"\xff not json", b"s4")
            bad = env.register("s4", item_ids=eps, prompt=None)
            del bad[1]["data"]["producer_id"]
            await drive.send(bad)
            orphan = env.outcome(
                "ghost", "transcode", "00000000-0000-4000-8000-000000000001", processed=["g-e0"]
            )
            early = env.request("s4", "preview")
            await drive.send(orphan, early)
            await serve.wait_handled({early[1]["event_id"], orphan[1]["event_id"]})
            await drive.send(env.register("s4", item_ids=eps, prompt=None), env.provisioned("s4", eps))
            await drive.until(lambda c: bool(reports(c, "s4")), what="the early request's run to complete")
            await out.wait_for(
                lambda c: (
                    len(c.on("media.step.finished.v1.DLQ")) == 2
                    and len(c.on("media.season.opened.v1.DLQ")) == 1
                ),
                within=20,
                what="three dead letters",
            )
            (report,) = reports(out, "s4")
            assert report.data["outcome"] == "completed_successfully"
            assert report.data["pipeline"] == "preview"
            waited = [r for r in out.on("media.step.finished.v1.DLQ") if r.key == "ghost"]
            assert len(waited) == 1
            assert any("batch" in v or "ghost" in v for v in waited[0].headers.values()), waited[0].headers

            # a letter parked by an outage, re-injected with the operator CLI
            writer = DeadLetterWriter(producer, group_id=f"{prefix}group")
            late = env.register("s5", items=1, prompt=None)
            parked = ParkedFact(
                f"{prefix}media.season.opened.v1", b"s5", json.dumps(late[1]).encode(), partition=0, offset=3
            )
            await writer.send(parked, StoreUnavailableError("the disk was full"))
        base = ["--kafka", broker.bootstrap, "--topic", "media.season.opened.v1", "--topic-prefix", prefix]
        base += ["--store", store, "--profile", SPEC, "--as", "ops-1", "--json"]
        done = await cli("dlq", "reinject", *base)
        doc = json.loads(done.out)
        results = [(d["batch_id"], d["result"]) for d in doc["letters"]]
        assert ("s5", "applied") in results, (done.code, done.out, done.err)
        again = json.loads((await cli("dlq", "reinject", *base)).out)
        assert ("s5", "duplicate") in [(d["batch_id"], d["result"]) for d in again["letters"]]
        without = await cli("dlq", "reinject", *base[:-5], "--store", store)
        assert without.code == 2
        assert "not a consumed topic" in without.err
    finally:
        serve.close()


PROFILES = Path(__file__).resolve().parent / "media_profiles.py"


async def test_max_parallel_one_runs_branches_in_turn_and_completes_once(
    broker: LocalBroker, prefix: str, producer: ProducerLike, tmp_path: Path
) -> None:
    """Held: the media profile with ``max_parallel=1`` under serve: thumbnails and captions
    are never commanded together, publish (the fan-in) gets both files, one report."""
    store = f"sqlite+aiosqlite:///{tmp_path / 'media.db'}"
    serve = media_serve(
        broker, store, prefix, tmp_path, PIPELINE_STATE_PROFILE=f"{PROFILES}:MEDIA_SEQUENTIAL"
    )
    env = Envelopes(profile=MEDIA)
    eps = env.item_ids("p1", 2)
    try:
        await serve.wait_ready()
        async with Collector(broker.bootstrap, [*MEDIA_OUT, *DLQS], topic_prefix=prefix) as out:
            drive = Driver(env, producer, prefix, out)
            await drive.send(env.register("p1", item_ids=eps, prompt=None), env.provisioned("p1", eps))
            await drive.send(env.request("p1", "release"))
            seen: list[tuple[int, int]] = []

            def progress(c: Collector) -> bool:
                seen.append((len(drive.answered), len(c.unique())))
                return bool(reports(c, "p1"))

            await drive.until(progress, what="the sequential release report")
            await asyncio.sleep(1.0)
            await drive.pump()
            order = [m["topic"] for m in drive.commands]
            assert order == [
                "media.transcode.start.v1",
                "media.thumbnails.start.v1",
                "media.captions.start.v1",
                "media.publish.start.v1",
            ]
            # each command was answered before the next one appeared
            commands = [r for r in out.unique() if r.topic in COMMANDS]
            assert [r.topic for r in commands] == order
            (report,) = reports(out, "p1")
            assert report.data["outcome"] == "completed_successfully"
            publish = drive.commands[-1]["value"]["data"]["episodes"]
            assert [[s["step"] for s in e["sources"]] for e in publish] == [["thumbnails", "captions"]] * 2
    finally:
        serve.close()


async def test_captions_deadline_resend_then_timeout_skips_publish_once(
    broker: LocalBroker, prefix: str, producer: ProducerLike, tmp_path: Path
) -> None:
    """Held: a silent captions worker under serve's sweeper: the captions command is re-sent
    once with the same event id, then captions fails (timeout), publish is skipped on the
    media skip topic and the run ends ``failed_critically`` with exactly one report."""
    store = f"sqlite+aiosqlite:///{tmp_path / 'media.db'}"
    serve = media_serve(
        broker, store, prefix, tmp_path, PIPELINE_STATE_PROFILE=f"{PROFILES}:MEDIA_QUICK_DEADLINES"
    )
    env = Envelopes(profile=MEDIA)
    eps = env.item_ids("d1", 2)
    try:
        await serve.wait_ready()
        async with Collector(broker.bootstrap, [*MEDIA_OUT, *DLQS], topic_prefix=prefix) as out:
            drive = Driver(env, producer, prefix, out, hold=frozenset({"captions"}))
            await drive.send(env.register("d1", item_ids=eps, prompt=None), env.provisioned("d1", eps))
            await drive.send(env.request("d1", "release"))
            await drive.until(lambda c: bool(reports(c, "d1")), within=30, what="the timed-out report")
            await asyncio.sleep(1.5)
            await drive.pump()
            (report,) = reports(out, "d1")
            assert report.data["outcome"] == "failed_critically"
            assert report.data["steps_done"] == ["transcode", "thumbnails"]
            captions = out.on("media.captions.start.v1")
            assert len(captions) == 2
            assert len({r.event_id for r in captions}) == 1
            skips = out.unique(SKIPPED)
            assert [(r.data["step"], r.data["why"]) for r in skips] == [("publish", skips[0].data["why"])]
            assert not out.on("media.publish.start.v1")
    finally:
        serve.close()


async def test_postgres_fresh_schema_release_then_retry_of_the_fan_in(
    broker: LocalBroker, prefix: str, producer: ProducerLike, tmp_path: Path
) -> None:
    """Held: the same over PostgreSQL (a fresh schema): a release run completes once; then
    ``phase retry BATCH publish --profile`` starts a run whose publish command lists, per
    episode, the recorded files of thumbnails and captions (the fan-in merge of a retry);
    answered, it completes once more; ``batch show`` shows two archived runs."""
    from proof_harness import postgres_schema, postgres_url

    url = postgres_url()
    async with postgres_schema(url) as schema:
        serve = media_serve(broker, url, prefix, tmp_path, PIPELINE_STATE_STORE_SCHEMA=schema)
        env = Envelopes(profile=MEDIA)
        eps = env.item_ids("g1", 3)
        ops = ["--store", url, "--schema", schema, "--profile", SPEC]
        try:
            await serve.wait_ready(within=60)
            async with Collector(broker.bootstrap, [*MEDIA_OUT, *DLQS], topic_prefix=prefix) as out:
                drive = Driver(
                    env,
                    producer,
                    prefix,
                    out,
                    fail=lambda phase, _i: eps[2:] if phase == "thumbnails" else [],
                )
                await drive.send(env.register("g1", item_ids=eps, prompt=None), env.provisioned("g1", eps))
                await drive.send(env.request("g1", "release"))
                await drive.until(lambda c: bool(reports(c, "g1")), what="the release report")
                retried = await cli("phase", "retry", "g1", "publish", "--as", "ops-2", "--json", *ops)
                assert retried.code == 0, retried.err
                await drive.until(lambda c: len(reports(c, "g1")) == 2, what="the retry's report")
                await asyncio.sleep(1.0)
                await drive.pump()
                first, second = reports(out, "g1")
                assert first.data["outcome"] == "completed_with_failures"
                assert second.data["outcome"] == "completed_successfully", second.data
                publish = [
                    m["value"]["data"]["episodes"]
                    for m in drive.commands
                    if m["topic"] == "media.publish.start.v1"
                ]
                assert len(publish) == 2
                assert publish[0] == publish[1]
                assert [e["episode_id"] for e in publish[1]] == eps[:2]
                assert [[s["step"] for s in e["sources"]] for e in publish[1]] == [
                    ["thumbnails", "captions"]
                ] * 2
                assert not [r for r in out.records if r.topic.endswith(".DLQ")]
            shown = await cli("batch", "show", "g1", "--json", *ops)
            assert shown.code == 0, shown.err
            doc = json.loads(shown.out)
            assert [h["final_status"] for h in doc["history"]] == [
                "completed_with_failures",
                "completed_successfully",
            ]
        finally:
            serve.close()


async def test_a_fan_in_command_over_max_command_bytes_fails_the_phase_not_the_run(
    broker: LocalBroker, prefix: str, producer: ProducerLike, tmp_path: Path
) -> None:
    """docs/operations.md (limits, "phase command size"): "a command that would still not fit
    is never built: the phase fails ``command_too_large`` and the run completes". The media
    profile's wire does not bound its file refs (``SourceFile.uri: str``), so workers that
    report 250 kB refs (each outcome ~0.5 MB, under the 1 MiB intake bound) make the publish
    command (a fan-in: each episode's ref plus both dependencies' refs) ~1.5 MB, above the
    profile's ``max_command_bytes`` (900,000). Expected: publish fails ``command_too_large``
    and the run completes with one release report.

    Observed: the engine builds the 1.5 MB command without measuring it (it measures only
    commands of more than ``Profile.measure_above_items`` = 518 items,
    pipeline_state/_decide/run.py:183, a bound that assumes every item ref is at most
    ``MAX_ITEM_ID_LENGTH`` characters, which only the shipped profile's wire models enforce;
    nothing checks the refs a custom ``Inbound`` decodes); the relay cannot publish it and
    parks the row, and with no deadline on publish the run never completes: no report,
    the season stays ``processing_pipelines``."""
    store = f"sqlite+aiosqlite:///{tmp_path / 'media.db'}"
    serve = media_serve(broker, store, prefix, tmp_path, PIPELINE_STATE_RELAY_MAX_ATTEMPTS="2")
    env = Envelopes(profile=MEDIA)
    eps = env.item_ids("big", 2)

    class BigRefs(Driver):
        async def pump(self) -> None:
            for record in list(self.out.records):
                if record.topic not in COMMANDS or record.event_id in self.answered or record.value is None:
                    continue
                message = {"topic": record.topic, "key": record.key, "value": record.value}
                phase = self.env.phase_of(message)
                assert phase is not None
                self.answered.add(str(record.event_id))
                self.commands.append(message)
                topic, envelope = self.env.answer(message)
                for produced in envelope["data"]["produced"]:
                    produced["uri"] = phase[0] * 250_000
                await self.send((topic, envelope))

    try:
        await serve.wait_ready()
        async with Collector(broker.bootstrap, [*MEDIA_OUT, *DLQS], topic_prefix=prefix) as out:
            drive = BigRefs(env, producer, prefix, out)
            await drive.send(env.register("big", item_ids=eps, prompt=None), env.provisioned("big", eps))
            await drive.send(env.request("big", "release"))
            await drive.until(
                lambda c: len(drive.answered) >= 3,
                within=30,
                what="transcode, thumbnails and captions answered",
            )
            with contextlib.suppress(TimeoutError):
                await drive.until(lambda c: bool(reports(c, "big")), within=15, what="the release report")
            parked = await cli("outbox", "parked", "--json", "--store", store, "--profile", SPEC)
            shown = json.loads(
                (await cli("batch", "show", "big", "--json", "--store", store, "--profile", SPEC)).out
            )
            assert [r["topic"] for r in json.loads(parked.out)] == [], "the publish command was parked"
            assert shown["status"] == "ready_for_pipeline_execution", shown["active_run"]
            (report,) = reports(out, "big")
            assert report.data["outcome"] == "failed_critically"
    finally:
        serve.close()


# -- a command model whose declared names collide ----------------------------------------------


@pytest.mark.parametrize(
    ("names", "harm"),
    [
        ({"language": "batch_id"}, "the command's batch_id is the batch's language ('en')"),
        ({"category": "channel", "group_id": "channel"}, "the category is overwritten by the group (None)"),
        ({"item_id": "source_uri"}, "each item's id is overwritten by its content ref"),
    ],
)
def test_command_fields_that_collide_are_refused_when_the_profile_is_built(
    names: dict[str, str], harm: str
) -> None:
    """``Profile`` promises to refuse, when built, a command model the engine cannot fill
    correctly (pipeline_state/_profile.py, the ``Profile`` docstring and ``_check_command``).
    A command model whose ``CommandFields`` give two engine fields the same name cannot be
    filled: ``RunEngine.phase_command`` (pipeline_state/_decide/run.py:175-181) builds one
    dict, so the later field silently overwrites the earlier. Expected: ``DefinitionError``
    naming the clash.

    Observed: the profile is accepted, and a run sends a wrong command (see the parameters); with
    ``language="batch_id"`` the media commands carry ``batch_id="en"``, so every worker
    answers for a batch that does not exist and the run never completes (its outcomes wait,
    then are dead-lettered). Nothing in ``CommandFields`` or ``_check_command``
    (pipeline_state/_profile.py:87-152, :261-314) checks that the names are distinct."""

    from pipeline_state.errors import DefinitionError
    from pipeline_state.ports import CommandFields

    with pytest.raises(DefinitionError, match="distinct"):  # refused as soon as declared
        attrs.evolve(CommandFields(items="episodes", item_id="episode_id", content_ref="source_uri"), **names)


# -- the HTTP status page of a media batch -----------------------------------------------------


async def test_status_page_of_a_media_batch_does_not_call_its_items_essays() -> None:
    """The HTML status page (``GET /v1/batches/{id}/status``) of a service running the media
    profile shows a season of 2 episodes. The API is documented to serve "whatever profile
    the service runs" and the batch view's words are the profile's (docs/own-domain.md).
    Expected: the page counts the batch's items in the engine's (or the profile's) word.

    Observed: "2 essays" and a phase table column "essays", hard-coded HuleEdu wording in the
    generic page (adapters/pipeline_state_http/status_page.py:141 and :180)."""
    from pipeline_state_http import HttpSettings, create_app

    from pipeline_state import InMemoryStore, PipelineService

    service = PipelineService(InMemoryStore(), profile=MEDIA)
    env = Envelopes(profile=MEDIA)
    eps = env.item_ids("w1", 2)
    for topic, envelope in (
        env.register("w1", item_ids=eps, prompt=None),
        env.provisioned("w1", eps),
        env.request("w1", "preview"),
    ):
        await service.handle_message(topic, json.dumps(envelope).encode())
    app = create_app(service, settings=HttpSettings(api_token="api-secret"))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://test",
        headers={"Authorization": "Bearer api-secret"},
    ) as http:
        page = await http.get("/v1/batches/w1/status")
        view = await http.get("/v1/batches/w1")
    assert page.status_code == 200, page.text
    assert view.json()["item_count"] == 2  # the JSON view speaks the profile (held)
    assert "essays" not in page.text.lower(), "HuleEdu's word for items on a media batch's page"
