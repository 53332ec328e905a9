"""DELIVERY__ORDERING=key with the real parts: one record per event, in order per key.

The bridge runs as a process against the dev broker and the local model server,
per event with several calls in flight (they answer out of order) and
micro-batched. Order across keys is not promised in this mode; within a key it is,
per output topic, and the group still commits to the end of each partition.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping

import pytest

from tests.integration.kafka_io import (
    GroupOffsets,
    Outputs,
    Producer,
    duplicated,
    end_offsets,
    make_topics,
    missing,
    payment_items,
    wait_for_inputs,
)
from tests.integration.procs import Bridges
from tools.harness.processes import ModelServer, bridge_env

pytestmark = pytest.mark.integration

N = 600
KEYS = 20  # so that every key has several events in each partition


def key_order_violations(
    outputs: Outputs, partitions: Mapping[str, int], keys: Mapping[tuple[int, int], bytes | None]
) -> list[str]:
    """Per output topic and key, the source offsets must increase in output order.

    Also the partition rule: the output partition is the input partition mod count.
    """
    problems = []
    last: dict[tuple[str, int, bytes | None], int] = {}
    for record in sorted(outputs.records, key=lambda r: (r.topic, r.partition, r.offset)):
        partition, offset = record.source
        if record.partition != partition % partitions[record.topic]:
            problems.append(f"input partition {partition} written to {record.partition}")
        where = (record.topic, partition, keys[record.source])
        if where in last and last[where] >= offset:
            problems.append(f"{where}: offset {offset} written after {last[where]}")
        last[where] = offset
    return problems


@pytest.mark.parametrize(
    ("max_size", "in_flight"),
    [pytest.param(1, 16, id="per-event-16-in-flight"), pytest.param(16, 4, id="batch16")],
)
async def test_every_event_ends_as_one_record_in_order_per_key(
    kafka_bootstrap: str,
    topic_prefix: str,
    model_server: ModelServer,
    bridges: Bridges,
    max_size: int,
    in_flight: int,
) -> None:
    topics = await make_topics(kafka_bootstrap, topic_prefix, inputs=3, results=2, failures=1)
    env = bridge_env(
        kafka_bootstrap,
        topics.names,
        model_server,
        group=topics.group,
        BRIDGE_DELIVERY__ORDERING="key",
        BRIDGE_BATCH__MAX_SIZE=str(max_size),
        BRIDGE_BATCH__MAX_IN_FLIGHT=str(in_flight),
        BRIDGE_BATCH__MAX_WAIT_MS="5",
    )
    bridge = await bridges.start_assigned(env)
    items = [
        dataclasses.replace(item, key=b"card-%d" % (i % KEYS))
        for i, item in enumerate(payment_items(N, malformed_every=9))  # failures among them
    ]
    async with Producer(kafka_bootstrap) as producer:
        sent = await producer.send_all(topics.input, items)
    async with (
        Outputs.of(kafka_bootstrap, topics) as outputs,
        GroupOffsets.of(kafka_bootstrap, topics) as offsets,
    ):
        await wait_for_inputs(outputs, sent, offsets, 90, bridge.output)
        code = await asyncio.to_thread(bridge.stop)
        assert code == 0, bridge.output()
        committed = await offsets.read()

    assert not missing(sent, outputs), "inputs without a record"
    assert not duplicated(outputs)
    keys = {s.source: s.item.key for s in sent}
    assert not key_order_violations(outputs, topics.partitions, keys)
    assert committed == end_offsets(sent)
