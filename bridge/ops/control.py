"""The control topic: one record per routes change, key = model name, value = Routes JSON.

The topic is compacted: Kafka eventually keeps only the last record per key, and
a record with a null value (a tombstone) deletes the key. Reading the whole
topic and folding it with ``latest_routes`` gives the same answer whether or not
compaction has run yet, and whether or not the broker compacts at all.

``read_control_topic`` reads every partition from the beginning up to the end
offsets taken when it starts, with no consumer group (nothing is committed).
On the Tansu dev broker the end offset is the base offset of the last record
batch plus one rather than the offset after the last record; the records read
here are produced one per request (``write_routes``), so each batch holds one
record and the two agree. A batch that reaches past the end offset is read
whole anyway.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from bridge.ops.errors import CommandError
from bridge.pipeline.routing import Routes, RoutesError, parse_control_record

CLIENT_ID = "bridge-ops"
_TOPIC_ALREADY_EXISTS = 36


@dataclass(frozen=True, slots=True)
class ControlRecord:
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None

    @property
    def position(self) -> str:
        return f"partition {self.partition} offset {self.offset}"


@dataclass(frozen=True, slots=True)
class ModelRoutes:
    """What the control topic says about one model."""

    model: str
    latest: ControlRecord  # the last record for this key
    routes: Routes | None  # in force: the last valid routes; None after a tombstone or if none
    deleted: bool = False  # the latest record is a tombstone
    problem: str | None = None  # the latest record is malformed (``routes`` predates it)


def _parse(model: str, value: bytes) -> Routes:
    routes = parse_control_record(value)
    if routes.model != model:
        raise RoutesError(f"the record's key is {model} but its value names model {routes.model}")
    return routes


def _ordered(records: list[ControlRecord]) -> list[ControlRecord]:
    """One key's records, oldest first: by offset within a partition (Kafka's order).

    A key found in several partitions (the topic's partition count changed) has
    no order across them but the timestamps.
    """
    if len({record.partition for record in records}) <= 1:
        return sorted(records, key=lambda r: r.offset)
    return sorted(records, key=lambda r: (r.timestamp_ms, r.partition, r.offset))


def latest_routes(
    records: Iterable[ControlRecord],
) -> tuple[dict[str, ModelRoutes], list[ControlRecord]]:
    """Compaction semantics: the last record per key wins, a null value deletes the key.

    Returns the state per model (sorted by name) and the records that were
    skipped because their key is missing or not UTF-8.
    """
    by_key: dict[str, list[ControlRecord]] = {}
    skipped: list[ControlRecord] = []
    for record in records:
        try:
            model = record.key.decode("utf-8") if record.key else None
        except UnicodeDecodeError:
            model = None
        if not model:
            skipped.append(record)
            continue
        by_key.setdefault(model, []).append(record)

    state: dict[str, ModelRoutes] = {}
    for model in sorted(by_key):
        current: ModelRoutes | None = None
        for record in _ordered(by_key[model]):
            in_force = current.routes if current is not None else None
            if record.value is None:
                current = ModelRoutes(model, record, None, deleted=True)
                continue
            try:
                current = ModelRoutes(model, record, _parse(model, record.value))
            except RoutesError as exc:
                current = ModelRoutes(model, record, in_force, problem=str(exc))
        if current is not None:
            state[model] = current
    return state, skipped


def _check_bootstrap(bootstrap: str) -> None:
    if not bootstrap.strip():
        raise CommandError("no Kafka bootstrap servers given")


async def read_control_topic(bootstrap: str, topic: str, timeout_s: float) -> list[ControlRecord]:
    """Every record of ``topic`` up to its end offsets now, in partition/offset order."""
    _check_bootstrap(bootstrap)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        client_id=CLIENT_ID,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        async with asyncio.timeout(timeout_s):
            try:
                await consumer.start()
                return await _read_all(consumer, topic, time.monotonic() + timeout_s)
            finally:
                await consumer.stop()
    except TimeoutError as exc:
        raise CommandError(
            f"could not read control topic {topic} from {bootstrap} in {timeout_s:g} s"
        ) from exc
    except KafkaError as exc:
        raise CommandError(f"cannot read control topic {topic} from {bootstrap}: {exc}") from exc


async def _read_all(consumer: AIOKafkaConsumer, topic: str, deadline: float) -> list[ControlRecord]:
    if topic not in await consumer.topics():
        raise CommandError(f"control topic {topic} does not exist (no routes were ever set)")
    partitions = sorted(consumer.partitions_for_topic(topic) or ())
    assigned = [TopicPartition(topic, partition) for partition in partitions]
    consumer.assign(assigned)
    await consumer.seek_to_beginning(*assigned)
    ends: dict[TopicPartition, int] = await consumer.end_offsets(assigned)
    pending = {tp for tp in assigned if await consumer.position(tp) < ends[tp]}
    records: list[ControlRecord] = []
    while pending:
        wait_ms = max(int((deadline - time.monotonic()) * 1000), 1)
        batches = await consumer.getmany(*pending, timeout_ms=min(wait_ms, 1000))
        for tp, messages in batches.items():
            records.extend(
                ControlRecord(tp.partition, m.offset, m.timestamp, m.key, m.value) for m in messages
            )
        for tp in list(pending):
            if await consumer.position(tp) >= ends[tp]:
                pending.discard(tp)
    return sorted(records, key=lambda r: (r.partition, r.offset))


async def ensure_control_topic(
    bootstrap: str, topic: str, replication_factor: int, timeout_s: float
) -> list[str]:
    """Create ``topic`` compacted if it is missing; returns what the operator should know."""
    _check_bootstrap(bootstrap)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id=CLIENT_ID,
        request_timeout_ms=int(timeout_s * 1000),
    )
    try:
        async with asyncio.timeout(timeout_s):
            try:
                await admin.start()
                return await _ensure(admin, topic, replication_factor)
            finally:
                await admin.close()
    except TimeoutError as exc:
        raise CommandError(
            f"could not check control topic {topic} on {bootstrap} in {timeout_s:g} s"
        ) from exc
    except KafkaError as exc:
        raise CommandError(f"cannot check control topic {topic} on {bootstrap}: {exc}") from exc


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
    bootstrap: str, topic: str, model: str, value: bytes | None, timeout_s: float
) -> ControlRecord:
    """Produce one record (acks=all) and return where Kafka stored it."""
    _check_bootstrap(bootstrap)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id=CLIENT_ID,
        acks="all",
        enable_idempotence=False,  # the dev broker lacks InitProducerId; one record anyway
        request_timeout_ms=int(timeout_s * 1000),
    )
    try:
        async with asyncio.timeout(timeout_s):
            try:
                await producer.start()
                metadata = await producer.send_and_wait(topic, value=value, key=model.encode())
            finally:
                await producer.stop()
    except TimeoutError as exc:
        raise CommandError(f"could not write to {topic} on {bootstrap} in {timeout_s:g} s") from exc
    except KafkaError as exc:
        raise CommandError(f"cannot write to {topic} on {bootstrap}: {exc}") from exc
    return ControlRecord(
        metadata.partition, metadata.offset, metadata.timestamp, model.encode(), value
    )
