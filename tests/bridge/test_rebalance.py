"""Rebalances: revoked work is flushed, drained, committed and handed back; fences and unfences."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest
import structlog
from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError, CorruptRecordException

from bridge.domain import Success
from bridge.kafka.commits import Committer
from bridge.kafka.delivery import Delivery
from bridge.kafka.fetch import GuardedFetch
from bridge.kafka.rebalance import Rebalance
from bridge.kafka.records import OutputRecord
from bridge.kafka.salvage import Salvage
from bridge.pipeline.ledger import EventSlot
from tests.bridge.fake_kafka import (
    ROUTED,
    FakeConsumer,
    FakeProducer,
    FakeRecord,
    FakeSalvager,
    settle,
)

P0, P1, P2 = (TopicPartition("in", partition) for partition in range(3))
DRAIN_S = 0.05
OK = Success({"y": 1}, version=1, attempts=1, model_ms=1.0)


def build_output(slot: EventSlot, now: float) -> OutputRecord:
    return OutputRecord("results", slot.record.partition, None, b"out-%d" % slot.offset, [])


class Outputs:
    """What the delivery asks of ``bridge.outputs.Outputs``, made trivial."""

    def build(self, slot: EventSlot, now: float) -> OutputRecord:
        return build_output(slot, now)

    def unwritable(self, slot: EventSlot, error: BaseException) -> OutputRecord:
        return OutputRecord("failures", slot.record.partition, None, None, [])

    def written(self, slots: Sequence[EventSlot], now: float) -> None:
        return None


class Bridge:
    """The delivery, committer and fetch of one member, on fake clients."""

    def __init__(self, *, drain_s: float = DRAIN_S) -> None:
        self.consumer = FakeConsumer(assigned={P0, P1, P2})
        self.producer = FakeProducer(auto_ack=True)
        self.delivery = Delivery(self.producer, Outputs(), self.fatal)
        self.committer = Committer(
            self.consumer,
            self.delivery.ledgers,
            interval_s=10.0,
            timeout_s=0.1,
            on_rejected=lambda: self.rebalance.fence(),
        )
        self.fetch = GuardedFetch(
            self.consumer,
            FakeSalvager([Salvage([], 0, 0)]),  # type: ignore[arg-type]
            reset_to_earliest=True,
        )
        self.flushed: list[EventSlot] = []  # slots the flush finished
        self.open_batch: list[EventSlot] = []  # slots in a batch not sent to the model yet
        self.rebalance = Rebalance(
            delivery=self.delivery,
            committer=self.committer,
            fetch=self.fetch,
            flush_batches=self.flush_batches,
            drain_s=drain_s,
        )

    def fatal(self, error: BaseException) -> None:
        raise AssertionError(f"the bridge stopped: {error!r}")

    def flush_batches(self) -> None:
        """The workers' flush: open batches go to the model; here their results come back."""
        for slot in self.open_batch:
            self.delivery.finish(TopicPartition("in", slot.record.partition), slot, OK)
            self.flushed.append(slot)
        self.open_batch.clear()

    def consumed(
        self, tp: TopicPartition, offsets: range, *, resolved: bool = True
    ) -> list[EventSlot]:
        ledger = self.delivery.ledger(tp)
        slots = []
        for offset in offsets:
            slot = ledger.add(offset, FakeRecord(tp.topic, tp.partition, offset), ROUTED, 10)
            if resolved:
                self.delivery.finish(tp, slot, OK)
            slots.append(slot)
        return slots


@pytest.fixture
async def bridge() -> AsyncIterator[Bridge]:
    bridge = Bridge()
    emitter = asyncio.create_task(bridge.delivery.run_emitter())
    yield bridge
    emitter.cancel()
    await asyncio.gather(emitter, return_exceptions=True)


async def test_revoked_partitions_are_flushed_drained_committed_and_handed_back(
    bridge: Bridge,
) -> None:
    bridge.consumed(P0, range(0, 3))
    bridge.open_batch = bridge.consumed(P0, range(3, 5), resolved=False)
    bridge.consumed(P1, range(0, 2))
    with structlog.testing.capture_logs() as logs:
        await bridge.rebalance.on_partitions_revoked({P0, P2})  # P2: no work here
    assert len(bridge.flushed) == 2
    assert bridge.consumer.commits == [{P0: 5}]  # the flushed batch's outputs included
    assert P0 not in bridge.delivery.ledgers
    assert P1 in bridge.delivery.ledgers  # not revoked: kept
    assert logs == [
        {
            "event": "partitions_revoked",
            "partitions": [0, 2],  # every revoked partition is named, with work or not
            "drained": True,
            "committed": True,
            "handed_back": 0,
            "log_level": "info",
        }
    ]


