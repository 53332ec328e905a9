"""Memory is bounded by bytes: a large backlog of small or large events stays under a bound.

With the defaults, the bridge drains a backlog of 100k small events (~300 bytes)
and one of 50 KB events; its peak resident set (the kernel's ``VmHWM``) must stay
under 80 MB and 96 MB. Before the byte bound, the bridge held ``MAX_PENDING``
events whatever their size (2,000 x 50 KB = 100 MB of input alone) and 2 MiB
fetches: 83.7 MB with small events, 103.5 MB with 50 KB ones.

The dev broker ignores the fetch size limits per partition and answers with more
than asked (about 1.7 MB per partition for 256 KiB), so these figures are higher
than against Apache Kafka, not lower.
"""

from __future__ import annotations

import asyncio
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


@pytest.mark.parametrize(
    ("count", "size", "bound_mb"),
    [(100_000, 300, 80.0), (2_000, 50_000, 96.0)],
    ids=["100k-small", "2k-50KB"],
)
async def test_peak_rss_under_a_large_backlog_stays_under_the_bound(
    kafka_bootstrap: str,
    topic_prefix: str,
    model_server: ModelServer,
    bridges: Bridges,
    count: int,
    size: int,
    bound_mb: float,
) -> None:
    topics = await make_topics(kafka_bootstrap, topic_prefix)
    sent = await asyncio.to_thread(
        produce_with_librdkafka, kafka_bootstrap, topics.input, padded(count, size)
    )
    env = bridge_env(
        kafka_bootstrap, topics.names, model_server, group=topics.group, BRIDGE_BATCH__MAX_SIZE="64"
    )
    bridge = bridges.start(env)
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
    print(f"{count} events of {size} bytes: peak RSS {peak:.1f} MB (bound {bound_mb} MB)")
    assert peak < bound_mb, f"peak RSS {peak:.1f} MB over {bound_mb} MB"
