"""Prometheus metrics of a running service, in a registry of its own.

:class:`ServiceMetrics` holds the families below in its own
:class:`~prometheus_client.CollectorRegistry` (never the process-wide default one), so
several services, or several tests, in one process do not collide. The consumer counts
what each unit of work did (:meth:`ServiceMetrics.handled`,
:meth:`ServiceMetrics.dead_lettered`), the relay's publisher reports what went out
(:class:`MeteredPublisher`), and the gauges that need the store come from a
:class:`~pipeline_state_kafka.gauges.StoreSampler`, renewed at a bounded rate when
:meth:`ServiceMetrics.exposition` is asked for the text format.

=============================================== ========= ==========================================
family                                          type      what
=============================================== ========= ==========================================
``pipeline_state_messages_total``               counter   records handled, by ``topic`` and
                                                          ``result`` (``applied``, ``duplicate``,
                                                          ``ignored``, ``denied``, ``deferred``,
                                                          ``dead_lettered``)
``pipeline_state_dead_lettered_total``          counter   dead letters, by ``topic`` and ``reason``
                                                          (the error class)
``pipeline_state_decision_seconds``             histogram one unit of work, load to commit
``pipeline_state_completion_latency_seconds``   histogram last outcome consumed to completion
                                                          published
``pipeline_state_outbox_pending``               gauge     outbox rows not yet published
``pipeline_state_outbox_oldest_age_seconds``    gauge     age of the oldest of them
``pipeline_state_outbox_parked``                gauge     rows parked after too many failures
``pipeline_state_active_runs``                  gauge     batches with an active run
``pipeline_state_oldest_active_run_age_seconds`` gauge    age of the oldest active run
``pipeline_state_waiting_facts``                gauge     early facts waiting for their batch
``pipeline_state_cas_retries_total``            counter   units of work decided again after a
                                                          lost compare-and-set
``pipeline_state_consumer_lag``                 gauge     records behind the partition's end, by
                                                          ``topic`` and ``partition``
=============================================== ========= ==========================================
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from pipeline_state.ports import OutboxMessage, Publisher

from .gauges import StoreReading, StoreSampler
from .handlers import Handled

__all__ = ["DEFAULT_STORE_READ_SECONDS", "FAMILIES", "LagSource", "MeteredPublisher", "ServiceMetrics"]

DEFAULT_STORE_READ_SECONDS = 10.0
"""How old a store reading may get before a scrape takes a new one."""

PENDING_COMPLETIONS = 10_000
"""Completions waiting for the relay that are remembered (the oldest are forgotten beyond)."""

DECISION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
COMPLETION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

LagSource = Callable[[], Mapping[tuple[str, int], int]]
"""Records behind the end of each ``(topic, partition)`` a consumer holds."""

_GAUGES: tuple[tuple[str, str, Callable[[StoreReading], float | None]], ...] = (
    ("pipeline_state_outbox_pending", "Outbox rows not yet published.", lambda r: r.outbox_pending),
    (
        "pipeline_state_outbox_oldest_age_seconds",
        "Age of the oldest outbox row not yet published.",
        lambda r: r.outbox_oldest_age_seconds,
    ),
    (
        "pipeline_state_outbox_parked",
        "Outbox rows parked after too many failures.",
        lambda r: r.outbox_parked,
    ),
    ("pipeline_state_active_runs", "Batches with an active pipeline run.", lambda r: r.active_runs),
    (
        "pipeline_state_oldest_active_run_age_seconds",
        "Age of the oldest active pipeline run.",
        lambda r: r.oldest_active_run_age_seconds,
    ),
    ("pipeline_state_waiting_facts", "Early facts waiting for their batch.", lambda r: r.waiting),
)

FAMILIES: tuple[str, ...] = (
    "pipeline_state_messages",
    "pipeline_state_dead_lettered",
    "pipeline_state_decision_seconds",
    "pipeline_state_completion_latency_seconds",
    *(name for name, _, _ in _GAUGES),
    "pipeline_state_cas_retries",
    "pipeline_state_consumer_lag",
)
"""The family names (counters without their ``_total`` suffix, as the parser reports them)."""


_COUNTED_CHILDREN = 1_024
"""At most this many (topic, result) children are kept at hand (see ``ServiceMetrics``)."""


def result_label(result: str) -> str:
    """The ``result`` label of a handled record: its kind, without the reason."""
    return result.partition(":")[0]


class _StoreGauges(Collector):
    """The store gauges, from the sampler's latest reading (no store access here)."""

    def __init__(self, sampler: StoreSampler | None) -> None:
        self.sampler = sampler

    def collect(self) -> Iterable[Metric]:
        reading = None if self.sampler is None else self.sampler.latest
        for name, documentation, value_of in _GAUGES:
            family = GaugeMetricFamily(name, documentation)
            value = None if reading is None else value_of(reading)
            if value is not None:
                family.add_metric([], float(value))
            yield family


