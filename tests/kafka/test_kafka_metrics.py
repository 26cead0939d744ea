"""``serve --http`` exposes Prometheus metrics at ``/metrics`` behind the operations token:
a real ``serve`` process on a SQLite store, real workers answering its commands through the
broker, the text scraped over HTTP and parsed with ``prometheus-client``'s own parser. Every
family moves as the runs dictate; each handled record writes one JSON log line."""

from __future__ import annotations

import signal
import uuid
from pathlib import Path

import httpx
import pytest
from kafka_harness import ServeProcess, wait_until
from pipeline_state_kafka import ProducerLike
from pipeline_state_kafka.metrics import FAMILIES
from pipeline_state_kafka.testing import Collector, LocalBroker, free_port, send_envelopes
from prometheus_client.parser import text_string_to_metric_families
from proof_harness import PHASE_OF_TOPIC, WATCHED_TOPICS, Workers, completed

from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

pytestmark = pytest.mark.kafka

TOKENS = {
    "PIPELINE_STATE_HTTP_API_TOKEN": "api-secret",
    "PIPELINE_STATE_HTTP_INTERNAL_TOKEN": "internal-secret",
    "PIPELINE_STATE_HTTP_OPS_TOKEN": "ops-secret",
    "PIPELINE_STATE_METRICS_STORE_SECONDS": "0.2",
}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> tuple[set[str], Samples]:
    """The family names and every sample, keyed by sample name and labels."""
    names: set[str] = set()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return names, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, found), v in samples.items() if n == name and wanted <= found)


