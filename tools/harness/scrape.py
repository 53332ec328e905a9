"""Reading a bridge's ``/metrics`` from a tool: summed series, and the lag over a run.

The demo watches ``bridge_consumer_lag`` while it runs, and before it stops the
bridge waits for the lag to come back to 0 (everything written and committed).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

LAG = "bridge_consumer_lag"
OLDEST = "bridge_oldest_in_flight_seconds"


async def scrape(client: httpx.AsyncClient, url: str) -> dict[str, float]:
    """Each family's samples summed over their labels (a family without samples: absent)."""
    response = await client.get(url)
    response.raise_for_status()
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
    return sums


@dataclass
class LagWatch:
    """The summed consumer lag, sampled every ``every_s`` while the run lasts."""

    url: str
    every_s: float = 1.0
    peak: float = 0.0
    peak_oldest_s: float = 0.0
    last: float | None = None
    samples: list[tuple[float, float]] = field(default_factory=list)  # (wall time, lag)
    error: str | None = None

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=2.0) as client:
            while True:
                await self.sample(client)
                await asyncio.sleep(self.every_s)

    async def sample(self, client: httpx.AsyncClient) -> None:
        try:
            sums = await scrape(client, self.url)
        except (httpx.HTTPError, ValueError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            return
        if LAG not in sums:
            return  # not read yet (the first read is a couple of seconds after the join)
        self.last = sums[LAG]
        self.samples.append((time.time(), self.last))
        self.peak = max(self.peak, self.last)
        self.peak_oldest_s = max(self.peak_oldest_s, sums.get(OLDEST, 0.0))

    async def wait_for_zero(self, timeout_s: float) -> float | None:
        """Seconds until the lag read 0, or None if it did not within ``timeout_s``."""
        started = time.monotonic()
        async with httpx.AsyncClient(timeout=2.0) as client:
            while time.monotonic() - started < timeout_s:
                await self.sample(client)
                if self.last == 0:
                    return time.monotonic() - started
                await asyncio.sleep(0.5)
        return None
