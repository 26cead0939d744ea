"""Found by an attack on the results consumer under ``serve`` (real broker, real processes).

Were defects (fixed; the tests failed before): a completion with a duration of ``1e400``
was applied and its ``BatchResultsReadyV1`` published with the non-JSON token ``Infinity``
(the intake now refuses numbers outside the float range); after one completion claiming
2**31 - 1 essays, every valid completion of its class was dead-lettered on PostgreSQL
(integer out of range): counts are now bounded by a batch's item limit.

Held: two results consumers in one group, one killed with SIGKILL and restarted with every
event sent again, announce each run once; an inbox purge racing redeliveries announces
nothing twice.
"""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kafka_harness import ServeProcess, fast_settings, running, wait_until
from pipeline_state_kafka import ProducerLike, dlq_topic, ensure_topics
from pipeline_state_kafka.testing import Collector, LocalBroker, send_envelopes

from pipeline_state.profiles.huleedu.events import Topic
from tests.optional import require
from tests.results.results_events import at, completion, outcome, registered

pytestmark = pytest.mark.kafka

READY = Topic.RESULTS_READY.value
NOTIFY = Topic.TEACHER_NOTIFICATION.value
COMPLETED = Topic.PIPELINE_COMPLETED.value
REGISTERED = Topic.ESSAYS_REGISTERED.value
OUTCOME = Topic.PHASE_OUTCOME.value


def _dead(prefix: str, topic: str) -> str:
    return dlq_topic(f"{prefix}{topic}").removeprefix(prefix)


async def _send(producer: ProducerLike, prefix: str, deliveries: list[tuple[str, dict[str, Any]]]) -> None:
    regs = [d for d in deliveries if d[0] == REGISTERED]
    rest = [d for d in deliveries if d[0] != REGISTERED]
    if regs:
        await send_envelopes(producer, regs, topic_prefix=prefix, key_field="entity_id")
    if rest:
        await send_envelopes(producer, rest, topic_prefix=prefix)


async def _send_raw(producer: ProducerLike, prefix: str, topic: str, raw: str, key: str) -> None:
    await (await producer.send(f"{prefix}{topic}", raw.encode(), key.encode()))


@pytest.fixture
async def pg() -> AsyncIterator[tuple[str, str]]:
    """(url, schema): a fresh PostgreSQL schema with the tables, dropped afterwards."""
    require("pipeline_state_sql")
    from pipeline_state_sql.results_store import open_results_store

    from tests.http.serving import pg_schema, postgres_url

    url = await asyncio.to_thread(postgres_url)
    async with pg_schema(url, "ps_res2k") as schema:
        store = await open_results_store(url, schema=schema)  # creates the tables once
        await store.close()
        yield url, schema


# -- hostile figures --------------------------------------------------------------------------


@pytest.mark.timeout(90)
async def test_serve_dead_letters_a_duration_past_the_float_range(
    broker: LocalBroker, prefix: str, producer: ProducerLike
) -> None:
    """Was a defect, fixed.

    Expected: a completion with ``"processing_duration_seconds": 1e400`` (parses as
    ``inf``) is bad input: it lands on ``<topic>.DLQ`` and nothing is announced. Before the fix: it is
    applied and ``BatchResultsReadyV1`` is published with ``"processing_duration_seconds":
    Infinity``, which is not JSON (a strict consumer, this library's own intake included,
    cannot read it)."""
    settings = fast_settings(broker.bootstrap, prefix, consumers=("results",), relay_idle_seconds=0.1)
    dead = _dead(prefix, COMPLETED)
    async with (
        running(settings) as runner,
        Collector(broker.bootstrap, [READY, dead], topic_prefix=prefix) as out,
    ):
        await _send(producer, prefix, [registered("inf-b", user_id="t-inf", class_id=None)])
        topic, envelope = completion("inf-b", "r-inf", "c-inf", when=at(10), duration=10.0)
        raw = json.dumps(envelope).replace(
            '"processing_duration_seconds": 10.0', '"processing_duration_seconds": 1e400', 1
        )
        await _send_raw(producer, prefix, topic, raw, "inf-b")
        await out.wait_for(lambda c: len(c.on(READY)) + len(c.on(dead)) >= 1, within=30, what="a verdict")
        await asyncio.sleep(0.5)
        published = [r.raw for r in out.on(READY)]
        assert published == [], f"announced: {published[0][:400]!r}"
        assert len(out.on(dead)) == 1
        assert runner.stats.dead_lettered == 1


