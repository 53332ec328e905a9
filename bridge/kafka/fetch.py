"""``getmany`` that no record can break: a failed fetch is narrowed to its partition and salvaged.

aiokafka raises out of ``getmany`` when it cannot decode a batch, and every later
call raises again at the same offset: the partition never moves. Worse, the
records it had already drained from other partitions in that call are dropped
while their positions moved on. So after such an error:

1. every assigned partition is sought back to where the bridge expects it (one
   past the last record it received, or the committed offset);
2. for a few seconds each partition is fetched on its own, so an error names its
   partition;
3. the partition that raises is read from its position by the bridge itself
   (``bridge.kafka.salvage``) up to and including the bad batch, and the consumer
   is moved past it. The caller turns what was salvaged into records and failures.

A rebalance in the middle of this (the rebalance listener calls ``forget``)
discards what this call read: the new assignment starts from the committed offsets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import (
    ConsumerStoppedError,
    GroupAuthorizationFailedError,
    IllegalStateError,
    KafkaError,
    TopicAuthorizationFailedError,
)

from bridge.errors import UndecodableBatchError
from bridge.kafka.salvage import Salvage, SalvagedRecord, Salvager

log = structlog.get_logger(__name__)

CAREFUL_S = 5.0  # how long partitions are fetched one by one after a failed fetch
CAREFUL_WAIT_MS = 20  # per partition, while careful
STRIKES = 3  # salvages at one offset that found nothing to skip before one offset is skipped
SALVAGE_RETRY_S = 1.0  # after a raw fetch that failed

# Not the data's fault: the bridge cannot read the topic at all; these stop it.
FATAL = (ConsumerStoppedError, TopicAuthorizationFailedError, GroupAuthorizationFailedError)


@dataclass(slots=True)
class Fetched:
    """What one fetch brought: aiokafka's records, and records the bridge salvaged."""

    records: dict[TopicPartition, list[Any]] = field(default_factory=dict)
    salvaged: dict[TopicPartition, list[SalvagedRecord]] = field(default_factory=dict)


