"""What the bridge measures, as ``prometheus_client`` collectors on a registry of its own.

The output records are counted by hand (one list per series, keyed by the flat
tuple ``observe`` is called with), because ``observe`` runs once per record:
``prometheus_client``'s labelled ``Counter`` + ``Histogram`` children cost about
twice as much per call, and would add ``*_created`` series the bridge never had.
The library turns those counts into families at scrape time, and does the
escaping and the exposition formats. Everything else is read live from the
objects that own it, when scraped: gauges, counts, and the histograms their owners
count by hand (``bridge.metrics.histograms``) for the same reason.

``prometheus_client`` is imported at the first scrape, not before: a bridge that
serves no metrics (``BRIDGE_METRICS__PORT=0``) never loads it (about 2 MB and
80 ms of start-up).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from bridge.metrics.histograms import EVENT_BUCKETS_S, Histogram, Key, family, new_series

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

# (model, route, served version, outcome, reason): what observe() is called with.
SeriesKey = tuple[str, str, int | None, str, str]
RECORD_LABELS = ("model", "route", "version", "outcome", "reason")
DURATION_LABELS = RECORD_LABELS[:3]

RECORDS_HELP = "Output records written, by route and served version."
DURATION_HELP = "Seconds from fetching an event to Kafka acknowledging its output record."


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
        self._add(("bridge_records_total", "bridge_event_duration_seconds"), records)

    def observe(
        self, model: str, route: str, version: int | None, outcome: str, reason: str, s: float
    ) -> None:
        """One output record: a result (reason "") or a failure with its reason, ``s`` old."""
        key = (model, route, version, outcome, reason)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = new_series(EVENT_BUCKETS_S)
        series[bisect.bisect_left(EVENT_BUCKETS_S, s)] += 1  # le is inclusive, like bisect_left
        series[-1] += s

    def gauge(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """A value read from its owner at every scrape."""
        self._add((name,), _LiveGauge(name, documentation, read))

    def gauge_by(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str],
        read: Callable[[], Mapping[Key, float]],
    ) -> None:
        """Values by label values (``{("input", "0"): 12}``), read at every scrape."""
        self._add((name,), _LabelledGauge(name, documentation, tuple(labels), read))

    def histogram(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str],
        histogram: Histogram,
        constant: Mapping[str, str] | None = None,
    ) -> None:
        """A histogram its owner counts by hand; ``constant`` labels follow its own."""
        extra = dict(constant or {})
        collector = _LiveHistogram(name, documentation, (*labels, *extra), histogram, extra)
        self._add((name,), collector)

    def process(self) -> None:
        """``prometheus_client``'s process metrics (memory, CPU, open files) of this process."""
        self._add(("process_resident_memory_bytes",), _ProcessMetrics())

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
        yield HistogramMetricFamily(
            "bridge_event_duration_seconds", DURATION_HELP, labels=DURATION_LABELS
        )

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.metrics_core import CounterMetricFamily

        records = CounterMetricFamily("bridge_records_total", RECORDS_HELP, labels=RECORD_LABELS)
        # The histogram is per route and version: outcomes and reasons are summed into it.
        durations: dict[Key, list[float]] = {}
        for (model, route, version, outcome, reason), series in sorted(
            self.series.items(), key=_sortable
        ):
            served = "" if version is None else str(version)
            records.add_metric([model, route, served, outcome, reason], sum(series[:-1]))
            total = durations.setdefault((model, route, served), [0.0] * len(series))
            for i, value in enumerate(series):
                total[i] += value
        yield records
        yield family(
            "bridge_event_duration_seconds",
            DURATION_HELP,
            DURATION_LABELS,
            EVENT_BUCKETS_S,
            durations.items(),
        )


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


@dataclass(frozen=True, slots=True, eq=False)  # registered by identity
class _LabelledGauge:
    name: str
    documentation: str
    labels: tuple[str, ...]
    read: Callable[[], Mapping[Key, float]]

    def describe(self) -> Iterator[Metric]:
        yield self._family()

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for label_values, value in sorted(self.read().items()):
            family.add_metric(list(label_values), value)
        yield family

    def _family(self) -> Any:
        from prometheus_client.metrics_core import GaugeMetricFamily

        return GaugeMetricFamily(self.name, self.documentation, labels=self.labels)


@dataclass(frozen=True, slots=True, eq=False)  # registered by identity
class _LiveHistogram:
    name: str
    documentation: str
    labels: tuple[str, ...]
    histogram: Histogram
    constant: dict[str, str]

    def describe(self) -> Iterator[Metric]:
        yield family(self.name, self.documentation, self.labels, self.histogram.bounds, ())

    def collect(self) -> Iterator[Metric]:
        extra = tuple(self.constant.values())
        # A copy: a scrape must not see a series added while it iterates (it runs on the
        # loop, so nothing does today; a copy keeps that true if it ever moves).
        series = sorted(self.histogram.series.items())
        labelled = [((*key, *extra), counts) for key, counts in series]
        yield family(self.name, self.documentation, self.labels, self.histogram.bounds, labelled)


@dataclass(slots=True, eq=False)  # registered by identity
class _ProcessMetrics:
    """Made at the first scrape, like the registry: ``prometheus_client`` is loaded then."""

    collector: Any = field(default=None)

    def describe(self) -> Iterator[Metric]:
        return iter(())  # its names come from /proc at collection; nothing to check ahead

    def collect(self) -> Iterator[Metric]:
        if self.collector is None:
            from prometheus_client import ProcessCollector

            self.collector = ProcessCollector(registry=None)
        yield from self.collector.collect()