@pytest.mark.postgres
@pytest.mark.timeout(90)
async def test_one_oversized_count_never_blocks_later_results_on_postgres(
    broker: LocalBroker, prefix: str, producer: ProducerLike, pg: tuple[str, str]
) -> None:
    """Was a defect, fixed.

    Expected: one completion claiming ``successful_essay_count = 2**31 - 1`` (a batch has
    at most 1,000 items) is dead-lettered as bad input, and the valid completions of the
    other batches of its class are applied and announced. Now (PostgreSQL results store): the
    hostile completion is applied, and the valid completion of another batch of the class is
    dead-lettered with ``RejectedDataError`` (``integer out of range``: the class row's
    ``essays_succeeded`` is an INTEGER column): that batch's result is lost, and so is every
    later result with successes in that class."""
    url, schema = pg
    settings = fast_settings(
        broker.bootstrap,
        prefix,
        store_url=url,
        store_schema=schema,
        consumers=("results",),
        relay_idle_seconds=0.1,
    )
    dead = _dead(prefix, COMPLETED)
    async with (
        running(settings),
        Collector(broker.bootstrap, [READY, dead], topic_prefix=prefix) as out,
    ):
        await _send(
            producer,
            prefix,
            [
                registered("evil", user_id="t-o", class_id="class-o"),
                registered("good", user_id="t-o", class_id="class-o"),
            ],
        )
        await _send(
            producer, prefix, [completion("evil", "r-evil", "c-evil", when=at(10), successful=2**31 - 1)]
        )
        await out.wait_for(
            lambda c: len(c.on(READY)) + len(c.on(dead)) >= 1, within=30, what="hostile verdict"
        )
        await _send(producer, prefix, [completion("good", "r-good", "c-good", when=at(20), successful=2)])
        await out.wait_for(lambda c: len(c.on(READY)) + len(c.on(dead)) >= 2, within=30, what="valid verdict")
        await asyncio.sleep(0.5)
        letters = [(r.key, r.headers.get("dlq_error_type"), r.headers.get("dlq_error")) for r in out.on(dead)]
        ready_for = sorted(r.data["batch_id"] for r in out.on(READY))
        assert "good" in ready_for, f"the valid result was not announced; dead letters: {letters}"
        assert "good" not in {k for k, _, _ in letters}, letters


# -- two members, a kill, redelivery ------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.timeout(150)
async def test_two_results_consumers_killed_and_restarted_announce_each_run_once(
    broker: LocalBroker, prefix: str, producer: ProducerLike, pg: tuple[str, str], tmp_path: Path
) -> None:
    """Held: two ``serve --consumers results`` processes of one group on one PostgreSQL
    schema; one is SIGKILLed while the events flow, every event is sent again (same event
    ids), then it restarts. Every batch shows its run, each run is announced under exactly
    one event id (``BatchResultsReadyV1`` and the teacher notification), and the class
    summary counts every batch once with the right essay totals."""
    from pipeline_state_sql.results_store import open_results_store

    url, schema = pg
    topics = (REGISTERED, COMPLETED, OUTCOME, READY, NOTIFY)
    await ensure_topics(broker.bootstrap, [f"{prefix}{t}" for t in topics], partitions=4)
    batches = [f"k{i:02d}" for i in range(60)]
    events: list[tuple[str, dict[str, Any]]] = []
    for n, b in enumerate(batches):
        corr = str(uuid.uuid4())
        events.append(registered(b, user_id="t-k", class_id="class-k", when=at(0)))
        events.append(completion(b, f"run-{b}", corr, when=at(100 + n), successful=2, failed=1))

    def member(name: str) -> ServeProcess:
        serve = ServeProcess(
            broker.bootstrap,
            url,
            prefix,
            env={
                "PIPELINE_STATE_STORE_SCHEMA": schema,
                "PIPELINE_STATE_OUTBOX_LEASE_SECONDS": "2",
                "PIPELINE_STATE_RESULTS_PURGE_SECONDS": "0.2",
                "PIPELINE_STATE_RESULTS_COMPLETION_RETENTION_HOURS": "0.0001",
                "PIPELINE_STATE_SUMMARY": "off",
            },
            log_file=tmp_path / f"serve-{name}.log",
        )
        serve.command += ["--consumers", "results"]
        return serve

    store = await open_results_store(url, schema=schema, upgrade=False)
    first, second = member("a"), member("b")
    third: ServeProcess | None = None
    try:
        async with Collector(broker.bootstrap, [READY, NOTIFY], topic_prefix=prefix) as out:
            first.start()
            second.start()
            await asyncio.gather(first.wait_ready(within=60), second.wait_ready(within=60))
            await _send(producer, prefix, events)

            def handled(member: ServeProcess) -> list[Any]:
                return member.find(lambda r: str(r.get("msg", "")).startswith("handled"))

            async def some_done() -> bool:  # a member handled records (the group may give one all)
                return bool(handled(first) or handled(second))

            await wait_until(some_done, within=30, what="some progress")
            victim = first if handled(first) else second
            victim.kill()
            handled_by_victim = handled(victim)
            assert victim.process is not None
            assert victim.process.returncode == -signal.SIGKILL
            await _send(producer, prefix, events)  # everything again, same event ids
            third = member("c").start()
            await third.wait_ready(within=60)

            async def all_done() -> bool:
                got = await store.list_batches(class_id="class-k", limit=100)
                return len(got) == len(batches) and all(b.latest is not None for b in got)

            await wait_until(all_done, within=60, what="every run in the read model")
            try:
                await out.wait_for(
                    lambda c: len({r.event_id for r in c.on(READY)}) >= len(batches),
                    within=30,
                    what="announcements",
                )
            except TimeoutError:
                seen = sorted({r.data["batch_id"] for r in out.on(READY)})
                pytest.fail(
                    f"{len(seen)} of {len(batches)} runs announced; missing "
                    f"{sorted(set(batches) - set(seen))}; results outbox rows pending: "
                    f"{await store.pending_count()}"
                )
            await asyncio.sleep(1.5)  # give a second announcement time to show up
            ready: dict[str, set[str]] = {}
            for record in out.on(READY):
                ready.setdefault(record.data["batch_id"], set()).add(str(record.event_id))
            notes: dict[str, set[str]] = {}
            for record in out.on(NOTIFY):
                if record.data.get("notification_type") == "batch_results_ready":
                    notes.setdefault(record.data["payload"]["run_id"], set()).add(str(record.event_id))
            assert sorted(ready) == batches
            assert all(len(ids) == 1 for ids in ready.values()), ready
            assert sorted(notes) == [f"run-{b}" for b in batches]
            assert all(len(ids) == 1 for ids in notes.values()), notes
        assert handled_by_victim, "the killed member handled nothing: no mid-flow kill"
        summary = await store.class_results("class-k")
        assert summary is not None
        assert summary.batch_count == len(batches)
        assert dict(summary.by_status) == {"completed_successfully": len(batches)}
        assert (summary.essays_succeeded, summary.essays_failed) == (2 * len(batches), len(batches))
        assert await store.pending_count() == 0
    finally:
        for serve in (first, second, third):
            if serve is not None:
                serve.close()
        await store.close()