class GuardedFetch:
    def __init__(
        self, consumer: AIOKafkaConsumer, salvager: Salvager, *, reset_to_earliest: bool
    ) -> None:
        self._consumer = consumer
        self._salvager = salvager
        self._reset_to_earliest = reset_to_earliest
        self._expected: dict[TopicPartition, int] = {}  # one past the last record received
        self._careful_until = 0.0
        self._strikes: dict[tuple[TopicPartition, int], int] = {}
        self._retry_at: dict[TopicPartition, float] = {}  # after a failed salvage
        self._unrewound: set[TopicPartition] = set()  # rewinds that failed: no fetch until done
        self._generation = 0
        self.broken_batches = 0  # batches turned into failures, for the metric

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Revoked: their positions are the next owner's; a fetch in progress is void."""
        self._generation += 1
        self._unrewound.clear()  # the rebalance resets every position anyway
        for tp in partitions:
            self._expected.pop(tp, None)

    async def getmany(self, timeout_ms: int, max_records: int | None = None) -> Fetched:
        loop = asyncio.get_running_loop()
        if self._unrewound and not await self._rewind(self._unrewound):
            await asyncio.sleep(timeout_ms / 1000)  # positions unknown: reading would lose
            return Fetched()
        if loop.time() < self._careful_until:
            return await self._one_by_one(timeout_ms, max_records)
        try:
            records = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        except FATAL:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever aiokafka raised, the data is the suspect
            log.warning("fetch_failed", error=repr(exc), action="reading each partition on its own")
            self._careful_until = loop.time() + CAREFUL_S
            await self._rewind(self._consumer.assignment())
            return Fetched()
        self._note(records)
        return Fetched(records)

    def _note(self, records: dict[TopicPartition, list[Any]]) -> None:
        for tp, got in records.items():
            if got:
                self._expected[tp] = got[-1].offset + 1

    async def _rewind(self, partitions: Iterable[TopicPartition]) -> bool:
        """Put partitions back where the bridge expects it (see the module doc); True if all."""
        consumer = self._consumer
        generation = self._generation
        failed = set()
        for tp in list(partitions):
            try:
                offset = self._expected.get(tp)
                if offset is None:
                    # Nothing received since the assignment, so nothing committed since:
                    # the committed offset is where it started.
                    offset = await consumer.committed(tp)
                if generation != self._generation:
                    return True  # a rebalance meanwhile reset every position
                if offset is not None:
                    consumer.seek(tp, offset)
                elif self._reset_to_earliest:
                    await consumer.seek_to_beginning(tp)
                # (reset to latest without a commit: where it started is not known, and
                # "latest" had no promise about what came just before the group existed)
            except IllegalStateError:
                continue  # revoked meanwhile: not ours to move
            except KafkaError as exc:
                if tp not in self._unrewound:
                    log.warning("rewind_failed", partition=tp.partition, error=repr(exc))
                failed.add(tp)
        self._unrewound = failed
        return not failed

    async def _one_by_one(self, timeout_ms: int, max_records: int | None) -> Fetched:
        consumer = self._consumer
        fetched = Fetched()
        left = max_records
        wait_ms = min(timeout_ms, CAREFUL_WAIT_MS)
        loop = asyncio.get_running_loop()
        now = loop.time()
        asked = False
        for tp in sorted(consumer.assignment() - consumer.paused()):
            if left is not None and left <= 0:
                break
            if self._retry_at.get(tp, 0.0) > now:
                continue  # its salvage failed a moment ago; it would only raise again
            asked = True
            generation = self._generation
            try:
                got = (await consumer.getmany(tp, timeout_ms=wait_ms, max_records=left)).get(tp)
            except FATAL:
                raise
            except Exception as exc:  # noqa: BLE001 - its data is what aiokafka refuses
                if generation != self._generation:
                    fetched = Fetched()  # what came before the rebalance is void
                salvage = await self._salvage(tp, exc, self._generation)
                if salvage is not None and salvage.records:
                    # (a salvage may bring a batch more than max_records: it is bounded
                    # by the raw fetch's size, as a fetch is)
                    fetched.salvaged[tp] = salvage.records
                    left = None if left is None else left - len(salvage.records)
                continue
            if generation != self._generation:
                # A rebalance during this call: aiokafka waited for the new assignment and
                # returned its records; what came before it belongs to the old one.
                fetched = Fetched()
            if got:
                fetched.records[tp] = got
                self._note({tp: got})
                left = None if left is None else left - len(got)
        if not asked:
            # Every partition is paused or waiting to be salvaged again: wait as a fetch
            # would, instead of spinning the consume loop.
            later = [at for at in self._retry_at.values() if at > now]
            retry = min(later, default=now + timeout_ms / 1000)
            await asyncio.sleep(max(0.0, min(timeout_ms / 1000, retry - now)))
        return fetched

    async def _salvage(
        self, tp: TopicPartition, cause: BaseException, generation: int
    ) -> Salvage | None:
        consumer = self._consumer
        try:
            offset = self._expected.get(tp)
            if offset is None:
                offset = await consumer.position(tp)  # it raised: it did not move
            salvage = await self._salvager.salvage(tp, offset, cause)
        except IllegalStateError:
            return None
        except KafkaError as exc:
            if tp not in self._retry_at:
                log.warning("salvage_failed", partition=tp.partition, error=repr(exc))
            loop = asyncio.get_running_loop()
            self._retry_at[tp] = loop.time() + SALVAGE_RETRY_S
            self._careful_until = max(self._careful_until, self._retry_at[tp] + CAREFUL_S)
            return None  # a careful round tries again
        if not salvage.records and salvage.resume_at <= offset:
            # The bridge's own reader found nothing to skip where the client fails. Try
            # again a few times (a log being truncated, say), then give up one offset.
            strikes = self._strikes[(tp, offset)] = self._strikes.get((tp, offset), 0) + 1
            if strikes < STRIKES:
                return None
            salvage = Salvage([_unreadable(tp, offset, cause)], offset + 1, 1)
        self._strikes.pop((tp, offset), None)
        self._retry_at.pop(tp, None)
        if generation != self._generation:
            return None  # a rebalance meanwhile: the partition starts over from its commit
        try:
            consumer.seek(tp, salvage.resume_at)
        except IllegalStateError:
            return None
        self._expected[tp] = salvage.resume_at
        self._careful_until = 0.0  # found it: back to fetching everything at once
        self.broken_batches += salvage.broken_batches
        log.warning(
            "batch_salvaged",
            topic=tp.topic,
            partition=tp.partition,
            offset=offset,
            resume_at=salvage.resume_at,
            records=len(salvage.records),
            failing=sum(1 for record in salvage.records if record.problem is not None),
            cause=repr(cause),
        )
        return salvage


def _unreadable(tp: TopicPartition, offset: int, cause: BaseException) -> SalvagedRecord:
    problem = UndecodableBatchError(
        f"offset {offset} of {tp.topic}[{tp.partition}] cannot be read by the client "
        f"({type(cause).__name__}: {cause}) and not by the bridge's own reader either"
    )
    return SalvagedRecord(tp.topic, tp.partition, offset, offset, None, None, None, [], problem)
