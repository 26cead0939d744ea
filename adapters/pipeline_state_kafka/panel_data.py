"""The dashboard's panels computed from recorded scrapes, without Prometheus or Grafana.

A :class:`Scrape` is one ``/metrics`` text and when it was taken; :func:`panel_series`
evaluates a :class:`~pipeline_state_kafka.dashboard.Panel`'s queries over a list of them
and returns one series of points per legend, as Grafana would draw them. Only the query
forms the dashboard uses are understood (an unknown form raises :class:`ValueError`)::

    NAME                                       a gauge or counter as it is
    rate(NAME[WINDOW])                         per-second increase over the window
    sum by (LABEL, ...) (QUERY)                summed per value of the labels
    histogram_quantile(Q, QUERY)               quantile of ``_bucket`` series (by ``le``)

``rate_window`` replaces every query's window (a short recorded run needs a short window).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence

import attrs
from prometheus_client.parser import text_string_to_metric_families

from .dashboard import Panel

__all__ = ["Scrape", "Series", "Vector", "evaluate", "panel_series"]

Labels = frozenset[tuple[str, str]]
Vector = dict[Labels, float]
"""One instant of a query: a value per label set."""
Series = dict[str, list[tuple[float, float]]]
"""Points ``(seconds, value)`` per legend."""

_RATE = re.compile(r"^rate\((\w+)\[(\d+)([smh])\]\)$")
_SUM_BY = re.compile(r"^sum by \(([\w, ]+)\) \((.*)\)$")
_QUANTILE = re.compile(r"^histogram_quantile\(([\d.]+), (.*)\)$")
_NAME = re.compile(r"^\w+$")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


@attrs.frozen
class Scrape:
    """One exposition text taken ``at`` seconds into the recording."""

    at: float
    samples: Mapping[str, Vector]

    @classmethod
    def parse(cls, at: float, text: str) -> Scrape:
        """A scrape from the Prometheus text format."""
        samples: dict[str, Vector] = defaultdict(dict)
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[sample.name][frozenset(sample.labels.items())] = sample.value
        return cls(at, dict(samples))


def _rate(name: str, window: float, scrapes: Sequence[Scrape], index: int) -> Vector:
    now = scrapes[index]
    first = next(s for s in scrapes[: index + 1] if now.at - s.at <= window)
    if first is now:
        return {}
    elapsed = now.at - first.at
    before = first.samples.get(name, {})
    return {
        labels: max(0.0, value - before.get(labels, 0.0)) / elapsed
        for labels, value in now.samples.get(name, {}).items()
    }


def _sum_by(keep: Sequence[str], vector: Vector) -> Vector:
    out: Vector = defaultdict(float)
    for labels, value in vector.items():
        out[frozenset((k, v) for k, v in labels if k in keep)] += value
    return dict(out)


def _bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' ``histogram_quantile`` over cumulative ``(upper bound, count)`` buckets."""
    buckets.sort()
    total = buckets[-1][1]
    if total <= 0:
        return math.nan
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


def _quantile(q: float, vector: Vector) -> Vector:
    groups: dict[Labels, list[tuple[float, float]]] = defaultdict(list)
    for labels, value in vector.items():
        le = dict(labels).get("le")
        if le is not None:
            groups[frozenset((k, v) for k, v in labels if k != "le")].append((float(le), value))
    found = {labels: _bucket_quantile(q, buckets) for labels, buckets in groups.items()}
    return {labels: value for labels, value in found.items() if not math.isnan(value)}


def evaluate(expr: str, scrapes: Sequence[Scrape], index: int, *, rate_window: float | None = None) -> Vector:
    """``expr`` at the time of ``scrapes[index]``."""
    expr = expr.strip()
    if match := _QUANTILE.match(expr):
        inner = evaluate(match.group(2), scrapes, index, rate_window=rate_window)
        return _quantile(float(match.group(1)), inner)
    if match := _SUM_BY.match(expr):
        keep = [label.strip() for label in match.group(1).split(",")]
        return _sum_by(keep, evaluate(match.group(2), scrapes, index, rate_window=rate_window))
    if match := _RATE.match(expr):
        window = rate_window or float(match.group(2)) * _UNITS[match.group(3)]
        return _rate(match.group(1), window, scrapes, index)
    if _NAME.match(expr):
        return dict(scrapes[index].samples.get(expr, {}))
    raise ValueError(f"a query form the panel renderer does not know: {expr!r}")


def _legend(template: str, labels: Labels) -> str:
    values = dict(labels)
    return re.sub(r"\{\{(\w+)\}\}", lambda m: values.get(m.group(1), ""), template).strip() or template


def panel_series(panel: Panel, scrapes: Sequence[Scrape], *, rate_window: float | None = None) -> Series:
    """Every query of ``panel`` at every scrape: the points of each legend, in time order."""
    series: Series = defaultdict(list)
    for index, scrape in enumerate(scrapes):
        for query in panel.queries:
            for labels, value in evaluate(query.expr, scrapes, index, rate_window=rate_window).items():
                series[_legend(query.legend, labels)].append((scrape.at, value))
    return dict(series)