async def test_work_not_done_within_the_drain_time_is_handed_back_uncommitted(
    bridge: Bridge,
) -> None:
    loop = asyncio.get_running_loop()
    bridge.consumed(P0, range(0, 2))
    bridge.consumed(P0, range(2, 4), resolved=False)  # the model has not answered
    await settle()
    started = loop.time()
    with structlog.testing.capture_logs() as logs:
        await bridge.rebalance.on_partitions_revoked({P0})
    assert DRAIN_S * 0.9 <= loop.time() - started < 1.0
    assert bridge.consumer.commits == [{P0: 2}]  # what was written, not past it
    assert (logs[0]["drained"], logs[0]["committed"], logs[0]["handed_back"]) == (False, True, 2)
    assert bridge.delivery.pending() == 0


async def test_a_rejected_commit_on_revocation_fences_the_member(bridge: Bridge) -> None:
    bridge.consumed(P0, range(0, 2))
    bridge.consumer.commit_script = [CommitFailedError("generation over")]
    with structlog.testing.capture_logs() as logs:
        await bridge.rebalance.on_partitions_revoked({P0})
        bridge.consumed(P1, range(0, 1))  # not written: the member is out of the generation
        await settle()
    assert bridge.rebalance.fenced
    assert [batch.partition for batch in bridge.producer.sent] == [0]
    events = [entry["event"] for entry in logs]
    assert events == ["commit_rejected", "fenced", "partitions_revoked"]
    assert logs[-1]["committed"] is False


async def test_a_fenced_member_hands_back_without_draining_or_committing() -> None:
    bridge = Bridge(drain_s=5.0)
    loop = asyncio.get_running_loop()
    emitter = asyncio.create_task(bridge.delivery.run_emitter())
    try:
        bridge.consumed(P0, range(0, 2))
        await settle()  # acknowledged: committable, but not this member's to commit now
        with structlog.testing.capture_logs() as logs:
            bridge.rebalance.fence()
            bridge.rebalance.fence()
            bridge.consumed(P0, range(2, 4))
            started = loop.time()
            await bridge.rebalance.on_partitions_revoked({P0})
        assert loop.time() - started < 0.5  # no wait for a drain
        assert bridge.consumer.commits == []
        assert [batch.values for batch in bridge.producer.sent] == [[b"out-0", b"out-1"]]
        assert P0 not in bridge.delivery.ledgers
        assert [entry["event"] for entry in logs] == ["fenced", "partitions_revoked"]
        revoked = logs[-1]
        assert (revoked["drained"], revoked["committed"], revoked["handed_back"]) == (
            False,
            False,
            2,
        )
    finally:
        emitter.cancel()
        await asyncio.gather(emitter, return_exceptions=True)


async def test_an_assignment_unfences_the_member_and_restarts_writes(bridge: Bridge) -> None:
    bridge.rebalance.fence()
    bridge.consumed(P1, range(0, 2))
    await settle()
    assert bridge.producer.sent == []
    with structlog.testing.capture_logs() as logs:
        await bridge.rebalance.on_partitions_assigned({P1, P0})
        await settle()
    assert not bridge.rebalance.fenced
    assert bridge.rebalance.rebalances == 1
    assert [batch.values for batch in bridge.producer.sent] == [[b"out-0", b"out-1"]]
    assert [(entry["event"], entry.get("partitions")) for entry in logs] == [
        ("unfenced", None),
        ("partitions_assigned", [0, 1]),
    ]


async def test_an_assignment_of_a_member_in_good_standing_is_only_counted_and_logged(
    bridge: Bridge,
) -> None:
    with structlog.testing.capture_logs() as logs:
        await bridge.rebalance.on_partitions_assigned({P2})
    assert [entry["event"] for entry in logs] == ["partitions_assigned"]
    assert bridge.rebalance.rebalances == 1


async def test_revoked_partitions_without_work_are_only_forgotten_and_logged(
    bridge: Bridge,
) -> None:
    consumer = bridge.consumer
    consumer.write(P2, 3)
    await bridge.fetch.getmany(1)  # the bridge got P2 0..2: it expects 3 next
    consumer.group_offsets[P2] = 1  # but the group has only 1 committed
    with structlog.testing.capture_logs() as logs:
        await bridge.rebalance.on_partitions_revoked({P2})
    assert [(e["event"], e["partitions"], e["handed_back"]) for e in logs] == [
        ("partitions_revoked", [2], 0)
    ]
    assert bridge.flushed == [] and consumer.commits == []
    consumer.getmany_errors.append(CorruptRecordException("cannot decode"))
    await bridge.fetch.getmany(1)  # rewinds: P2 from its commit now, not from 3
    assert [seek for seek in consumer.seeks if seek[0] == P2] == [(P2, 1)]
