"""Consumer lag: how far the group's committed offset is behind each assigned partition's end.

A small task asks for the end offsets every ``LAG_INTERVAL_S`` (ListOffsets through
the consumer: it answers while partitions are paused, when ``highwater()`` stops
moving because nothing is fetched). Under ``read_committed`` the consumer asks for
the last stable offset, so records of open transactions are not counted; a
committed transaction's marker takes an offset too, so lag there can rest at 1.

The committed offset is the one this bridge last landed (``PartitionLedger.committed``);
for a partition it has committed nothing for since it was assigned, the group's, as
the coordinator has it; for a group that never committed one, the log start when
the bridge starts at the earliest offset (everything is still to do), else nothing
is reported until the first commit.

Lag is never negative (an end read before a commit that landed after it). A read
that fails (the broker away, a timeout) is logged at debug and leaves the last
values: the lag of a stalled broker is what it was.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from bridge.pipeline.ledger import EventLedger

log = structlog.get_logger(__name__)

LAG_INTERVAL_S = 2.0


class ConsumerLag:
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        ledgers: Mapping[TopicPartition, EventLedger],
        timeout_s: float,
        *,
        from_earliest: bool,
        interval_s: float = LAG_INTERVAL_S,
    ) -> None:
        self._consumer = consumer
        self._ledgers = ledgers
        self._timeout_s = timeout_s
        self._from_earliest = from_earliest
        self._interval_s = interval_s
        self.lag: dict[TopicPartition, int] = {}  # the assigned partitions' last known lag

    async def run(self) -> None:
        while True:
            await self.update()
            await asyncio.sleep(self._interval_s)

    async def update(self) -> None:
        """Read the ends and the committed offsets once; keep the last values if that fails."""
        assigned = set(self._consumer.assignment())
        for tp in [tp for tp in self.lag if tp not in assigned]:
            del self.lag[tp]  # another member's now: its lag is reported there
        if not assigned:
            return
        try:
            lag = await asyncio.wait_for(self._read(sorted(assigned)), self._timeout_s)
        except (KafkaError, TimeoutError) as exc:
            log.debug("lag_unreadable", error=repr(exc))
            return
        for tp, behind in lag.items():
            if tp in self._consumer.assignment():  # a rebalance may have run meanwhile
                self.lag[tp] = behind

    async def _read(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        consumer = self._consumer
        ends = await consumer.end_offsets(partitions)
        committed: dict[TopicPartition, int] = {}
        unknown = []
        for tp in partitions:
            ledger = self._ledgers.get(tp)
            offset = ledger.committed if ledger is not None else None
            if offset is None:
                offset = await consumer.committed(tp)
            if offset is None:
                unknown.append(tp)
            else:
                committed[tp] = offset
        if unknown and self._from_earliest:
            committed.update(await consumer.beginning_offsets(unknown))
        return {tp: max(end - committed[tp], 0) for tp, end in ends.items() if tp in committed}
