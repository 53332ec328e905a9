"""A fuzz run: many kinds of malformed input mixed with valid events, one record each.

Seeded, so a failure replays. Each input is a valid payment or one of the bad kinds
in ``tools.harness.fuzz`` (bytes, JSON, nesting, sizes, keys, headers), written by
aiokafka, by librdkafka in lz4 batches, or byte for byte as broken batches (a header
key that is not UTF-8, a CRC that no longer matches). The bridge must end each one as
exactly one record: valid payments as results, the rest as failures with a reason
the README lists, never ``internal_error``, and it must not exit.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from tests.integration.kafka_io import (
    Item,
    Producer,
    Sent,
    drain_exactly_once,
    end_offsets,
    ended_as,
    make_topics,
    produce_raw_batch,
    produce_with_librdkafka,
)
from tests.integration.procs import Bridges, log_events, stopped_counts
from tools.harness.batches import Entry, build, with_header_key
from tools.harness.fuzz import FAILURE, MAX_EVENT_BYTES, REASONS, SEED, fuzz_items, valid
from tools.harness.processes import ModelServer, bridge_env

pytestmark = pytest.mark.integration

COUNT = 1500


async def test_a_fuzzed_mix_ends_as_one_record_each_and_never_stops_the_bridge(
    kafka_bootstrap: str, topic_prefix: str, model_server: ModelServer, bridges: Bridges
) -> None:
    rng = random.Random(SEED)
    topics = await make_topics(kafka_bootstrap, topic_prefix, inputs=3, results=2, failures=1)
    sent: list[Sent] = []
    items = fuzz_items(rng, COUNT)
    third = len(items) // 3
    async with Producer(kafka_bootstrap) as producer:
        sent += await producer.send_all(topics.input, items[:third])
        sent += await asyncio.to_thread(
            produce_with_librdkafka, kafka_bootstrap, topics.input, items[third : 2 * third], "lz4"
        )
        for n in range(10):  # broken batches between the others
            partition = n % topics.input_partitions
            batch_items = [
                Item(f"raw-{n}-{k}".encode(), valid(rng, k)[0], (), "result") for k in range(3)
            ]
            entries: list[Entry] = [(it.key, it.value, [("h", b"1")]) for it in batch_items]
            if n % 2 == 0:
                entries[1] = (entries[1][0], entries[1][1], [("XX", b"1")])
                raw = with_header_key(build(entries), b"XX", b"\xc3\x28")  # invalid UTF-8
                expected = ["result", "bad_header", "result"]
            else:
                raw = build(entries)
                at = raw.index(b'"amount"')
                raw[at + 1] ^= 0x20  # the CRC no longer matches
                expected = ["corrupt_batch"] * 3
            base = await produce_raw_batch(kafka_bootstrap, topics.input, partition, bytes(raw))
            sent += [
                Sent(partition, base + k, Item(it.key, it.value, (), expected[k]))
                for k, it in enumerate(batch_items)
            ]
        sent += await producer.send_all(topics.input, items[2 * third :])

    env = bridge_env(
        kafka_bootstrap,
        topics.names,
        model_server,
        group=topics.group,
        BRIDGE_BATCH__MAX_SIZE="16",
        BRIDGE_MODEL__MAX_EVENT_BYTES=str(MAX_EVENT_BYTES),
        BRIDGE_MODEL__COPY_FIELDS='["id", "meta"]',
    )
    bridge = await bridges.start_assigned(env)
    out, final = await drain_exactly_once(kafka_bootstrap, topics, bridge, sent, 120)
    got = ended_as(out)
    wrong = [
        (s.source, s.item.expected, got[s.source], (s.item.value or b"")[:60])
        for s in sent
        if got[s.source] != s.item.expected
        and not (s.item.expected == FAILURE and got[s.source] in REASONS)
    ]
    assert not wrong, f"{len(wrong)} inputs ended otherwise than expected: {wrong[:10]}"
    assert final == end_offsets(sent)
    assert not log_events(bridge, "internal_error")
    assert stopped_counts(bridge)["events"] == len(sent)
