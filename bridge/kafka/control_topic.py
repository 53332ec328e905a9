"""The control topic, read one way by the bridge and by ``bridge routes``.

One record per routes change: key = model name, value = Routes JSON, a null
value (a tombstone) = back to the bridge's configured routes. The topic is
compacted, so Kafka eventually keeps only the last record per key; reading the
whole topic and folding it (``fold``) gives the same answer whether or not
compaction has run yet, and whether or not the broker compacts at all.

``ControlTopicReader.read_to_end`` reads every partition from the beginning up
to the end offsets taken when it starts, with no consumer group (nothing is
committed), and folds what it read. On the Tansu dev broker the end offset is
the base offset of the last record batch plus one rather than the offset after
the last record; ``bridge routes set`` produces one record per request, so each
batch holds one record and the two agree. A batch that reaches past the end
offset is read whole anyway.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition

from bridge.pipeline.routing import Routes, RoutesError, parse_control_record

FETCH_WAIT_MS = 500
TOPIC_POLL_S = 0.1  # between metadata refreshes while waiting for the topic


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


@dataclass(frozen=True, slots=True)
class ControlState:
    models: dict[str, ModelRoutes]  # by model name, sorted
    skipped: list[ControlRecord] = field(default_factory=list)  # no usable key
    read: int = 0  # records read
    unreadable: str | None = None  # why reading stopped before the end, if it did


def _parse(model: str, value: bytes, signature: str) -> Routes:
    routes = parse_control_record(value, signature)
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


def model_of(record: ControlRecord) -> str | None:
    """The model a record is about; None for a missing, empty or non-UTF-8 key."""
    if not record.key:
        return None
    try:
        return record.key.decode("utf-8")
    except UnicodeDecodeError:
        return None


def fold(records: Iterable[ControlRecord], signature: str = "serving_default") -> ControlState:
    """Compaction semantics: the last record per key wins, a null value deletes the key.

    A malformed latest record leaves the routes before it in force, as it does
    for a bridge that was following when it arrived.
    """
    by_key: dict[str, list[ControlRecord]] = {}
    skipped: list[ControlRecord] = []
    read = 0
    for record in records:
        read += 1
        model = model_of(record)
        if model is None:
            skipped.append(record)
        else:
            by_key.setdefault(model, []).append(record)
    models: dict[str, ModelRoutes] = {}
    for model in sorted(by_key):
        current: ModelRoutes | None = None
        for record in _ordered(by_key[model]):
            models[model] = current = apply_record(current, model, record, signature)
    return ControlState(models, skipped, read)


def apply_record(
    current: ModelRoutes | None, model: str, record: ControlRecord, signature: str
) -> ModelRoutes:
    """One model's state after one more of its records."""
    if record.value is None:
        return ModelRoutes(model, record, None, deleted=True)
    try:
        return ModelRoutes(model, record, _parse(model, record.value, signature))
    except RoutesError as exc:
        in_force = current.routes if current is not None else None
        return ModelRoutes(model, record, in_force, problem=str(exc))


class ControlTopicReader:
    """Every partition of the control topic, from the beginning, outside any group."""

    def __init__(self, consumer: AIOKafkaConsumer, topic: str) -> None:
        self.topic = topic
        self._consumer = consumer
        self._assigned: list[TopicPartition] = []

    async def open(self, wait_for_topic_s: float = 0.0) -> bool:
        """Start and assign every partition; False if the topic does not exist (yet)."""
        consumer = self._consumer
        await consumer.start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_for_topic_s
        numbers = consumer.partitions_for_topic(self.topic)
        while not numbers:
            await consumer.topics()  # refreshes the cluster metadata
            numbers = consumer.partitions_for_topic(self.topic)
            if numbers or loop.time() >= deadline:
                break
            await asyncio.sleep(TOPIC_POLL_S)
        if not numbers:
            return False
        self._assigned = [TopicPartition(self.topic, n) for n in sorted(numbers)]
        consumer.assign(self._assigned)
        await consumer.seek_to_beginning(*self._assigned)
        return True

    async def read_to_end(self, signature: str = "serving_default") -> ControlState:
        """Read up to the end offsets as they are now, and fold it.

        A record the client cannot read ends the read there (``unreadable``
        says why): the state is what came before it, and the caller decides.
        """
        consumer = self._consumer
        ends: dict[TopicPartition, int] = await consumer.end_offsets(self._assigned)
        records: list[ControlRecord] = []
        unreadable = None
        try:
            pending = {tp for tp in self._assigned if await consumer.position(tp) < ends[tp]}
            while pending:
                records += await self.fetch(FETCH_WAIT_MS, *pending)
                for tp in list(pending):
                    if await consumer.position(tp) >= ends[tp]:
                        pending.discard(tp)
        except Exception as exc:  # noqa: BLE001 - any record it cannot decode stops the read
            unreadable = f"{type(exc).__name__}: {exc}"
        state = fold(sorted(records, key=lambda r: (r.partition, r.offset)), signature)
        return ControlState(state.models, state.skipped, state.read, unreadable)

    async def fetch(self, timeout_ms: int, *partitions: TopicPartition) -> list[ControlRecord]:
        """The next records (of these partitions, or all), waiting up to ``timeout_ms``."""
        batches = await self._consumer.getmany(*partitions, timeout_ms=timeout_ms)
        return [
            ControlRecord(tp.partition, m.offset, m.timestamp, m.key, m.value)
            for tp, messages in batches.items()
            for m in messages
        ]

    @property
    def assigned(self) -> bool:
        return bool(self._assigned)

    async def close(self) -> None:
        await self._consumer.stop()
