"""Compressed input from a producer not written here, and compressed output.

Many Java and librdkafka producers compress by default (snappy, lz4, zstd). A
bridge without the codec cannot read the batch at all: before the codecs were
installed, ``getmany`` raised ``UnsupportedCodecError`` on every restart and the
partition never moved. Here librdkafka (confluent-kafka) writes the same payments
with every codec Kafka has, in multi-record batches, and the bridge writes its own
records compressed with zstd.
"""

from __future__ import annotations

import asyncio

import pytest

from bridge.dev.stack import ModelServer, bridge_env
from tests.integration.kafka_io import (
    GroupOffsets,
    Outputs,
    duplicated,
    end_offsets,
    make_topics,
    missing,
    order_violations,
    payment_items,
    produce_with_librdkafka,
    wait_for_inputs,
)
from tests.integration.procs import Bridges, stopped_counts

pytestmark = pytest.mark.integration

CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
PER_CODEC = 120


async def test_every_codec_decodes_and_the_output_can_be_compressed(
    kafka_bootstrap: str, topic_prefix: str, model_server: ModelServer, bridges: Bridges
) -> None:
    topics = await make_topics(kafka_bootstrap, topic_prefix, inputs=2, results=2, failures=1)
    sent = []
    for seed, codec in enumerate(CODECS):
        items = payment_items(PER_CODEC, seed=100 + seed, malformed_every=30)
        sent += await asyncio.to_thread(
            produce_with_librdkafka, kafka_bootstrap, topics.input, items, codec
        )
    env = bridge_env(
        kafka_bootstrap,
        topics.names,
        model_server,
        group=topics.group,
        BRIDGE_BATCH__MAX_SIZE="16",
        BRIDGE_KAFKA__PRODUCER_COMPRESSION="zstd",
    )
    bridge = await bridges.start_assigned(env)
    async with (
        Outputs.of(kafka_bootstrap, topics) as out,
        GroupOffsets.of(kafka_bootstrap, topics) as offsets,
    ):
        await wait_for_inputs(out, sent, offsets, 90, bridge.output)
        code = await asyncio.to_thread(bridge.stop)
        assert code == 0, bridge.output()
        final = await offsets.read()

    assert not missing(sent, out), "inputs without a record"
    assert not duplicated(out)
    assert not order_violations(out, topics.partitions)
    expected = {s.source: s.item.expected for s in sent}
    got = {
        r.source: "result" if r.kind == "result" else r.header("__bridge.errors.reason")
        for r in out.records
    }
    assert got == expected
    assert final == end_offsets(sent)
    assert stopped_counts(bridge)["events"] == len(sent)
