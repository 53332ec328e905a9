"""The plumbing of the ``make chaos`` scenarios: streams, polling, waiting, and the
bridges' processes and peak RSS.

The Kafka and process helpers underneath are the harness's (``tools.harness``), the
same the integration tests use, so a long run checks exactly what the short CI runs
check.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from tools import report
from tools.harness.kafka_io import GroupOffsets, Item, Producer, Sent, end_offsets
from tools.harness.outputs import Outputs
from tools.harness.processes import BridgeProcess, Bridges


class ScenarioError(Exception):
    """A scenario could not finish (a timeout, a process that died); its row misses."""


# -- processes ---------------------------------------------------------------------------


class RssPeaks:
    """Peak resident set (VmHWM) per bridge process, sampled while it lives."""

    def __init__(self) -> None:
        self.by_log: dict[str, float] = {}

    def sample(self, bridges: Iterable[BridgeProcess]) -> None:
        for bridge in bridges:
            if bridge.process is None or bridge.process.poll() is not None:
                continue
            peak = report.peak_rss_mb(bridge.pid)
            if peak is not None:
                name = bridge.log_path.stem
                self.by_log[name] = max(self.by_log.get(name, 0.0), round(peak, 1))

    async def watch(self, bridges: Bridges, every_s: float = 0.5) -> None:
        """Sample ``bridges.started`` until cancelled."""
        while True:
            self.sample(bridges.started)
            await asyncio.sleep(every_s)

    @property
    def peak(self) -> float | None:
        return max(self.by_log.values()) if self.by_log else None


@contextlib.asynccontextmanager
async def bridge_pool(folder: Path, rss: RssPeaks) -> AsyncIterator[Bridges]:
    """Bridges whose every process is sampled for RSS and stopped at the end."""
    bridges = Bridges(folder)
    watcher = asyncio.create_task(rss.watch(bridges), name="rss")
    try:
        yield bridges
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        rss.sample(bridges.started)
        await asyncio.to_thread(bridges.close)


async def kill(bridge: BridgeProcess, rss: RssPeaks) -> float:
    """SIGKILL; the wall-clock time it was dead by (every record it wrote is older)."""
    rss.sample([bridge])
    await asyncio.to_thread(bridge.kill)
    return time.time()


def alive(bridge: BridgeProcess) -> bool:
    return bridge.process is not None and bridge.process.poll() is None


def tail(*bridges: BridgeProcess) -> Callable[[], str]:
    return lambda: "\n".join(f"--- {b.log_path.name}:\n{b.output()[-3000:]}" for b in bridges)


# -- streams and outputs -----------------------------------------------------------------


class Stream:
    """Produce items at ``rate`` per second in chunks, until they run out or ``finish``."""

    def __init__(self, producer: Producer, topic: str, items: Sequence[Item], rate: float) -> None:
        self.producer = producer  # .sent grows as chunks are acked
        self.topic = topic
        self.items = items
        self.rate = rate
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> Stream:
        self._task = asyncio.create_task(self._run(), name=f"stream-{self.topic}")
        return self

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        chunk = 25
        for first in range(0, len(self.items), chunk):
            if self._stop.is_set():
                return
            await self.producer.send_all(self.topic, self.items[first : first + chunk])
            await asyncio.sleep(max(0.0, started + (first + chunk) / self.rate - loop.time()))

    @property
    def sent(self) -> list[Sent]:
        return list(self.producer.sent)

    @property
    def done(self) -> bool:
        return self._task is not None and self._task.done()

    def check(self) -> None:
        """Raise the stream's error, if it failed."""
        if self._task is not None and self._task.done() and not self._task.cancelled():
            self._task.result()

    async def finish(self) -> list[Sent]:
        """Stop producing (or wait for the last item); what was produced."""
        self._stop.set()
        if self._task is not None:
            await self._task
        return self.sent

    async def wait(self) -> list[Sent]:
        """Until every item is produced."""
        if self._task is not None:
            await self._task
        return self.sent


class Seen:
    """Inputs with at least one record so far, kept up to date as ``out.records`` grows."""

    def __init__(self, out: Outputs) -> None:
        self.out = out
        self._read = 0
        self.sources: set[tuple[int, int]] = set()

    def count(self) -> int:
        records = self.out.records
        for record in records[self._read :]:
            self.sources.update(record.sources)
        self._read = len(records)
        return len(self.sources)


def reached(seen: Seen, inputs: int, records: int = 0) -> Callable[[], bool]:
    """For ``poll_until``: at least ``inputs`` inputs have a record (and ``records`` read)."""
    return lambda: seen.count() >= inputs and len(seen.out.records) >= records


async def poll_until(
    outputs: Sequence[Outputs],
    done: Callable[[], bool],
    what: str,
    timeout_s: float,
    check: Callable[[], None] = lambda: None,
    explain: Callable[[], str] = str,
) -> None:
    """Read the outputs until ``done()``; ``check`` raises if something broke meanwhile."""
    deadline = time.monotonic() + timeout_s
    while not done():
        check()
        if time.monotonic() > deadline:
            raise ScenarioError(f"timed out after {timeout_s:g} s waiting for {what}\n{explain()}")
        for out in outputs:
            await out.poll(timeout_ms=100)


async def keep_reading(
    outputs: Sequence[Outputs], seconds: float, check: Callable[[], None]
) -> None:
    """Read the outputs for ``seconds`` (the stream flows on), checking as in ``poll_until``."""
    deadline = time.monotonic() + seconds
    await poll_until(outputs, lambda: time.monotonic() >= deadline, "", seconds + 60, check)


async def settle(out: Outputs) -> None:
    """Read until two polls in a row bring nothing (what was written is all there)."""
    quiet = 0
    while quiet < 2:
        quiet = 0 if await out.poll(timeout_ms=500) else quiet + 1


async def wait_all(
    out: Outputs,
    sent: list[Sent],
    offsets: GroupOffsets,
    timeout_s: float,
    check: Callable[[], None] = lambda: None,
    explain: Callable[[], str] = str,
) -> None:
    """Until every input has a record, or the group committed to the end (then what is
    missing is lost, and the accounting says which). ``kafka_io.wait_for_inputs``, but
    incremental (a 100k-event run rescans nothing) and with a ``check`` per poll."""
    seen = Seen(out)
    wanted = {s.source for s in sent}
    ends = end_offsets(sent)
    deadline = time.monotonic() + timeout_s
    next_look = 0.0
    while seen.count() < len(wanted) or not wanted <= seen.sources:
        check()
        if time.monotonic() >= next_look:
            next_look = time.monotonic() + 1.0
            if await offsets.read() == ends:
                await settle(out)
                return
        if time.monotonic() > deadline:
            left = len(wanted - seen.sources)
            raise ScenarioError(
                f"timed out after {timeout_s:g} s waiting for {left} of {len(wanted)} inputs"
                f"\n{explain()}"
            )
        await out.poll()
    await settle(out)


# -- time --------------------------------------------------------------------------------


def first_output_after(out: Outputs, wall: float, kind: str | None = None) -> float | None:
    """Seconds from ``wall`` to the first record (of ``kind``) the bridge wrote after it."""
    times = [
        r.timestamp_s
        for r in out.records
        if r.timestamp_s >= wall and (kind is None or r.kind == kind)
    ]
    return min(times) - wall if times else None


def clock(wall: float) -> str:
    """A wall-clock time as the bridges' logs show it (UTC)."""
    return datetime.fromtimestamp(wall, UTC).strftime("%H:%M:%S.%f")[:-3]
