"""The group's rebalances: finish revoked partitions' work, commit it, hand back the rest.

aiokafka's rebalances are eager: every member gives up every partition, then gets
its new share. On revocation the open batches go out at once, the revoked
partitions' work is drained within ``drain_s`` and committed, and what is left is
handed back uncommitted (the next owner replays it). A member whose last commit
was rejected is already out of the generation: its work is another member's now,
so it hands back without waiting.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog
from aiokafka import ConsumerRebalanceListener, TopicPartition

from bridge.kafka.commits import Committer
from bridge.kafka.delivery import Delivery
from bridge.kafka.fetch import GuardedFetch

log = structlog.get_logger(__name__)


class Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(
        self,
        *,
        delivery: Delivery,
        committer: Committer,
        fetch: GuardedFetch,
        flush_batches: Callable[[], None],
        drain_s: float,
    ) -> None:
        self._delivery = delivery
        self._committer = committer
        self._fetch = fetch
        self._flush_batches = flush_batches
        self._drain_s = drain_s
        self.fenced = False  # the last commit was rejected: not ours to write any more
        self.rebalances = 0
        # Partitions of the current assignment; None while not in the group (before the
        # first assignment, and from a revocation to the next assignment).
        self.assigned: int | None = None

    def fence(self) -> None:
        if not self.fenced:
            log.warning("fenced", action="not writing until the group assigns partitions again")
        self.fenced = True
        self._delivery.hold_writes(True)

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.assigned = None
        self._fetch.forget(revoked)
        delivery = self._delivery
        mine = [tp for tp in revoked if tp in delivery.ledgers]
        drained = committed = not mine
        if mine:
            self._flush_batches()
            if not self.fenced:
                drained = await delivery.drain(mine, self._drain_s)
                committed = await self._committer.commit(mine)
        handed_back = delivery.hand_back(mine)
        log.info(
            "partitions_revoked",
            partitions=sorted(tp.partition for tp in revoked),
            drained=drained,
            committed=committed,
            handed_back=handed_back,
        )

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.rebalances += 1
        if self.fenced:
            log.info("unfenced")
            self._delivery.hold_writes(False)
        self.fenced = False
        self.assigned = len(assigned)
        log.info("partitions_assigned", partitions=sorted(tp.partition for tp in assigned))
