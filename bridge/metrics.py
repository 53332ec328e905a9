"""Prometheus metrics for the bridge, with model, route and served version as labels.

Hand-rolled (a dict of counters and fixed-bucket histograms) to keep the runtime
small; served in the text exposition format by a tiny asyncio HTTP responder on
``BRIDGE_METRICS__PORT`` (0 = off).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
from collections.abc import Callable, Mapping

import structlog

log = structlog.get_logger("bridge.metrics")

# Milliseconds: the bridge adds little; the model call dominates.
BUCKETS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)

Labels = tuple[tuple[str, str], ...]
# (model, route, served version, outcome, reason): what observe() is called with.
SeriesKey = tuple[str, str, int | None, str, str]


class Metrics:
    def __init__(self) -> None:
        # Per series: a count per latency bucket (+Inf last), then the latency sum.
        # Observed once per output record, so labels are only formatted at render.
        self._series: dict[SeriesKey, list[float]] = {}
        self.gauges: dict[str, Callable[[], float]] = {}
        # name -> (label name or None, a read of the current counts by label value)
        self.counters: dict[str, tuple[str | None, Callable[[], Mapping[str, float]]]] = {}

    def observe(
        self, model: str, route: str, version: int | None, outcome: str, reason: str, ms: float
    ) -> None:
        """One output record: a result (reason "") or a failure with its reason."""
        key = (model, route, version, outcome, reason)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = [0] * (len(BUCKETS_MS) + 1) + [0.0]
        series[bisect.bisect_left(BUCKETS_MS, ms)] += 1
        series[-1] += ms

    def render(self) -> str:
        records: list[tuple[Labels, int]] = []
        latency: dict[Labels, list[float]] = {}
        for (model, route, version, outcome, reason), series in self._series.items():
            labels = (("model", model), ("route", route), ("version", _served(version)))
            records.append(
                ((*labels, ("outcome", outcome), ("reason", reason)), int(sum(series[:-1])))
            )
            total = latency.setdefault(labels, [0.0] * len(series))
            for i, value in enumerate(series):
                total[i] += value
        lines = [
            "# HELP bridge_records_total Output records written, by route and served version.",
            "# TYPE bridge_records_total counter",
        ]
        lines += [f"bridge_records_total{_fmt(k)} {v}" for k, v in sorted(records)]
        lines += [
            "# HELP bridge_latency_ms Time in the bridge from fetch to produce, per event.",
            "# TYPE bridge_latency_ms histogram",
        ]
        for key, series in sorted(latency.items()):
            running = 0
            for bound, count in zip((*BUCKETS_MS, "+Inf"), series[:-1], strict=True):
                running += int(count)
                lines.append(
                    f"bridge_latency_ms_bucket{_fmt((*key, ('le', str(bound))))} {running}"
                )
            lines.append(f"bridge_latency_ms_sum{_fmt(key)} {series[-1]:.3f}")
            lines.append(f"bridge_latency_ms_count{_fmt(key)} {running}")
        for name, read in sorted(self.gauges.items()):
            lines += [f"# TYPE {name} gauge", f"{name} {read():g}"]
        for name, (label, read_counts) in sorted(self.counters.items()):
            lines.append(f"# TYPE {name} counter")
            for label_value, count in sorted(read_counts().items()):
                shown = _fmt(((label, label_value),)) if label is not None else ""
                lines.append(f"{name}{shown} {count:g}")
        return "\n".join(lines) + "\n"


def _served(version: int | None) -> str:
    return "" if version is None else str(version)


def _fmt(labels: Labels) -> str:
    inner = ",".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in labels
    )
    return "{" + inner + "}"


async def serve_metrics(metrics: Metrics, host: str, port: int) -> asyncio.Server:
    """GET /metrics -> the text exposition; anything else -> 404."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            path = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b""
            if head.startswith(b"GET ") and path.split(b"?")[0] == b"/metrics":
                body, status = metrics.render().encode(), b"200 OK"
            else:
                body, status = b"not found\n", b"404 Not Found"
            writer.write(
                b"HTTP/1.1 " + status + b"\r\nContent-Type: text/plain; version=0.0.4\r\n"
                b"Content-Length: "
                + str(len(body)).encode()
                + b"\r\nConnection: close\r\n\r\n"
                + body
            )
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, host, port)
    log.info("metrics_listening", host=host, port=port)
    return server
