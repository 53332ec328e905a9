"""Memory is bounded by bytes: neither a longer backlog nor larger events raise the peak
past what the byte bounds allow.

The bridge drains backlogs with the defaults and its peak resident set (the kernel's
``VmHWM``) is compared between runs of one test, so what is measured is growth, not
the machine: absolute RSS moves by several MB between machines and even between two
checkouts of one commit (the shared libraries' clean pages that the kernel maps
depend on what its page cache holds; gRPC's library alone is 6-13 MB of it).

- 100k small events (~300 bytes) against 10k: a backlog ten times longer costs at most
  ``SAME_MB`` more. A bridge that held what it fetched, or counted without a byte
  bound, grows with the backlog.
- 2,000 events of 50 KB (100 MB of input) against the 100k small ones: at most the
  byte bound (``BATCH__MAX_PENDING_BYTES``) plus the fetches in flight more. Before
  the byte bound the bridge held ``MAX_PENDING`` events whatever their size: 103.5 MB
  against 83.7 MB, 20 MB more.

The absolute figures are printed, and ``make bench`` reports the bridge's peak RSS
against the 80 MB target with its setup. The dev broker ignores the per-partition
fetch limit and answers about 1.7 MB per partition for 256 KiB, which
``FETCHES_MB`` allows for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path

import orjson
import pytest

from tests.integration.kafka_io import (
    GroupOffsets,
    Item,
    Topics,
    end_offsets,
    make_topics,
    payment_items,
    produce_with_librdkafka,
)
from tests.integration.procs import Bridges, stopped_counts
from tools.harness.processes import BridgeProcess, ModelServer, bridge_env

pytestmark = pytest.mark.integration

DRAIN_POLLS = 1200  # x 0.2 s


async def offsets_at_end(bootstrap: str, topics: Topics, ends: dict[int, int]) -> bool:
    async with GroupOffsets.of(bootstrap, topics) as offsets:
        return await offsets.read() == ends


def peak_rss_mb(bridge: BridgeProcess) -> float:
    """The process's high-water resident set so far (Linux ``/proc``)."""
    assert bridge.pid is not None
    for line in Path(f"/proc/{bridge.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


def padded(count: int, size: int) -> list[Item]:
    """Valid payments, each padded with an extra field to about ``size`` bytes."""
    base = payment_items(1000, seed=51)
    items = []
    for i in range(count):
        item = base[i % len(base)]
        event = orjson.loads(item.value or b"{}")
        if size > len(item.value or b""):
            event["note"] = "x" * (size - len(item.value or b""))
        items.append(Item(item.key, orjson.dumps(event), item.headers, "result"))
    return items


SAME_MB = 6.0  # run-to-run noise of one build is up to ~3 MB here; 90k more events are 27 MB
PENDING_BYTES_MB = 8.0  # BRIDGE_BATCH__MAX_PENDING_BYTES' default (8 MiB)
FETCHES_MB = 3 * 2.0  # three partitions' fetch answers, as the dev broker sizes them


async def drained_peak_mb(
    kafka_bootstrap: str,
    topic_prefix: str,
    model_server: ModelServer,
    bridges: Bridges,
    count: int,
    size: int,
) -> float:
    """A fresh topic and group with ``count`` events of ``size`` bytes; the bridge's peak."""
    topics = await make_topics(kafka_bootstrap, f"{topic_prefix}-{count}-{size}")
    sent = await asyncio.to_thread(
        produce_with_librdkafka, kafka_bootstrap, topics.input, padded(count, size)
    )
    env = bridge_env(
        kafka_bootstrap, topics.names, model_server, group=topics.group, BRIDGE_BATCH__MAX_SIZE="64"
    )
    bridge = bridges.start(env, name=f"bridge-{count}-{size}")
    ends = end_offsets(sent)
    async with GroupOffsets.of(kafka_bootstrap, topics) as offsets:
        for _ in range(DRAIN_POLLS):
            if await offsets.read() == ends:
                break
            await asyncio.sleep(0.2)  # polling the group's progress
    assert await offsets_at_end(kafka_bootstrap, topics, ends), bridge.output()
    peak = peak_rss_mb(bridge)
    code = await asyncio.to_thread(bridge.stop)
    assert code == 0, bridge.output()
    assert stopped_counts(bridge)["events"] == count
    print(f"{count} events of {size} bytes: peak RSS {peak:.1f} MB")
    return peak


async def test_peak_rss_grows_with_neither_the_backlog_nor_the_event_size(
    kafka_bootstrap: str, topic_prefix: str, model_server: ModelServer, bridges: Bridges
) -> None:
    def drain(count: int, size: int) -> Awaitable[float]:
        return drained_peak_mb(kafka_bootstrap, topic_prefix, model_server, bridges, count, size)

    short = await drain(10_000, 300)
    long = await drain(100_000, 300)
    large = await drain(2_000, 50_000)
    assert long - short <= SAME_MB, f"10x the backlog: {short:.1f} -> {long:.1f} MB"
    budget = PENDING_BYTES_MB + FETCHES_MB
    assert large - long <= budget, f"50 KB events: {long:.1f} -> {large:.1f} MB (budget {budget})"
