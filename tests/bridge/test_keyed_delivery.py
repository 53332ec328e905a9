"""Delivery with DELIVERY__ORDERING=key: held keys do not hold others; resends keep key order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiokafka.errors import NotLeaderForPartitionError

from bridge.kafka.delivery import Delivery
from bridge.pipeline.keyed import KeyedLedger
from bridge.pipeline.ledger import EventSlot, PartitionLedger
from tests.bridge.fake_kafka import ROUTED, FakeProducer, FakeRecord, settle
from tests.bridge.test_delivery import IN0, Harness, ok


@pytest.fixture
async def keyed() -> AsyncIterator[Harness]:
    harness = Harness(FakeProducer())
    harness.delivery = Delivery(harness.producer, harness, harness.fatal.append, "key")
    emitter = asyncio.create_task(harness.delivery.run_emitter())
    yield harness
    emitter.cancel()
    await asyncio.gather(emitter, return_exceptions=True)


def take(harness: Harness, offset: int, key: bytes | None) -> EventSlot:
    """A consumed record of IN0 whose outcome is not known yet."""
    record = FakeRecord(IN0.topic, IN0.partition, offset, key=key, value=b"")
    return harness.delivery.ledger(IN0).add(offset, record, ROUTED, 10)


def sent_offsets(harness: Harness) -> list[int]:
    return [
        int(value.removeprefix(b"out-"))
        for sent in harness.producer.sent
        for value in sent.values
        if value
    ]


def test_the_ordering_setting_picks_the_ledger() -> None:
    harness = Harness(FakeProducer())
    assert type(harness.delivery.ledger(IN0)) is PartitionLedger
    keyed = Delivery(harness.producer, harness, harness.fatal.append, "key")
    assert isinstance(keyed.ledger(IN0), KeyedLedger)


async def test_a_held_key_does_not_hold_the_others_and_the_commit_waits_for_it(
    keyed: Harness,
) -> None:
    delivery = keyed.delivery
    held = take(keyed, 0, b"a")
    others = [take(keyed, offset, b"b") for offset in (1, 2)]
    later_a = take(keyed, 3, b"a")
    for slot in [*others, later_a]:
        delivery.finish(IN0, slot, ok())
    (batch,) = await keyed.next_sent()
    assert sent_offsets(keyed) == [1, 2]  # 3 is a's: it waits for 0
    batch.ack()
    await settle()
    assert delivery.ledger(IN0).committable() is None  # 0 unfinished: nothing passes it
    delivery.finish(IN0, held, ok())
    (batch,) = await keyed.next_sent()
    assert batch.values == [b"out-0", b"out-3"]
    batch.ack()
    await settle()
    assert delivery.ledger(IN0).committable() == 4
    assert keyed.written_offsets == [1, 2, 0, 3]


async def test_a_resend_after_a_broker_fault_keeps_every_keys_order(keyed: Harness) -> None:
    delivery = keyed.delivery
    held = take(keyed, 0, b"a")
    b1, a2, b3 = take(keyed, 1, b"b"), take(keyed, 2, b"a"), take(keyed, 3, b"b")
    for slot in (b1, a2, b3):
        delivery.finish(IN0, slot, ok())
    (first,) = await keyed.next_sent()
    assert first.values == [b"out-1", b"out-3"]
    first.fail(NotLeaderForPartitionError("the leader moved"))
    await settle()
    b4 = take(keyed, 4, b"b")
    delivery.finish(IN0, b4, ok())  # finished while b's earlier outputs wait to be resent
    delivery.finish(IN0, held, ok())
    (again,) = await keyed.next_sent()
    again.ack()
    await settle()
    resent = [int(value.removeprefix(b"out-")) for value in again.values if value]
    assert sorted(resent) == [0, 1, 2, 3, 4]
    assert [o for o in resent if o in (1, 3, 4)] == [1, 3, 4]  # b: the resend before 4
    assert [o for o in resent if o in (0, 2)] == [0, 2]
    assert delivery.ledger(IN0).committable() == 5
    assert delivery.resends == 2
