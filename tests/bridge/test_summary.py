"""The summary line: per-interval counts, failures by reason, percentiles, state, lag."""

from __future__ import annotations

import pytest
import structlog

from bridge.outputs import Counts
from bridge.pipeline.durations import BOUNDS_MS, GROWTH, Durations, percentile
from bridge.summary import Summary


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def written(counts: Counts, ms: float, reason: str | None = None) -> None:
    """What ``Outputs.written`` does to the counts for one acknowledged record."""
    counts.durations.record(ms)
    if reason is None:
        counts.results += 1
    else:
        counts.failures += 1
        counts.reasons[reason] = counts.reasons.get(reason, 0) + 1


def near(value: float | None, expected: float) -> bool:
    """Within one bucket above: the percentile is read from a bucket's upper bound."""
    return value is not None and expected <= value <= expected * GROWTH


def test_a_summary_covers_its_interval_only() -> None:
    counts, clock = Counts(), Clock()
    state = {"pending": 7, "paused": False}
    summary = Summary(counts, 30, lambda: state["pending"], lambda: state["paused"], clock=clock)
    counts.events = 105
    for i in range(100):
        written(counts, 1.0 + i * 0.1)  # 1.0 .. 10.9 ms
    written(counts, 500.0, "not_json")
    written(counts, 600.0, "not_json")
    written(counts, 700.0, "wrong_type")
    clock.now += 30

    first = summary.take()
    assert first["interval_s"] == 30
    assert (first["events"], first["results"], first["failures"]) == (105, 100, 3)
    assert first["failure_reasons"] == {"not_json": 2, "wrong_type": 1}
    assert near(first["p50_ms"], 6.1)  # the 52nd of 103 values
    assert near(first["p99_ms"], 600.0)  # the 102nd
    assert first["pending"] == 7 and first["paused"] is False
    assert "lag" not in first, "no lag source: no lag field"

    # The next interval: only what happened since, and the state now.
    counts.events += 2
    written(counts, 2000.0)
    written(counts, 2000.0, "busy")
    state.update(pending=0, paused=True)
    clock.now += 31.5
    second = summary.take()
    assert (second["events"], second["results"], second["failures"]) == (2, 1, 1)
    assert second["failure_reasons"] == {"busy": 1}
    assert near(second["p50_ms"], 2000.0) and near(second["p99_ms"], 2000.0)
    assert second["interval_s"] == 31.5
    assert second["pending"] == 0 and second["paused"] is True


def test_an_idle_interval_has_zero_counts_and_no_percentiles() -> None:
    clock = Clock()
    summary = Summary(Counts(), 30, lambda: 0, lambda: False, clock=clock)
    clock.now += 30
    line = summary.take()
    assert (line["events"], line["results"], line["failures"]) == (0, 0, 0)
    assert line["failure_reasons"] == {}
    assert line["p50_ms"] is None and line["p99_ms"] is None


def test_lag_comes_from_the_source_once_it_is_known() -> None:
    lags: list[int | None] = [None, 42]
    summary = Summary(Counts(), 30, lambda: 0, lambda: False, lag=lambda: lags.pop(0))
    assert "lag" not in summary.take(), "not known yet"
    assert summary.take()["lag"] == 42


def test_a_failing_lag_source_leaves_the_field_out() -> None:
    def broken() -> int:
        raise RuntimeError("no offsets yet")

    summary = Summary(Counts(), 30, lambda: 0, lambda: False)
    summary.lag = broken  # wired after construction, as a lag reader would be
    assert "lag" not in summary.take()


def test_emit_logs_one_info_summary_line() -> None:
    counts = Counts(events=3, results=3)
    summary = Summary(counts, 30, lambda: 0, lambda: False, lag=lambda: 5)
    counts.events, counts.results = 4, 4
    with structlog.testing.capture_logs() as logs:
        summary.emit()
    (line,) = logs
    assert line["event"] == "summary" and line["log_level"] == "info"
    assert line["events"] == 1 and line["lag"] == 5


@pytest.mark.parametrize("ms", [0.0, 0.05, 0.1, 1.0, 37.2, 1234.5, 3_600_000.0, 1e9])
def test_a_duration_lands_in_the_bucket_at_or_just_above_it(ms: float) -> None:
    durations = Durations()
    durations.record(ms)
    value = percentile(durations.snapshot(), 0.5)
    assert value is not None
    if ms >= BOUNDS_MS[-1]:
        assert value == BOUNDS_MS[-1], "past the top: the last bucket"
    else:
        assert max(ms, BOUNDS_MS[0]) <= value <= max(ms * GROWTH, BOUNDS_MS[0])