class _LagGauge(Collector):
    def __init__(self) -> None:
        self.sources: list[LagSource] = []

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "pipeline_state_consumer_lag",
            "Records behind the end of the partition (high watermark minus handled position).",
            labels=["topic", "partition"],
        )
        for source in self.sources:
            for (topic, partition), lag in sorted(source().items()):
                family.add_metric([topic, str(partition)], float(lag))
        yield family


class ServiceMetrics:
    """The metrics of one service; see the module docstring for the families.

    ``sampler`` provides the store gauges (left without a sample when ``None``); ``clock``
    is the monotonic clock that times units of work and completions.
    """

    content_type = CONTENT_TYPE_LATEST
    """The media type of :meth:`exposition`'s text."""

    def __init__(
        self, sampler: StoreSampler | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.sampler = sampler
        self.clock = clock
        registry = self.registry
        self.messages = Counter(
            "pipeline_state_messages", "Inbound records handled.", ["topic", "result"], registry=registry
        )
        self.dead_letters = Counter(
            "pipeline_state_dead_lettered",
            "Records parked in a dead-letter topic.",
            ["topic", "reason"],
            registry=registry,
        )
        self.decisions = Histogram(
            "pipeline_state_decision_seconds",
            "One unit of work: load, decide, commit.",
            buckets=DECISION_BUCKETS,
            registry=registry,
        )
        self.completion_latency = Histogram(
            "pipeline_state_completion_latency_seconds",
            "From consuming the last outcome of a run to publishing its completion.",
            buckets=COMPLETION_BUCKETS,
            registry=registry,
        )
        self.cas_retries = Counter(
            "pipeline_state_cas_retries",
            "Units of work decided again after losing a compare-and-set race.",
            registry=registry,
        )
        registry.register(_StoreGauges(sampler))
        self._lag = _LagGauge()
        registry.register(self._lag)
        self._completions: OrderedDict[str, float] = OrderedDict()
        self._counted: dict[tuple[str, str], Counter] = {}
        """The ``pipeline_state_messages`` child of each (topic, result) seen: ``labels()``
        validates and locks on every call, more than the increment itself costs."""

    # -- what the consumer and the relay report -----------------------------------------
    def watch_lag(self, source: LagSource) -> None:
        """Export the consumer lag ``source`` reports (read at each scrape, from memory)."""
        self._lag.sources.append(source)

    def unit_of_work(self, seconds: float) -> None:
        """A unit of work committed in ``seconds``."""
        self.decisions.observe(seconds)

    def handled(self, topic: str, handled: Handled, *, consumed_at: float) -> None:
        """Count a handled record consumed at ``consumed_at`` (on :attr:`clock`)."""
        key = (topic, result_label(handled.result))
        child = self._counted.get(key)
        if child is None:
            child = self.messages.labels(*key)
            if len(self._counted) < _COUNTED_CHILDREN:  # topics and result kinds are few
                self._counted[key] = child
        child.inc()
        if handled.cas_retries:
            self.cas_retries.inc(handled.cas_retries)
        for event_id in handled.completions:
            self._completions[event_id] = consumed_at
            self._completions.move_to_end(event_id)
        while len(self._completions) > PENDING_COMPLETIONS:
            self._completions.popitem(last=False)

    def dead_lettered(self, topic: str, reason: str) -> None:
        """Count a record (or waiting fact) parked in ``<topic>.DLQ`` because of ``reason``."""
        self.messages.labels(topic, "dead_lettered").inc()
        self.dead_letters.labels(topic, reason).inc()

    def published(self, messages: Iterable[OutboxMessage]) -> None:
        """The relay published ``messages``: time the completions among them."""
        now = self.clock()
        for message in messages:
            consumed_at = self._completions.pop(message.event_id, None)
            if consumed_at is not None:
                self.completion_latency.observe(max(0.0, now - consumed_at))

    # -- exposition ---------------------------------------------------------------------
    async def exposition(self) -> bytes:
        """The Prometheus text format of every family (the store read again when stale)."""
        if self.sampler is not None:
            await self.sampler.read()
        return generate_latest(self.registry)


class MeteredPublisher:
    """A :class:`~pipeline_state.ports.Publisher` that tells ``metrics`` what went out."""

    def __init__(self, inner: Publisher, metrics: ServiceMetrics) -> None:
        self.inner = inner
        self.metrics = metrics

    async def publish(self, messages: Sequence[OutboxMessage]) -> Sequence[BaseException | None]:
        results = await self.inner.publish(messages)
        self.metrics.published(m for m, error in zip(messages, results, strict=False) if error is None)
        return results
