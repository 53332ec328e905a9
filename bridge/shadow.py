"""Shadow traffic: mirrored events called on another target, results to their own topic.

Best effort by design: a bounded queue (full -> the mirrored batch is dropped and
counted), one call per batch without retries, records handed to the producer
without waiting for acks. Nothing here can fail, delay or commit a main record.
"""

from __future__ import annotations

import asyncio
import time

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from bridge.domain import Failure, Success
from bridge.errors import ModelCallError
from bridge.kafka.records import OutputRecord, RecordBuilder
from bridge.lanes import Pending
from bridge.serving.client import ModelClient

log = structlog.get_logger(__name__)


class ShadowMirror:
    def __init__(
        self, client: ModelClient, producer: AIOKafkaProducer, records: RecordBuilder, capacity: int
    ) -> None:
        self._client = client
        self._producer = producer
        self._records = records
        self._queue: asyncio.Queue[list[Pending]] = asyncio.Queue(maxsize=capacity)
        self.dropped = 0
        self.sent = 0

    def offer(self, batch: list[Pending]) -> None:
        try:
            self._queue.put_nowait(batch)
        except asyncio.QueueFull:
            self.dropped += len(batch)

    async def run(self) -> None:
        while True:
            batch = await self._queue.get()
            await self._call(batch)

    async def _call(self, batch: list[Pending]) -> None:
        lane = batch[0].lane
        started = time.perf_counter()
        try:
            prediction = await self._client.predict(
                lane.target, lane.signature, [pending.instance for pending in batch]
            )
        except ModelCallError as exc:
            log.info("shadow_failed", route=lane.name, size=len(batch), error=exc.message)
            failure = Failure(exc, attempts=1)
            outputs = [
                self._records.shadow_failure(p.record, failure, lane.name, lane.target)
                for p in batch
            ]
        else:
            model_ms = (time.perf_counter() - started) * 1000
            topic = self._records.shadow_topic
            outputs = [
                self._records.result(
                    pending.record,
                    Success(values, prediction.version, 1, model_ms),
                    "shadow:" + lane.name,
                    lane.target,
                    pending.instance.copied,
                    {"model_ms": model_ms},
                    topic=topic,
                )
                for pending, values in zip(batch, prediction.outputs, strict=True)
            ]
        for output in outputs:
            await self._send(output)

    async def _send(self, output: OutputRecord) -> None:
        try:
            await self._producer.send(
                output.topic,
                output.value,
                key=output.key,
                partition=output.partition,
                headers=output.headers,
            )
            self.sent += 1
        except KafkaError as exc:
            log.warning("shadow_produce_failed", error=repr(exc))
