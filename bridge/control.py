"""Follow the compacted control topic, so every replica switches routes at once.

Every replica reads the whole topic outside any consumer group (key = model
name, value = routes JSON, a null value = back to the settings' routes). At
start it reads up to the end before consuming events, so it begins with the
latest routes; then it applies each new record as it arrives.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from bridge.kafka.clients import make_reader
from bridge.pipeline.routing import Routes, RoutesError, parse_control_record
from bridge.settings import KafkaSettings

log = structlog.get_logger("bridge.control")

OnRoutes = Callable[[Routes | None], Awaitable[None]]
TOPIC_WAIT_S = 10.0
FAILED_FETCH_WAIT_S = 1.0


class RoutesFollower:
    def __init__(
        self, kafka: KafkaSettings, topic: str, model: str, signature: str, on_routes: OnRoutes
    ) -> None:
        self._kafka = kafka
        self._topic = topic
        self._model = model.encode()
        self._signature = signature
        self._on_routes = on_routes
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        """Assign every partition of the control topic and apply what it holds now."""
        consumer = self._consumer = make_reader(self._kafka)
        await consumer.start()
        partitions = await self._partitions(consumer)
        if not partitions:
            log.warning(
                "control_topic_missing", topic=self._topic, action="using the settings' routes"
            )
            return
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        latest: bytes | bool | None = False  # False: no record for our model yet
        try:
            while not await _caught_up(consumer, ends):
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for record in records:
                        if record.key == self._model:
                            latest = record.value
        except Exception:  # unreadable: start with what was read (or the settings' routes)
            log.exception("control_topic_unreadable", topic=self._topic, at="start")
        if latest is not False:
            await self._apply(latest)  # type: ignore[arg-type]

    async def _partitions(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TOPIC_WAIT_S
        while True:
            numbers = consumer.partitions_for_topic(self._topic)
            if numbers or loop.time() > deadline:
                return [TopicPartition(self._topic, n) for n in sorted(numbers or ())]
            await consumer.topics()  # refreshes the cluster metadata

    async def run(self) -> None:
        """Apply each new control record for our model, in order."""
        consumer = self._consumer
        if consumer is None or not consumer.assignment():
            return
        failing = False
        while True:
            try:
                fetched = await consumer.getmany(timeout_ms=1000)
            except Exception:  # a record it cannot read must not stop the bridge
                # The routes stay as they are; the log says why they stopped following.
                # (The consumed topic's salvage path is not used here: one control record
                # per model, written by `bridge routes set`.)
                if not failing:
                    log.exception("control_topic_unreadable", topic=self._topic)
                failing = True
                await asyncio.sleep(FAILED_FETCH_WAIT_S)
                continue
            failing = False
            for records in fetched.values():
                for record in records:
                    if record.key == self._model:
                        await self._apply(record.value)

    async def _apply(self, value: bytes | None) -> None:
        if value is None:
            log.info(
                "routes_deleted", model=self._model.decode(), action="using the settings' routes"
            )
            await self._on_routes(None)
            return
        try:
            routes = parse_control_record(value, self._signature)
        except RoutesError as exc:
            log.error("routes_rejected", model=self._model.decode(), reason=str(exc))  # noqa: TRY400
            return
        await self._on_routes(routes)

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()


async def _caught_up(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return False
    return True