@pytest.mark.timeout(90)
async def test_inbox_purge_racing_redelivery_announces_nothing_twice(
    broker: LocalBroker, prefix: str, producer: ProducerLike
) -> None:
    """Held: the results inbox purged every 50 ms with a completion retention of 0.36 s while
    every completion and outcome is redelivered three times (same event ids, out of order,
    after its run completed): each run is announced once, and the read model and the class
    summary are those of one delivery."""
    settings = fast_settings(
        broker.bootstrap,
        prefix,
        consumers=("results",),
        relay_idle_seconds=0.1,
        results_purge_seconds=0.05,
        results_completion_retention_hours=0.0001,
    )
    batches = [f"p{i}" for i in range(6)]
    first: list[tuple[str, dict[str, Any]]] = []
    for n, b in enumerate(batches):
        corr = str(uuid.uuid4())
        first.append(registered(b, user_id="t-p", class_id="class-p", when=at(0)))
        first.append(outcome(b, "spellcheck", corr, when=at(50 + n)))
        first.append(completion(b, f"run-{b}", corr, when=at(100 + n), successful=2, failed=1))
    async with (
        running(settings) as runner,
        Collector(broker.bootstrap, [READY, NOTIFY], topic_prefix=prefix) as out,
    ):
        results = runner.plugins["results"].state
        queries = results.queries
        await _send(producer, prefix, first)
        await out.wait_for(lambda c: len(c.on(READY)) >= len(batches), within=30, what="announcements")
        before = await queries.class_json("class-p", limit=100)
        for _ in range(3):
            await asyncio.sleep(0.5)  # past the retention: the completion ids are purged
            again = [d for d in first if d[0] != REGISTERED]
            await _send(producer, prefix, list(reversed(again)))
        handled = len(first) + 3 * 2 * len(batches)
        await wait_until(lambda: runner.stats.handled >= handled, within=30, what="every redelivery handled")
        await asyncio.sleep(1.0)
        assert len(out.on(READY)) == len(batches)
        notes = [r for r in out.on(NOTIFY) if r.data.get("notification_type") == "batch_results_ready"]
        assert len(notes) == len(batches)
        after = await queries.class_json("class-p", limit=100)
        assert after == before
        assert after is not None
        assert after["batches_by_status"] == {"completed_successfully": len(batches)}
        assert runner.stats.dead_lettered == 0
