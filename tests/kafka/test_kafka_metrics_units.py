"""The metrics' parts without a broker: store readings at a bounded rate, a registry per
service, the ``/metrics`` route's token rule, and log lines that carry the current trace."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import attrs
import httpx
import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from pipeline_state_http import HttpSettings, create_app
from pipeline_state_kafka.dashboard import PANELS
from pipeline_state_kafka.gauges import ACTIVE_RUNS_LIMIT, StoreSampler, read_store
from pipeline_state_kafka.handlers import Handled
from pipeline_state_kafka.metrics import FAMILIES, ServiceMetrics
from pipeline_state_kafka.panel_data import Scrape, evaluate, panel_series
from pipeline_state_kafka.stats import ServiceStats
from pipeline_state_service.logs import configure_logging
from pipeline_state_service.summary import Summary
from prometheus_client.parser import text_string_to_metric_families

from pipeline_state import InMemoryStore, PipelineService
from pipeline_state.ports import Change, OutboxMessage
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from pipeline_state.testing import T0, make_state, with_deadline

TRACE_ID, SPAN_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7


class Ticks:
    """A monotonic clock moved by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_kafka_store_gauges_are_read_at_a_bounded_rate() -> None:
    store = InMemoryStore()
    ticks = Ticks()
    sampler = StoreSampler(store, store, min_interval=10.0, clock=ticks)
    metrics = ServiceMetrics(sampler)
    service = PipelineService(store)
    env = HuleEduEnvelopes()
    await service.handle_message(*env.register("g1", items=2))
    for _ in range(5):
        await metrics.exposition()
    assert sampler.readings == 1
    ticks.now += 10.0
    text = (await metrics.exposition()).decode()
    assert sampler.readings == 2
    values = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert values["pipeline_state_outbox_pending"] == 1  # the registration's announcement
    assert values["pipeline_state_active_runs"] == 0
    with pytest.raises(ValueError, match="min_interval"):
        StoreSampler(store, store, min_interval=-1)


async def test_kafka_the_memory_stores_gauges_count_every_active_run() -> None:
    # Before: the memory store could not count its runs, so a reading listed at most
    # ACTIVE_RUNS_LIMIT of them and the summary line said "1000+".
    store = InMemoryStore()
    count = ACTIVE_RUNS_LIMIT + 5
    for i in range(count):
        state = with_deadline(make_state(f"many-{i:05d}"), None)
        assert state.active_run is not None
        run = attrs.evolve(state.active_run, accepted_at=T0 + timedelta(seconds=i))
        await store.commit(Change(state.batch_id, None, attrs.evolve(state, active_run=run), T0))
    reading = await read_store(store, store, T0 + timedelta(hours=1))
    assert reading.active_runs == count
    assert not reading.active_runs_capped
    assert reading.oldest_active_run_age_seconds == 3600.0
    line = (await Summary(ServiceStats(), store, store).sample()).line()
    assert f"active_runs={count} " in line


async def test_kafka_each_service_has_a_registry_of_its_own() -> None:
    ticks = Ticks()
    first, second = ServiceMetrics(clock=ticks), ServiceMetrics(clock=ticks)
    first.handled("t", Handled(result="ignored:stale", completions=("c1",), cas_retries=2), consumed_at=100.0)
    ticks.now = 101.5
    first.published([OutboxMessage("c1", "done", "b1", {}), OutboxMessage("other", "done", "b1", {})])
    one = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families((await first.exposition()).decode())
        for s in f.samples
    }
    two = (await second.exposition()).decode()
    assert one[("pipeline_state_messages_total", (("result", "ignored"), ("topic", "t")))] == 1
    assert one[("pipeline_state_cas_retries_total", ())] == 2
    assert one[("pipeline_state_completion_latency_seconds_sum", ())] == 1.5
    assert one[("pipeline_state_completion_latency_seconds_count", ())] == 1
    assert "pipeline_state_messages_total{" not in two
    assert {f.name for f in text_string_to_metric_families(two)} >= set(FAMILIES)


