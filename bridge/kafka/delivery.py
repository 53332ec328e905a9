"""From finished slots to Kafka: ordered hand-off to the producer, acks, commits.

One emitter task hands records to the producer, partition by partition in offset
order (``PartitionLedger.take_ready``); the producer's ack marks the slot; the
committer commits one past the last acknowledged offset of each partition. A
record that cannot be written stops the bridge without committing it, so it is
replayed on restart.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from bridge.kafka.records import OutputRecord
from bridge.pipeline.ledger import PartitionLedger, Slot
from bridge.pipeline.outcomes import Outcome

log = structlog.get_logger("bridge.delivery")

BuildOutput = Callable[[Slot[Outcome], float], OutputRecord]


class Delivery:
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        build_output: BuildOutput,
        on_fatal: Callable[[BaseException], None],
    ) -> None:
        self._consumer = consumer
        self._producer = producer
        self._build_output = build_output
        self._on_fatal = on_fatal
        self.ledgers: dict[TopicPartition, PartitionLedger[Outcome]] = {}
        self._dirty: set[TopicPartition] = set()
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()  # set on every ack; drains wait on it
        self.failed = False

    def ledger(self, tp: TopicPartition) -> PartitionLedger[Outcome]:
        ledger = self.ledgers.get(tp)
        if ledger is None:
            ledger = self.ledgers[tp] = PartitionLedger()
        return ledger

    def pending(self) -> int:
        return sum(len(ledger) for ledger in self.ledgers.values())

    def resolved(self, tp: TopicPartition) -> None:
        """A slot of ``tp`` got its outcome: the emitter may have work."""
        self._dirty.add(tp)
        self._wake.set()

    async def run_emitter(self) -> None:
        """The only task that hands records to the producer: offset order per partition."""
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._dirty:
                tp = self._dirty.pop()
                ledger = self.ledgers.get(tp)
                if ledger is None:
                    continue  # handed back in a rebalance: its outputs are not ours to write
                ready = ledger.take_ready()
                if ready:
                    await self._send(ledger, ready, loop.time())

    async def _send(
        self, ledger: PartitionLedger[Outcome], ready: list[Slot[Outcome]], now: float
    ) -> None:
        """One producer batch per run of outputs bound for the same topic and partition.

        A batch costs one future and one accumulator entry instead of one per record,
        which is most of what producing costs in Python; runs keep the offset order.
        Each output is built just before it is appended, so only the batch's own
        buffer holds it (orjson's bytes carry a 4 KB allocation each).
        """
        batch: Any = None
        slots: list[Slot[Outcome]] = []
        where: tuple[str, int] = ("", -1)
        for slot in ready:
            output = self._build_output(slot, now)
            if batch is not None and (output.topic, output.partition) != where:
                await self._send_batch(batch, where, ledger, slots)
                batch, slots = None, []
            if batch is None:
                batch, where = self._producer.create_batch(), (output.topic, output.partition)
            if self._append(batch, output) is None:
                if not slots:
                    raise ValueError(f"the output of offset {slot.offset} is too large to send")
                await self._send_batch(batch, where, ledger, slots)  # full: start the next
                batch, slots = self._producer.create_batch(), []
                if self._append(batch, output) is None:
                    raise ValueError(f"the output of offset {slot.offset} is too large to send")
            slots.append(slot)
        if batch is not None:
            await self._send_batch(batch, where, ledger, slots)

    @staticmethod
    def _append(batch: Any, output: OutputRecord) -> Any:
        return batch.append(
            timestamp=None, key=output.key, value=output.value, headers=output.headers
        )

    async def _send_batch(
        self,
        batch: Any,
        where: tuple[str, int],
        ledger: PartitionLedger[Outcome],
        slots: list[Slot[Outcome]],
    ) -> None:
        batch.close()
        future = await self._producer.send_batch(batch, where[0], partition=where[1])
        future.add_done_callback(lambda fut: self._on_ack(fut, ledger, slots))

    def _on_ack(
        self,
        future: asyncio.Future[Any],
        ledger: PartitionLedger[Outcome],
        slots: list[Slot[Outcome]],
    ) -> None:
        if future.cancelled() or future.exception() is not None:
            error = future.exception() if not future.cancelled() else asyncio.CancelledError()
            if not self.failed:
                log.error("produce_failed", offset=slots[0].offset, error=repr(error))
                self.failed = True
                self._on_fatal(error or RuntimeError("produce failed"))
            self._progress.set()
            return
        for slot in slots:
            ledger.ack(slot)
        self._progress.set()

    async def run_committer(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            await self.commit()

    async def commit(self, partitions: Iterable[TopicPartition] | None = None) -> None:
        """Commit, for each partition, one past its last acknowledged output."""
        chosen = (
            self.ledgers
            if partitions is None
            else {tp: self.ledgers[tp] for tp in partitions if tp in self.ledgers}
        )
        offsets = {}
        for tp, ledger in chosen.items():
            offset = ledger.committable()
            if offset is not None and offset != ledger.committed:
                offsets[tp] = offset
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except CommitFailedError as exc:
            # The group rebalanced: the new owner resumes from the last good commit.
            log.warning("commit_rejected", error=str(exc), partitions=len(offsets))
            return
        except KafkaError as exc:
            # Not committed; the next pass tries again with the same or later offsets.
            log.warning("commit_failed", error=repr(exc), partitions=len(offsets))
            return
        for tp, offset in offsets.items():
            chosen[tp].committed = offset

    async def drain(self, partitions: Iterable[TopicPartition], timeout_s: float) -> bool:
        """Wait until the partitions' work is all acknowledged; False on timeout or failure."""
        partitions = list(partitions)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while any(len(self.ledgers.get(tp, ())) for tp in partitions):
            remaining = deadline - loop.time()
            if self.failed or remaining <= 0:
                return False
            await self.wait_progress(remaining)
        return True

    async def wait_progress(self, timeout_s: float) -> None:
        """Until some output is acknowledged, or ``timeout_s``."""
        self._progress.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._progress.wait(), timeout_s)

    def hand_back(self, partitions: Iterable[TopicPartition]) -> int:
        """Forget revoked partitions; their unfinished events are the next owner's."""
        return sum(len(self.ledgers.pop(tp)) for tp in partitions if tp in self.ledgers)

    async def flush(self) -> None:
        with contextlib.suppress(KafkaError):
            await self._producer.flush()
