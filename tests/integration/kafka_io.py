"""Kafka I/O for the integration tests: the harness's (``tools.harness``), under the names
the tests use, and the one check that asserts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from bridge.kafka.records import BRIDGE, CONNECT
from tools.harness.kafka_io import (
    GroupOffsets,
    Item,
    Producer,
    Sent,
    Topics,
    end_offsets,
    make_topics,
    missing,
    payment_items,
    produce_raw_batch,
    produce_with_librdkafka,
    wait_for_inputs,
)
from tools.harness.outputs import (
    Output,
    Outputs,
    SourceKey,
    duplicated,
    ended_as,
    order_violations,
)

__all__ = [
    "BRIDGE",
    "CONNECT",
    "GroupOffsets",
    "Item",
    "Output",
    "Outputs",
    "Producer",
    "Sent",
    "SourceKey",
    "Topics",
    "drain_exactly_once",
    "duplicated",
    "end_offsets",
    "ended_as",
    "make_topics",
    "missing",
    "order_violations",
    "payment_items",
    "produce_raw_batch",
    "produce_with_librdkafka",
    "wait_for_inputs",
]


async def drain_exactly_once(
    bootstrap: str, topics: Topics, bridge: Any, sent: Sequence[Sent], timeout_s: float = 90
) -> tuple[Outputs, dict[int, int | None]]:
    """Run ``bridge`` until every input has a record, stop it (exit 0), and check the promise.

    Exactly one record per input, in order per partition; returns the outputs and the
    group's committed offsets after the stop.
    """
    async with Outputs.of(bootstrap, topics) as out, GroupOffsets.of(bootstrap, topics) as offsets:
        await wait_for_inputs(out, sent, offsets, timeout_s, bridge.output)
        code = await asyncio.to_thread(bridge.stop)
        assert code == 0, bridge.output()
        final = await offsets.read()
    assert not missing(sent, out), "inputs without a record"
    assert not duplicated(out)
    assert not order_violations(out, topics.partitions)
    return out, final
