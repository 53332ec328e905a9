"""The server's metrics, rendered in Prometheus text format like TF Serving's exporter.

Names are TensorFlow's monitoring names with every character outside
``[a-zA-Z0-9_]`` turned into ``:`` (``/tensorflow/serving/request_count`` ->
``:tensorflow:serving:request_count``). Latencies are microsecond histograms with
TF Serving's buckets (10 us growing by 1.8x, 33 buckets, about 20 minutes); like
TensorFlow's histograms a bucket counts values strictly below its limit.
"""

from __future__ import annotations

import bisect
import re
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

REQUEST_COUNT = "/tensorflow/serving/request_count"
REQUEST_LATENCY = "/tensorflow/serving/request_latency"
RUNTIME_LATENCY = "/tensorflow/serving/runtime_latency"
LOAD_ATTEMPT_COUNT = "/tensorflow/cc/saved_model/load_attempt_count"

# Buckets::Exponential(10, 1.8, 33); the implicit last bucket runs to +Inf.
LATENCY_BUCKETS: tuple[float, ...] = tuple(10 * 1.8**i for i in range(33))


def prometheus_name(name: str) -> str:
    text = re.sub(r"[^a-zA-Z0-9_]", ":", name)
    return "_" + text if text[:1].isdigit() else text


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> list[str]:
    return [f'{n}="{_label_value(v)}"' for n, v in zip(names, values, strict=True)]


@dataclass
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0

    def add(self, value: float) -> None:
        self.counts[bisect.bisect_right(LATENCY_BUCKETS, value)] += 1
        self.total += value


class Metrics:
    """Counters and latency histograms of one server process (thread-safe)."""

    def __init__(self, load_attempts: Callable[[], Mapping[tuple[str, str], int]]) -> None:
        # load attempts are the manager's; read them when a page is rendered
        self._load_attempts = load_attempts
        self._lock = threading.Lock()
        self._requests: Counter[tuple[str, str]] = Counter()
        self._request_latency: dict[tuple[str, str, str], _Histogram] = {}
        self._runtime_latency: dict[tuple[str, str, str], _Histogram] = {}

    def record_request(self, model_name: str, status: str) -> None:
        """One finished request; ``status`` is the code's name (``OK``, ``NOT_FOUND``)."""
        with self._lock:
            self._requests[(model_name, status)] += 1

    def record_request_latency(
        self, model_name: str, api: str, entrypoint: str, micros: float
    ) -> None:
        """A successful request's wall time; ``entrypoint`` is ``GRPC`` or ``REST``."""
        with self._lock:
            key = (model_name, api, entrypoint)
            self._request_latency.setdefault(key, _Histogram()).add(micros)

    def record_runtime_latency(self, model_name: str, api: str, micros: float) -> None:
        """Time spent in TensorFlow itself; the runtime label is TF Serving's ``TF1``."""
        with self._lock:
            key = (model_name, api, "TF1")
            self._runtime_latency.setdefault(key, _Histogram()).add(micros)

    def render(self) -> str:
        """The exposition page, metrics sorted by their TensorFlow names as upstream."""
        with self._lock:
            requests = dict(self._requests)
            request_latency = {
                k: _Histogram(list(h.counts), h.total) for k, h in self._request_latency.items()
            }
            runtime_latency = {
                k: _Histogram(list(h.counts), h.total) for k, h in self._runtime_latency.items()
            }
        lines: list[str] = []
        _counter(lines, LOAD_ATTEMPT_COUNT, ("model_path", "status"), dict(self._load_attempts()))
        _counter(lines, REQUEST_COUNT, ("model_name", "status"), requests)
        _histogram(lines, REQUEST_LATENCY, ("model_name", "API", "entrypoint"), request_latency)
        _histogram(lines, RUNTIME_LATENCY, ("model_name", "API", "runtime"), runtime_latency)
        return "\n".join(lines) + "\n"


def _counter(
    lines: list[str],
    name: str,
    label_names: tuple[str, ...],
    points: Mapping[tuple[str, str], int],
) -> None:
    metric = prometheus_name(name)
    lines.append(f"# TYPE {metric} counter")
    for values, count in sorted(points.items()):
        lines.append(f"{metric}{{{','.join(_labels(label_names, values))}}} {count}")


def _histogram(
    lines: list[str],
    name: str,
    label_names: tuple[str, ...],
    points: Mapping[tuple[str, str, str], _Histogram],
) -> None:
    metric = prometheus_name(name)
    lines.append(f"# TYPE {metric} histogram")
    for values, histogram in sorted(points.items()):
        labels = _labels(label_names, values)
        prefix = f"{metric}_bucket{{{','.join([*labels, ''])}"
        cumulative = 0
        for index, count in enumerate(histogram.counts):
            cumulative += count
            limit = f"{LATENCY_BUCKETS[index]:g}" if index < len(LATENCY_BUCKETS) else "+Inf"
            lines.append(f'{prefix}le="{limit}"}} {cumulative}')
        joined = ",".join(labels)
        lines.append(f"{metric}_sum{{{joined}}} {histogram.total:g}")
        lines.append(f"{metric}_count{{{joined}}} {cumulative}")
