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

from tests.integration.kafka_io import (
    drain_exactly_once,
    end_offsets,
    ended_as,
    make_topics,
    payment_items,
    produce_with_librdkafka,
)
from tests.integration.procs import Bridges, stopped_counts
from tools.harness.processes import ModelServer, bridge_env

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
    out, final = await drain_exactly_once(kafka_bootstrap, topics, bridge, sent)
    assert ended_as(out) == {s.source: s.item.expected for s in sent}
    assert final == end_offsets(sent)
    assert stopped_counts(bridge)["events"] == len(sent)
