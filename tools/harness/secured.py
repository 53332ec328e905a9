"""The secured-cluster tests' own Kafka I/O (TLS, SASL): topics, input and the outputs read back.

``options`` are the aiokafka connection options of the cluster (security protocol,
SSL context, SASL login), the same for every client the test makes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tools.harness.payments import payments

Options = Mapping[str, Any]


async def make_topics(options: Options, prefix: str) -> tuple[str, str, str]:
    """``prefix``-in, -out and -dlq, two partitions each."""
    names = (f"{prefix}-in", f"{prefix}-out", f"{prefix}-dlq")
    admin = AIOKafkaAdminClient(**options)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 2, 1) for name in names])
    finally:
        await admin.close()
    return names


async def send_events(options: Options, topic: str, count: int, seed: int) -> set[tuple[int, int]]:
    """``count`` payments, each acknowledged; their (partition, offset)."""
    producer = AIOKafkaProducer(**options, acks="all")
    await producer.start()
    try:
        sent = set()
        for payment in payments(count, seed=seed):
            meta = await producer.send_and_wait(topic, payment.value, key=payment.key)
            sent.add((meta.partition, meta.offset))
        return sent
    finally:
        await producer.stop()


async def read_outputs(
    options: Options, topics: tuple[str, ...], count: int
) -> list[tuple[str, dict[str, object], dict[str, bytes]]]:
    """The first ``count`` records of ``topics``: (topic, result JSON or {}, headers)."""
    consumer = AIOKafkaConsumer(*topics, **options, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    out: list[tuple[str, dict[str, object], dict[str, bytes]]] = []
    try:
        async with asyncio.timeout(90):
            while len(out) < count:
                for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                    for r in records:
                        value = json.loads(r.value) if tp.topic.endswith("-out") else {}
                        out.append((tp.topic, value, dict(r.headers)))
    finally:
        await consumer.stop()
    return out
