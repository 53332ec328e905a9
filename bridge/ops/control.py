"""The control topic's Kafka I/O for ``bridge routes``: read it, create it, write to it.

Reading and folding are ``bridge.kafka.control_topic``'s, the same reader the
bridge follows the topic with; the clients come from ``bridge.kafka.clients``,
with the same connection and security settings as the bridge's. Kafka errors
and timeouts become a ``CommandError`` that names the servers and the topic.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from bridge.kafka.clients import make_admin, make_reader, make_writer
from bridge.kafka.control_topic import ControlRecord, ControlState, ControlTopicReader
from bridge.ops.errors import CommandError, UsageError
from bridge.settings import KafkaConnection, SettingsError

_TOPIC_ALREADY_EXISTS = 36


@asynccontextmanager
async def _kafka_step(what: str, kafka: KafkaConnection, timeout_s: float) -> AsyncIterator[None]:
    """Bound one step by ``timeout_s``; its failure says what could not be done, and where."""
    where = kafka.bootstrap_servers
    if not where.strip():
        raise CommandError("no Kafka bootstrap servers given")
    try:
        async with asyncio.timeout(timeout_s):
            yield
    except TimeoutError as exc:
        raise CommandError(f"could not {what} on {where} in {timeout_s:g} s") from exc
    except SettingsError as exc:
        # The factory found the TLS or SASL settings wrong (a refused certificate or
        # login): a usage error, exit 2 as for `bridge run`, naming the setting.
        why = exc.args[0] if exc.args else exc  # without the KafkaError class name
        raise UsageError(f"cannot {what} on {where}: {why}") from exc
    except KafkaError as exc:
        raise CommandError(f"cannot {what} on {where}: {exc}") from exc


def _request_ms(timeout_s: float) -> int:
    return max(int(timeout_s * 1000), 1)


async def read_control_topic(
    kafka: KafkaConnection, topic: str, timeout_s: float, signature: str = "serving_default"
) -> ControlState:
    """The routes per model on ``topic``, read to its end offsets now."""
    reader = ControlTopicReader(make_reader(kafka, _request_ms(timeout_s)), topic)
    async with _kafka_step(f"read control topic {topic}", kafka, timeout_s):
        try:
            if not await reader.open():
                raise CommandError(
                    f"control topic {topic} does not exist (no routes were ever set)"
                )
            return await reader.read_to_end(signature)
        finally:
            await reader.close()


async def ensure_control_topic(
    kafka: KafkaConnection, topic: str, replication_factor: int, timeout_s: float
) -> list[str]:
    """Create ``topic`` compacted if it is missing; returns what the operator should know."""
    admin = make_admin(kafka, _request_ms(timeout_s))
    async with _kafka_step(f"check control topic {topic}", kafka, timeout_s):
        try:
            await admin.start()
            return await _ensure(admin, topic, replication_factor)
        finally:
            await admin.close()


async def _ensure(admin: AIOKafkaAdminClient, topic: str, replication_factor: int) -> list[str]:
    notes: list[str] = []
    if topic not in await admin.list_topics():
        response = await admin.create_topics(
            [
                NewTopic(
                    topic,
                    1,  # one partition: every change to every model in one order
                    replication_factor,
                    topic_configs={"cleanup.policy": "compact"},
                )
            ]
        )
        for _name, code, message, *_ in response.topic_errors:
            if code not in (0, _TOPIC_ALREADY_EXISTS):
                raise CommandError(f"cannot create control topic {topic}: error {code}: {message}")
        notes.append(
            f"created control topic {topic} (1 partition, replication factor "
            f"{replication_factor}, cleanup.policy=compact)"
        )
    policy = await _cleanup_policy(admin, topic)
    if policy is None:
        notes.append(f"note: could not read the cleanup.policy of {topic} from the broker")
    elif "compact" not in policy:
        notes.append(
            f"note: {topic} has cleanup.policy={policy}, not compact (the broker ignored or "
            "overrides it): old records go by retention, not compaction, so routes set longer "
            "ago than the retention are lost"
        )
    return notes


async def _cleanup_policy(admin: AIOKafkaAdminClient, topic: str) -> str | None:
    try:
        responses: list[Any] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic)]
        )
    except KafkaError:
        return None
    for response in responses:
        for resource in response.resources:
            for entry in resource[4]:  # (name, value, read_only, source, sensitive, ...)
                if entry[0] == "cleanup.policy":
                    return str(entry[1])
    return None


async def write_routes(
    kafka: KafkaConnection, topic: str, model: str, value: bytes | None, timeout_s: float
) -> ControlRecord:
    """Produce one record (acks=all) and return where Kafka stored it."""
    producer = make_writer(kafka, _request_ms(timeout_s))
    async with _kafka_step(f"write to {topic}", kafka, timeout_s):
        try:
            await producer.start()
            metadata = await producer.send_and_wait(topic, value=value, key=model.encode())
        finally:
            await producer.stop()
    return ControlRecord(
        metadata.partition, metadata.offset, metadata.timestamp, model.encode(), value
    )
