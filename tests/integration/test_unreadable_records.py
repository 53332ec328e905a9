"""Records the Kafka client cannot decode never stop a partition.

Batches are written to the broker byte for byte as other producers, disks or bugs
leave them: a header key that is not UTF-8 (Kafka header keys are bytes on the
wire; aiokafka decodes them and raises ``UnicodeDecodeError``), and a batch whose
CRC no longer matches its bytes (``CorruptRecordException``). Before the salvage
path, either one made every ``getmany`` raise at the same offset: the bridge
exited 1, and every restart died on the same record. Now each record ends as one
record: the good ones around them as results (also those the client had already
read from another partition when it raised), the bad header as ``bad_header``,
the damaged batch's records as ``corrupt_batch``; the group commits to the end.

(An unknown compression codec cannot be written to the dev broker, which refuses
the batch; the unit tests of ``bridge.kafka.batches`` and ``bridge.kafka.salvage``
cover it.)
"""

from __future__ import annotations

import pytest

from tests.integration.kafka_io import (
    BRIDGE,
    Item,
    Producer,
    Sent,
    drain_exactly_once,
    end_offsets,
    ended_as,
    make_topics,
    payment_items,
    produce_raw_batch,
)
from tests.integration.procs import Bridges, log_events, stopped_counts
from tools.harness.batches import build, with_header_key
from tools.harness.processes import ModelServer, bridge_env

pytestmark = pytest.mark.integration


def on(partition: int, items: list[Item]) -> list[Item]:
    return [Item(item.key, item.value, item.headers, "result", partition) for item in items]


def raw(items: list[Item], odd_header_at: int | None = None) -> bytearray:
    """A batch of ``items`` as the bridge's own tests write them (one header each)."""
    return build(
        [
            (item.key, item.value, [("ok", b"1"), ("XX", b"v")] if n == odd_header_at else [])
            for n, item in enumerate(items)
        ]
    )


def expect(base: int, items: list[Item], reasons: list[str]) -> list[Sent]:
    return [
        Sent(0, base + n, Item(item.key, item.value, (), reason))
        for n, (item, reason) in enumerate(zip(items, reasons, strict=True))
    ]


async def test_bad_header_keys_and_damaged_batches_each_end_as_one_record(
    kafka_bootstrap: str, topic_prefix: str, model_server: ModelServer, bridges: Bridges
) -> None:
    topics = await make_topics(kafka_bootstrap, topic_prefix, inputs=2, results=2, failures=1)
    items = payment_items(120, seed=21)
    sent: list[Sent] = []
    async with Producer(kafka_bootstrap) as producer:
        # Partition 1 first: its records are in the same fetch as partition 0's bad batch.
        sent += await producer.send_all(topics.input, on(1, items[:40]))
        sent += await producer.send_all(topics.input, on(0, items[40:60]))

        header_items = items[60:64]
        header_batch = with_header_key(raw(header_items, odd_header_at=1), b"XX", b"\xff\xfe")
        base = await produce_raw_batch(kafka_bootstrap, topics.input, 0, bytes(header_batch))
        sent += expect(base, header_items, ["result", "bad_header", "result", "result"])

        damaged_items = items[64:68]
        damaged = raw(damaged_items)
        at = damaged.index(b'"amount"')
        damaged[at + 1] ^= 0x20  # "amount" -> "Amount": the CRC no longer matches
        base = await produce_raw_batch(kafka_bootstrap, topics.input, 0, bytes(damaged))
        sent += expect(base, damaged_items, ["corrupt_batch"] * 4)

        sent += await producer.send_all(topics.input, on(0, items[68:]))
    expected = {s.source: s.item.expected for s in sent}

    env = bridge_env(
        kafka_bootstrap, topics.names, model_server, group=topics.group, BRIDGE_BATCH__MAX_SIZE="16"
    )
    bridge = await bridges.start_assigned(env)
    out, final = await drain_exactly_once(kafka_bootstrap, topics, bridge, sent, 60)
    assert ended_as(out) == expected
    bad_header = next(r for r in out.failures if r.header(BRIDGE + "reason") == "bad_header")
    assert bad_header.value == header_items[1].value  # the dead letter keeps the value
    assert ("\\xff\\xfe", b"v") in bad_header.headers  # the key, escaped
    damaged_out = [r for r in out.failures if r.header(BRIDGE + "reason") == "corrupt_batch"]
    assert b'"Amount"' in (damaged_out[0].value or b"")  # as read, for forensics
    assert final == end_offsets(sent)
    assert len(log_events(bridge, "batch_salvaged")) == 2
    assert stopped_counts(bridge)["events"] == len(sent)
