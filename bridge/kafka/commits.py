"""Committing what Kafka acknowledged: bounded, retried, counted, and held to a replay bound.

Every ``interval`` the committer commits, for each partition, one past its last
acknowledged output. A commit has a deadline (aiokafka would otherwise retry a
retriable error forever, and a commit that never returns looks like one that
landed). A failed commit is logged once per streak with the reason, counted, and
tried again on the next pass with the same or later offsets. ``overdue`` says
when the last landed commit is older than two intervals while there is progress
to commit: the consume loop then holds, so what a crash can replay stays bounded
by what is pending plus two intervals' worth of output.

A commit the group rejects (``CommitFailedError``: it rebalanced, this member's
generation is over) means the partitions may already be another member's:
``on_rejected`` tells the delivery to stop writing until the new assignment.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from bridge.pipeline.ledger import EventLedger

log = structlog.get_logger(__name__)

OVERDUE_INTERVALS = 2
_EVENTS = {"failed": "commit_failed", "rejected": "commit_rejected"}


class Committer:
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        ledgers: Mapping[TopicPartition, EventLedger],
        interval_s: float,
        timeout_s: float,
        on_rejected: Callable[[], None],
    ) -> None:
        self._consumer = consumer
        self._ledgers = ledgers
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._on_rejected = on_rejected
        self._landed_at: float | None = None  # loop time of the last commit that landed
        self._failing: str | None = None  # the reason of the current failure streak
        self._failing_as = ""  # and its kind: "failed" or "rejected"
        self.outcomes = {"ok": 0, "failed": 0, "rejected": 0}

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await self.commit()

    def overdue(self) -> bool:
        """No commit landed for two intervals while there is acknowledged work to commit."""
        now = asyncio.get_running_loop().time()
        if self._landed_at is None:
            self._landed_at = now
        if now - self._landed_at <= OVERDUE_INTERVALS * self._interval_s:
            return False
        return any(
            ledger.committable() not in (None, ledger.committed)
            for ledger in self._ledgers.values()
        )

    async def commit(self, partitions: Iterable[TopicPartition] | None = None) -> bool:
        """Commit one past each partition's last acknowledged output; True if it landed."""
        ledgers = self._ledgers
        chosen = (
            dict(ledgers)
            if partitions is None
            else {tp: ledgers[tp] for tp in partitions if tp in ledgers}
        )
        offsets = {}
        for tp, ledger in chosen.items():
            offset = ledger.committable()
            if offset is not None and offset != ledger.committed:
                offsets[tp] = offset
        loop = asyncio.get_running_loop()
        if not offsets:
            if partitions is None:
                self._landed_at = loop.time()  # nothing owed
            return True
        try:
            await asyncio.wait_for(self._consumer.commit(offsets), self._timeout_s)
        except CommitFailedError as exc:
            self._failed("rejected", f"the group rebalanced: {exc}", len(offsets))
            self._on_rejected()
            return False
        except (KafkaError, TimeoutError) as exc:
            why = (
                f"no answer in {self._timeout_s} s" if isinstance(exc, TimeoutError) else repr(exc)
            )
            self._failed("failed", why, len(offsets))
            return False
        for tp, offset in offsets.items():
            chosen[tp].committed = offset
        self.outcomes["ok"] += 1
        if partitions is None:
            self._landed_at = loop.time()
        if self._failing is not None:
            log.info("commits_landing", after=self._failing)
            self._failing = None
        return True

    def _failed(self, outcome: str, why: str, partitions: int) -> None:
        self.outcomes[outcome] += 1
        if self._failing is None or self._failing_as != outcome:
            # Once per streak (and kind): a broker down for a minute is one line, not 120.
            log.warning(_EVENTS[outcome], reason=why, partitions=partitions)
        self._failing, self._failing_as = why, outcome
