"""The A/B test chart of ``make demo``: traffic share and latency per served version.

Two panels over the run, in bins of the input's send time (seconds since the first
payment was produced): the share of events each model version served (stacked), and
each version's median latency (end to end, and the bridge's own ``bridge_ms``). A
vertical line marks the label move.

matplotlib (a dev dependency) is imported only by the demo, never by the service.
The figure is drawn with the Agg canvas directly (no pyplot, no GUI backend), so it
works headless and leaves matplotlib's global state alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# One colour per model version, the same in both panels.
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b")
MOVE_COLOUR = "#d62728"


@dataclass(frozen=True, slots=True)
class VersionSeries:
    """One served version, bin by bin."""

    version: str  # "1", "2" (or "unknown" over REST)
    events: Sequence[int]
    e2e_p50_ms: Sequence[float | None]
    bridge_p50_ms: Sequence[float | None]


@dataclass(frozen=True, slots=True)
class AbChart:
    title: str
    bin_s: float
    starts: Sequence[float]  # each bin's start, seconds since the first payment
    series: Sequence[VersionSeries]
    move_started_s: float | None = None
    move_done_s: float | None = None
    move_text: str = "label move"


def _nan(values: Sequence[float | None]) -> list[float]:
    return [math.nan if v is None else v for v in values]


def _label(version: str) -> str:
    return f"v{version}" if version.isdigit() else version


def write_ab_chart(chart: AbChart, path: Path) -> Path:
    """Draw ``chart`` into a PNG at ``path``; returns the path."""
    figure = Figure(figsize=(11, 7.5), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    share_ax, latency_ax = figure.subplots(2, 1, sharex=True)
    figure.suptitle(chart.title, fontsize=13)

    totals = [sum(s.events[i] for s in chart.series) for i in range(len(chart.starts))]
    bottom = [0.0] * len(chart.starts)
    centres = [start + chart.bin_s / 2 for start in chart.starts]
    for index, series in enumerate(chart.series):
        colour = COLOURS[index % len(COLOURS)]
        share = [100 * n / t if t else 0.0 for n, t in zip(series.events, totals, strict=True)]
        share_ax.bar(
            chart.starts,
            share,
            width=chart.bin_s * 0.92,
            bottom=bottom,
            align="edge",
            color=colour,
            edgecolor="white",
            linewidth=0.5,
            label=f"{_label(series.version)} ({sum(series.events)} events)",
        )
        bottom = [b + s for b, s in zip(bottom, share, strict=True)]
        latency_ax.plot(
            centres,
            _nan(series.e2e_p50_ms),
            color=colour,
            marker="o",
            markersize=4,
            linewidth=1.8,
            label=f"{_label(series.version)} end to end p50",
        )
        latency_ax.plot(
            centres,
            _nan(series.bridge_p50_ms),
            color=colour,
            linestyle="--",
            linewidth=1.2,
            label=f"{_label(series.version)} bridge_ms p50",
        )

    share_ax.set_title(f"Traffic share per served version ({chart.bin_s:g} s bins, stacked)")
    share_ax.set_ylabel("share of results, %")
    share_ax.set_ylim(0, 100)
    share_ax.set_yticks([0, 10, 25, 50, 75, 90, 100])
    share_ax.grid(axis="y", alpha=0.3)

    latency_ax.set_title(
        "Latency p50 per version (end to end: input CreateTime -> result read; "
        "bridge_ms: fetched -> handed to producer)",
        fontsize=10,
    )
    latency_ax.set_ylabel("latency p50, ms")
    latency_ax.set_xlabel("seconds since the first payment was produced (by input send time)")
    latency_ax.set_ylim(bottom=0)
    latency_ax.grid(alpha=0.3)

    end = chart.starts[-1] + chart.bin_s if chart.starts else 1.0
    latency_ax.set_xlim(0, end)
    for ax in (share_ax, latency_ax):
        if chart.move_started_s is not None and chart.move_done_s is not None:
            ax.axvspan(chart.move_started_s, chart.move_done_s, color=MOVE_COLOUR, alpha=0.15)
        if chart.move_done_s is not None:
            ax.axvline(
                chart.move_done_s,
                color=MOVE_COLOUR,
                linewidth=2,
                label=f"{chart.move_text} ({chart.move_done_s:.2f} s)",
            )
    if chart.move_done_s is not None:
        share_ax.annotate(
            chart.move_text,
            xy=(chart.move_done_s, 50),
            xytext=(8, 0),
            textcoords="offset points",
            va="center",
            fontsize=10,
            bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": MOVE_COLOUR},
        )
    share_ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
    latency_ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)

    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path
