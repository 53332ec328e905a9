"""What the bridge measures, as ``prometheus_client`` collectors on a registry of its own.

The output records are counted by hand (one list per series, keyed by the flat
tuple ``observe`` is called with), because ``observe`` runs once per record:
``prometheus_client``'s labelled ``Counter`` + ``Histogram`` children cost about
twice as much per call, and would add ``*_created`` series the bridge never had.
The library turns those counts into families at scrape time, and does the
escaping and the exposition formats. Everything else is read live from the
objects that own it, when scraped.

``prometheus_client`` is imported at the first scrape, not before: a bridge that
serves no metrics (``BRIDGE_METRICS__PORT=0``) never loads it (about 2 MB and
80 ms of start-up).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

# Milliseconds: the bridge adds little; the model call dominates.
BUCKETS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
# As prometheus_client writes its own histograms' bounds: "1.0", ..., "+Inf".
_BOUNDS = [*(str(float(bound)) for bound in BUCKETS_MS), "+Inf"]

# (model, route, served version, outcome, reason): what observe() is called with.
SeriesKey = tuple[str, str, int | None, str, str]
RECORD_LABELS = ("model", "route", "version", "outcome", "reason")
LATENCY_LABELS = RECORD_LABELS[:3]

RECORDS_HELP = "Output records written, by route and served version."
LATENCY_HELP = "Time in the bridge from fetch to produce, per event."


class _Collector(Protocol):
    """What ``prometheus_client``'s registry calls on a collector."""

    def describe(self) -> Iterator[Metric]: ...
    def collect(self) -> Iterator[Metric]: ...


class Metrics:
    """The bridge's metrics; each instance has its own registry, so tests can make many."""

    def __init__(self) -> None:
        records = _OutputRecords()
        self._series = records.series  # updated here: one call less per record
        self._collectors: dict[str, _Collector] = {}
        self._registry: CollectorRegistry | None = None
        self._add(("bridge_records_total", "bridge_latency_ms"), records)

    def observe(
        self, model: str, route: str, version: int | None, outcome: str, reason: str, ms: float
    ) -> None:
        """One output record: a result (reason "") or a failure with its reason."""
        key = (model, route, version, outcome, reason)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = [0] * (len(BUCKETS_MS) + 1)  # ints: cheaper += 1
            series.append(0.0)
        series[bisect.bisect_left(BUCKETS_MS, ms)] += 1  # le is inclusive, like bisect_left
        series[-1] += ms

    def gauge(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """A value read from its owner at every scrape."""
        self._add((name,), _LiveGauge(name, documentation, read))

    def counter(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """A count its owner keeps (name ends in ``_total``), read at every scrape."""
        self._add((name,), _LiveCounter(name, documentation, None, lambda: {"": read()}))

    def counter_by(
        self, name: str, documentation: str, label: str, read: Callable[[], Mapping[str, float]]
    ) -> None:
        """Counts by one label's value (``{"ok": 3, "failed": 1}``), read at every scrape."""
        self._add((name,), _LiveCounter(name, documentation, label, read))

    @property
    def registry(self) -> CollectorRegistry:
        """This instance's ``prometheus_client`` registry, made at the first use."""
        if self._registry is None:
            from prometheus_client import CollectorRegistry

            registry = CollectorRegistry(auto_describe=False)
            for collector in dict.fromkeys(self._collectors.values()):
                registry.register(collector)
            self._registry = registry
        return self._registry

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """The body and content type for a scrape with this Accept header."""
        from prometheus_client.exposition import choose_encoder

        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type

    def _add(self, names: tuple[str, ...], collector: _Collector) -> None:
        for name in names:
            if name in self._collectors:
                raise ValueError(f"metric {name} is registered already")
        for name in names:
            self._collectors[name] = collector
        if self._registry is not None:
            self._registry.register(collector)


class _OutputRecords:
    def __init__(self) -> None:
        # Per series: a count per latency bucket (+Inf last), then the latency sum.
        self.series: dict[SeriesKey, list[float]] = {}

    def describe(self) -> Iterator[Metric]:
        from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily

        yield CounterMetricFamily("bridge_records_total", RECORDS_HELP, labels=RECORD_LABELS)
        yield HistogramMetricFamily("bridge_latency_ms", LATENCY_HELP, labels=LATENCY_LABELS)

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily

        records = CounterMetricFamily("bridge_records_total", RECORDS_HELP, labels=RECORD_LABELS)
        # The histogram is per route and version: outcomes and reasons are summed into it.
        latency: dict[tuple[str, str, str], list[float]] = {}
        for (model, route, version, outcome, reason), series in sorted(
            self.series.items(), key=_sortable
        ):
            served = "" if version is None else str(version)
            records.add_metric([model, route, served, outcome, reason], sum(series[:-1]))
            total = latency.setdefault((model, route, served), [0.0] * len(series))
            for i, value in enumerate(series):
                total[i] += value
        yield records
        histogram = HistogramMetricFamily("bridge_latency_ms", LATENCY_HELP, labels=LATENCY_LABELS)
        for labels, series in latency.items():
            cumulative, running = [], 0.0
            for bound, count in zip(_BOUNDS, series[:-1], strict=True):
                running += count
                cumulative.append((bound, running))
            histogram.add_metric(list(labels), cumulative, sum_value=series[-1])
        yield histogram


def _sortable(item: tuple[SeriesKey, list[float]]) -> tuple[str, str, int, str, str]:
    model, route, version, outcome, reason = item[0]
    return model, route, -1 if version is None else version, outcome, reason


@dataclass(frozen=True, slots=True)
class _LiveGauge:
    name: str
    documentation: str
    read: Callable[[], float]

    def describe(self) -> Iterator[Metric]:
        from prometheus_client.metrics_core import GaugeMetricFamily

        yield GaugeMetricFamily(self.name, self.documentation)

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.metrics_core import GaugeMetricFamily

        yield GaugeMetricFamily(self.name, self.documentation, value=self.read())


@dataclass(frozen=True, slots=True)
class _LiveCounter:
    name: str
    documentation: str
    label: str | None  # None: one unlabelled value, read as {"": value}
    read: Callable[[], Mapping[str, float]]

    def describe(self) -> Iterator[Metric]:
        yield self._family()

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for label_value, count in sorted(self.read().items()):
            family.add_metric([] if self.label is None else [label_value], count)
        yield family

    def _family(self) -> Any:
        from prometheus_client.metrics_core import CounterMetricFamily

        labels = () if self.label is None else (self.label,)
        return CounterMetricFamily(self.name, self.documentation, labels=labels)
