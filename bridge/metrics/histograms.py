"""Histograms counted by hand, for the owners of what they measure (predictor, workers).

A ``Histogram`` is plain lists and a bisect: no ``prometheus_client`` import and
no labelled child lookup per observation, so the hot path pays a few hundred
nanoseconds and a bridge without metrics never loads the library. Each series is
keyed by its label values; ``family`` turns the counts into a
``prometheus_client`` family when scraped.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from typing import Any

# Seconds, fetch to acknowledged output: milliseconds when all is well, up to an
# outage's length when the model server or the broker is away.
EVENT_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60)
# Seconds, one model call: bounded by SERVING__TIMEOUT_MS (5 s by default).
MODEL_CALL_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# Instances per Predict: BATCH__MAX_SIZE bounds them (powers of two up to 1024).
BATCH_SIZE_BUCKETS = tuple(2**i for i in range(11))

Key = tuple[str, ...]


def new_series(bounds: Sequence[float]) -> list[float]:
    """A count per bucket (+Inf last), then the sum; ints count: ``+= 1`` stays cheap."""
    series: list[float] = [0] * (len(bounds) + 1)
    series.append(0.0)
    return series


class Histogram:
    """Series of one histogram, by label values (``()`` for an unlabelled one)."""

    __slots__ = ("bounds", "series")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.series: dict[Key, list[float]] = {}

    def observe(self, value: float, key: Key = ()) -> None:
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = new_series(self.bounds)
        series[bisect.bisect_left(self.bounds, value)] += 1  # le is inclusive, like bisect_left
        series[-1] += value


def family(
    name: str,
    documentation: str,
    labels: Sequence[str],
    bounds: Sequence[float],
    series: Iterable[tuple[Key, list[float]]],
) -> Any:
    """A ``HistogramMetricFamily`` of these series (cumulative, as the format wants)."""
    from prometheus_client.metrics_core import HistogramMetricFamily

    # As prometheus_client writes its own histograms' bounds: "0.005", "1.0", ..., "+Inf".
    les = [*(str(float(bound)) for bound in bounds), "+Inf"]
    histogram = HistogramMetricFamily(name, documentation, labels=list(labels))
    for key, counts in series:
        cumulative, running = [], 0.0
        for le, count in zip(les, counts[:-1], strict=True):
            running += count
            cumulative.append((le, running))
        histogram.add_metric(list(key), cumulative, sum_value=counts[-1])
    return histogram