@pytest.mark.parametrize("public", [False, True])
async def test_kafka_metrics_route_takes_the_ops_token_unless_public(public: bool) -> None:
    store = InMemoryStore()
    settings = HttpSettings(
        api_token="api", internal_token="internal", ops_token="ops", public_metrics=public
    )
    app = create_app(
        PipelineService(store), settings=settings, metrics=ServiceMetrics(StoreSampler(store, store))
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        anonymous = await http.get("/metrics")
        api = await http.get("/metrics", headers={"Authorization": "Bearer api"})
        ops = await http.get("/metrics", headers={"Authorization": "Bearer ops"})
    assert ops.status_code == 200
    assert "pipeline_state_outbox_pending 0.0" in ops.text
    assert (anonymous.status_code, api.status_code) == ((200, 200) if public else (401, 401))
    assert "/metrics" not in app.openapi()["paths"]


def test_kafka_public_metrics_setting_comes_from_the_environment() -> None:
    assert HttpSettings.from_environ({"PIPELINE_STATE_HTTP_PUBLIC_METRICS": "yes"}).public_metrics
    assert not HttpSettings.from_environ({}).public_metrics
    with pytest.raises(ValueError, match="PIPELINE_STATE_HTTP_PUBLIC_METRICS"):
        HttpSettings.from_environ({"PIPELINE_STATE_HTTP_PUBLIC_METRICS": "sometimes"})


def test_kafka_log_lines_are_json_off_a_terminal_with_the_current_trace(
    capsys: pytest.CaptureFixture[str],
) -> None:
    handler = configure_logging("INFO", "auto")  # stderr is captured: not a terminal
    log = logging.getLogger("pipeline_state_kafka.consumer")
    try:
        span = NonRecordingSpan(SpanContext(TRACE_ID, SPAN_ID, is_remote=False, trace_flags=TraceFlags(1)))
        with trace.use_span(span):
            log.info("handled %s", "topic-a", extra={"correlation_id": "c-1", "event_id": "e-1"})
        log.info("handled %s", "topic-b", extra={"correlation_id": "c-2", "event_id": "e-2"})
    finally:
        logging.getLogger().removeHandler(handler)
    inside, outside = (json.loads(line) for line in capsys.readouterr().err.splitlines())
    assert inside["msg"] == "handled topic-a"
    assert (inside["correlation_id"], inside["event_id"]) == ("c-1", "e-1")
    assert (inside["trace_id"], inside["span_id"]) == ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
    assert outside["correlation_id"] == "c-2"
    assert "trace_id" not in outside
    assert "span_id" not in outside
    with pytest.raises(ValueError, match="log format"):
        configure_logging("INFO", "xml")  # type: ignore[arg-type]


async def test_kafka_panel_queries_evaluate_like_prometheus_over_real_scrapes() -> None:
    ticks = Ticks()
    metrics = ServiceMetrics(clock=ticks)
    first = Scrape.parse(0.0, (await metrics.exposition()).decode())
    for result, count in (("applied", 30), ("duplicate", 10)):
        for _ in range(count):
            metrics.handled("t", Handled(result=result), consumed_at=ticks.now)
    for seconds in (0.002, 0.002, 0.004, 0.02):  # buckets 0.0025, 0.0025, 0.005, 0.025
        metrics.unit_of_work(seconds)
    second = Scrape.parse(10.0, (await metrics.exposition()).decode())
    scrapes = [first, second]

    rates = evaluate("sum by (result) (rate(pipeline_state_messages_total[1m]))", scrapes, 1)
    assert rates == {frozenset({("result", "applied")}): 3.0, frozenset({("result", "duplicate")}): 1.0}
    assert evaluate("rate(pipeline_state_messages_total[1m])", scrapes, 0) == {}  # one point: no rate
    median = evaluate(
        "histogram_quantile(0.5, sum by (le) (rate(pipeline_state_decision_seconds_bucket[5m])))", scrapes, 1
    )
    assert median == {frozenset(): pytest.approx(0.0025)}  # the 2nd of 4 falls at the top of the first bucket
    (decision,) = (p for p in PANELS if p.title.startswith("Decision"))
    assert set(panel_series(decision, scrapes)) == {"p50", "p95", "p99"}
    with pytest.raises(ValueError, match="does not know"):
        evaluate("avg(pipeline_state_active_runs)", scrapes, 1)


async def test_kafka_an_app_without_metrics_has_no_metrics_route() -> None:
    from pipeline_state_service import ServeSettings
    from pipeline_state_service.web import build_http_app

    store = InMemoryStore()
    app = build_http_app(PipelineService(store), settings=HttpSettings(ops_token="ops"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        missing = await http.get("/metrics", headers={"Authorization": "Bearer ops"})
    assert missing.status_code == 404
    off = ServeSettings.from_args(
        _Args(), {"PIPELINE_STATE_METRICS": "0", "PIPELINE_STATE_METRICS_STORE_SECONDS": "2"}
    )
    assert (off.metrics, off.metrics_store_seconds) == (False, 2.0)


class _Args:
    kafka = "127.0.0.1:9092"


async def test_kafka_records_are_counted_by_topic_and_result_kind_past_the_children_kept() -> None:
    metrics = ServiceMetrics()
    kinds = ("applied", "duplicate", "ignored:not_active", "ignored:stale", "denied:batch_not_ready")
    for round_ in range(3):
        for index, result in enumerate(kinds):
            metrics.handled(
                f"topic.{index % 2}", Handled(event_id=f"e{round_}{index}", result=result), consumed_at=1.0
            )
    for index in range(1_100):  # more (topic, result) pairs than the children kept at hand
        metrics.handled(f"other.{index}", Handled(result="applied"), consumed_at=1.0)
        metrics.handled(f"other.{index}", Handled(result="applied"), consumed_at=1.0)
    text = (await metrics.exposition()).decode()
    counted = {
        (s.labels["topic"], s.labels["result"]): s.value
        for f in text_string_to_metric_families(text)
        if f.name == "pipeline_state_messages"
        for s in f.samples
        if s.name == "pipeline_state_messages_total"
    }
    assert counted[("topic.0", "applied")] == 3
    assert counted[("topic.1", "duplicate")] == 3
    assert counted[("topic.0", "ignored")] == 3  # its reason is not a label
    assert counted[("topic.1", "ignored")] == 3
    assert counted[("topic.0", "denied")] == 3
    assert all(counted[(f"other.{i}", "applied")] == 2 for i in range(1_100))
    assert sum(counted.values()) == 15 + 2_200
