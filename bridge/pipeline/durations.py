"""Event durations in fixed log-spaced buckets: percentiles without keeping every value.

Recording is one bisect and one increment, whatever the rate; a reader takes
``snapshot`` now and then and subtracts the previous one to get an interval's
distribution (``percentile``). Bucket bounds grow by 10 %, so a percentile read
from a bucket's upper bound is at most 10 % high (and at least ``LOWEST_MS``).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

LOWEST_MS = 0.1
HIGHEST_MS = 3_600_000.0  # an hour; anything longer lands in the last bucket
GROWTH = 1.1


def _bounds() -> list[float]:
    bounds = [LOWEST_MS]
    while bounds[-1] < HIGHEST_MS:
        bounds.append(bounds[-1] * GROWTH)
    return bounds


BOUNDS_MS: Sequence[float] = tuple(_bounds())


class Durations:
    """Counts per bucket since start; the last bucket also holds what is over the top."""

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts = [0] * len(BOUNDS_MS)

    def record(self, ms: float) -> None:
        self._counts[min(bisect_left(BOUNDS_MS, ms), len(BOUNDS_MS) - 1)] += 1

    def snapshot(self) -> list[int]:
        return list(self._counts)


def interval(now: Sequence[int], before: Sequence[int]) -> list[int]:
    """The counts recorded between two snapshots."""
    return [a - b for a, b in zip(now, before, strict=True)]


def percentile(counts: Sequence[int], q: float) -> float | None:
    """The upper bound of the bucket that holds the ``q`` quantile (0 < q <= 1), or None."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for bound, count in zip(BOUNDS_MS, counts, strict=True):
        seen += count
        if seen >= rank:
            return bound
    return BOUNDS_MS[-1]
