"""The periodic ``summary`` log line: what the bridge did in the last interval.

Per-batch lines are at debug, so at info a busy bridge and an idle one alike log
one ``summary`` every ``BRIDGE_LOG__SUMMARY_INTERVAL_MS`` (and the lines for
changes of state: paused, model server down, rebalances). It reads what the bridge
keeps anyway (``Counts``, whose ``durations`` are fixed buckets), so its cost is
per interval, not per event. ``lag`` is optional: a callable that returns the
consumer lag summed over the assigned partitions, or None while it is not known.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import structlog

from bridge.outputs import Counts
from bridge.pipeline.durations import interval, percentile

log = structlog.get_logger(__name__)

LagSource = Callable[[], "int | None"]


class Summary:
    def __init__(
        self,
        counts: Counts,
        interval_s: float,
        pending: Callable[[], int],
        paused: Callable[[], bool],
        lag: LagSource | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval_s = interval_s
        self.lag = lag  # may be set after construction, once a lag reader exists
        self._counts = counts
        self._pending = pending
        self._paused = paused
        self._clock = clock
        self._since = clock()
        self._before = self._totals()

    def _totals(self) -> tuple[int, int, int, dict[str, int], list[int]]:
        counts = self._counts
        return (
            counts.events,
            counts.results,
            counts.failures,
            dict(counts.reasons),
            counts.durations.snapshot(),
        )

    def take(self) -> dict[str, Any]:
        """The fields of one summary line, for the interval since the previous one."""
        now, totals = self._clock(), self._totals()
        events, results, failures, reasons, durations = totals
        events0, results0, failures0, reasons0, durations0 = self._before
        self._since, self._before, since = now, totals, self._since
        window = interval(durations, durations0)
        fields: dict[str, Any] = {
            "interval_s": round(now - since, 3),
            "events": events - events0,
            "results": results - results0,
            "failures": failures - failures0,
            "failure_reasons": {
                reason: count - reasons0.get(reason, 0)
                for reason, count in sorted(reasons.items())
                if count != reasons0.get(reason, 0)
            },
            "p50_ms": _rounded(percentile(window, 0.5)),
            "p99_ms": _rounded(percentile(window, 0.99)),
            "pending": self._pending(),
            "paused": self._paused(),
        }
        lag = self._read_lag()
        if lag is not None:
            fields["lag"] = lag
        return fields

    def _read_lag(self) -> int | None:
        if self.lag is None:
            return None
        try:
            return self.lag()
        # A lag reader's fault must not end the summaries, nor (a task that dies) the bridge.
        except Exception as exc:  # noqa: BLE001 - logged, and the line goes out without lag
            log.debug("summary_lag_failed", error=repr(exc))
            return None

    def emit(self) -> None:
        log.info("summary", **self.take())

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self.emit()


def _rounded(ms: float | None) -> float | None:
    return None if ms is None else round(ms, 3)