async def scrape(http: httpx.AsyncClient) -> Samples:
    answer = await http.get("/metrics", headers={"Authorization": "Bearer ops-secret"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    names, samples = parse(answer.text)
    assert set(FAMILIES) <= names
    return samples


async def test_kafka_serve_metrics_follow_the_runs_behind_the_ops_token(
    broker: LocalBroker, prefix: str, producer: ProducerLike, tmp_path: Path
) -> None:
    port = free_port()
    store = f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    serve = ServeProcess(broker.bootstrap, store, prefix, env=TOKENS, log_file=tmp_path / "serve.log")
    serve.command += ["--http", f"127.0.0.1:{port}"]
    serve.start()
    env = HuleEduEnvelopes()
    batch_ids = ["m1", "m2"]
    requests: dict[str, str] = {}
    try:
        await serve.wait_ready()
        async with (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http,
            Collector(broker.bootstrap, WATCHED_TOPICS, topic_prefix=prefix) as out,
            # nlp commands are held: the runs stay active until released
            Workers(
                broker.bootstrap, prefix, producer, answer=lambda r: r.topic == Topic.SPELLCHECK
            ) as workers,
        ):
            for bad in (
                {},
                {"Authorization": "Bearer api-secret"},
                {"Authorization": "Bearer internal-secret"},
            ):
                refused = await http.get("/metrics", headers=bad)
                assert refused.status_code == 401, bad
            registration = env.register("m1", items=2)
            for batch_id in batch_ids:
                essays = env.item_ids(batch_id, 2)
                corr = str(uuid.uuid4())
                request = env.request(batch_id, "nlp", correlation_id=corr)
                requests[batch_id] = request[1]["event_id"]
                first = registration if batch_id == "m1" else env.register(batch_id, items=2)
                await send_envelopes(
                    producer, [first, env.provisioned(batch_id, essays), request], topic_prefix=prefix
                )
            await send_envelopes(producer, [registration], topic_prefix=prefix)  # a duplicate
            await producer.send(f"{prefix}{Topic.PHASE_OUTCOME}", b"not json", b"m1")  # poison

            async def both_active() -> bool:
                samples = await scrape(http)
                return value(samples, "pipeline_state_active_runs") == 2

            await wait_until(both_active, what="two active runs in the metrics")
            await out.wait_for(lambda c: len(c.on(Topic.NLP)) == 2, what="both nlp commands")
            held = await scrape(http)
            assert value(held, "pipeline_state_oldest_active_run_age_seconds") > 0
            assert value(held, "pipeline_state_completion_latency_seconds_count") == 0

            workers.release()
            await out.wait_for(lambda c: completed(c, batch_ids), what="both completions")

            async def settled() -> bool:
                samples = await scrape(http)
                lags = [v for (n, _), v in samples.items() if n == "pipeline_state_consumer_lag"]
                return (
                    value(samples, "pipeline_state_completion_latency_seconds_count") == 2
                    and value(samples, "pipeline_state_active_runs") == 0
                    and value(samples, "pipeline_state_outbox_pending") == 0
                    and bool(lags)
                    and not any(lags)
                )

            await wait_until(settled, what="the metrics to show both runs completed and published")
            samples = await scrape(http)
            answered = len(workers.answered)
        assert serve.signal(signal.SIGINT) == 0
    finally:
        serve.close()

    messages = "pipeline_state_messages_total"
    assert value(samples, messages, topic=Topic.BATCH_REGISTER, result="applied") == 2
    assert value(samples, messages, topic=Topic.BATCH_REGISTER, result="duplicate") == 1
    # Kafka orders records within a topic only: a request fetched before its batch's
    # provisioning waits with it (deferred) and applies when the batch is ready, counted with
    # the message that let it apply; both runs completed either way (checked above).
    requests_seen = total(samples, messages, topic=Topic.PIPELINE_REQUEST)
    request_results = {
        result: value(samples, messages, topic=Topic.PIPELINE_REQUEST, result=result)
        for result in ("applied", "deferred")
    }
    assert requests_seen == sum(request_results.values()) == 2, request_results
    outcomes = total(samples, messages, topic=Topic.PHASE_OUTCOME)
    assert value(samples, messages, topic=Topic.PHASE_OUTCOME, result="applied") == 4  # 2 phases x 2
    assert outcomes == answered + 1  # every worker answer, and the poison record
    assert value(samples, messages, topic=Topic.PHASE_OUTCOME, result="dead_lettered") == 1
    assert total(samples, "pipeline_state_dead_lettered_total") == 1
    assert (
        value(
            samples,
            "pipeline_state_dead_lettered_total",
            topic=Topic.PHASE_OUTCOME,
            reason="InvalidMessageError",
        )
        == 1
    )
    handled = total(samples, messages) - 1  # the dead-lettered record was no unit of work
    units = value(samples, "pipeline_state_decision_seconds_count")
    assert 1 <= units <= handled
    assert value(samples, "pipeline_state_decision_seconds_sum") > 0
    assert value(samples, "pipeline_state_decision_seconds_bucket", le="+Inf") == units
    assert value(samples, "pipeline_state_completion_latency_seconds_sum") > 0
    assert value(samples, "pipeline_state_cas_retries_total") == 0
    for gauge in ("outbox_parked", "waiting_facts", "outbox_pending"):
        assert samples[(f"pipeline_state_{gauge}", frozenset())] == 0
    lag_topics = {dict(labels)["topic"] for (n, labels) in samples if n == "pipeline_state_consumer_lag"}
    assert Topic.PHASE_OUTCOME.value in lag_topics
    assert not lag_topics & set(PHASE_OF_TOPIC)  # only the topics the service consumes

    # One structured log line per unit of work: the request's, with its correlation id. Its
    # result agrees with the metric: applied, or kept waiting for the batch's provisioning.
    logged_results: list[str] = []
    for batch_id, event_id in requests.items():
        lines = serve.find(lambda r, e=event_id: r.get("event_id") == e)  # type: ignore[misc]
        assert len(lines) == 1, lines
        (line,) = lines
        assert line["msg"] == f"handled {Topic.PIPELINE_REQUEST}"
        assert (line["batch_id"], line["level"]) == (batch_id, "INFO")
        assert line["result"] in ("applied", "deferred:batch_registration"), line
        logged_results.append(line["result"].partition(":")[0])
        assert line["correlation_id"]
        assert "trace_id" not in line  # no span is current without a tracer
    assert sorted(logged_results) == sorted(
        result for result, count in request_results.items() for _ in range(int(count))
    )
