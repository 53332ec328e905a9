"""Delivery: rounds in offset order, acks, resends after broker trouble, refusals, holds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import pytest
import structlog
from aiokafka import TopicPartition
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    RequestTimedOutError,
)

from bridge.domain import Failure, Outcome, Success
from bridge.errors import NotJsonError
from bridge.kafka import delivery as delivery_module
from bridge.kafka.delivery import Delivery
from bridge.kafka.records import OutputRecord
from bridge.pipeline.ledger import EventSlot
from tests.bridge.fake_kafka import ROUTED, FakeProducer, FakeRecord, Sent, settle, until

IN0, IN1 = TopicPartition("in", 0), TopicPartition("in", 1)
RESULTS, FAILURES = "results", "failures"
BACKOFF = (0.02, 0.16)


def ok() -> Outcome:
    return Success({"y": 1}, version=1, attempts=1, model_ms=1.0)


def failed() -> Outcome:
    return Failure(NotJsonError("not JSON"), attempts=0)


def build_output(slot: EventSlot, now: float) -> OutputRecord:
    """A result on RESULTS, a failure on FAILURES; the value names the input offset."""
    topic = RESULTS if isinstance(slot.outcome, Success) else FAILURES
    padding = slot.record.value or b""
    return OutputRecord(topic, slot.record.partition, None, b"out-%d" % slot.offset + padding, [])


@dataclass
class Harness:
    """A Delivery on a fake producer; what it reported as fatal and made unwritable."""

    producer: FakeProducer
    delivery: Delivery = field(init=False)
    fatal: list[BaseException] = field(default_factory=list)
    unwritable_calls: list[int] = field(default_factory=list)  # offsets
    written_offsets: list[int] = field(default_factory=list)  # acknowledged, in ack order

    def __post_init__(self) -> None:
        self.delivery = Delivery(self.producer, self, self.fatal.append)

    def build(self, slot: EventSlot, now: float) -> OutputRecord:
        return build_output(slot, now)

    def written(self, slots: Sequence[EventSlot], now: float) -> None:
        self.written_offsets.extend(slot.offset for slot in slots)

    def unwritable(self, slot: EventSlot, error: BaseException) -> OutputRecord:
        self.unwritable_calls.append(slot.offset)
        headers = [("refused", type(error).__name__.encode())]
        return OutputRecord(FAILURES, slot.record.partition, None, None, headers)

    def add(
        self,
        tp: TopicPartition,
        offsets: range | list[int],
        outcome: Outcome | None = None,
        *,
        size: int = 10,
        padding: bytes = b"",
    ) -> list[EventSlot]:
        """Consumed records of ``tp`` whose outcome is known at once."""
        ledger = self.delivery.ledger(tp)
        slots = []
        for offset in offsets:
            record = FakeRecord(tp.topic, tp.partition, offset, value=padding)
            slot = ledger.add(offset, record, ROUTED, size)
            self.delivery.finish(tp, slot, outcome or ok())
            slots.append(slot)
        return slots

    async def next_sent(self, count: int = 1) -> list[Sent]:
        """Wait for ``count`` more batches than were sent so far."""
        before = len(self.producer.sent)
        await self.producer.wait_sent(before + count)
        return self.producer.sent[before:]


@pytest.fixture(autouse=True)
def short_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Read when a Delivery is made: before any harness."""
    monkeypatch.setattr(delivery_module, "RESEND_BACKOFF_S", BACKOFF)


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    harness = Harness(FakeProducer())
    emitter = asyncio.create_task(harness.delivery.run_emitter())
    yield harness
    emitter.cancel()
    await asyncio.gather(emitter, return_exceptions=True)


# -- rounds ------------------------------------------------------------------------------------


async def test_a_round_sends_one_batch_per_destination_in_offset_order(harness: Harness) -> None:
    harness.add(IN0, [0, 1])
    harness.add(IN0, [2], failed())
    harness.add(IN0, [3])
    sent = await harness.next_sent(2)
    await settle()
    assert len(harness.producer.sent) == 2  # one round: one batch per output topic-partition
    by_topic = {batch.topic: batch for batch in sent}
    assert by_topic[RESULTS].values == [b"out-0", b"out-1", b"out-3"]
    assert by_topic[FAILURES].values == [b"out-2"]
    assert {batch.partition for batch in sent} == {0}


async def test_only_one_round_per_input_partition_is_in_flight(harness: Harness) -> None:
    harness.add(IN0, [0])
    (first,) = await harness.next_sent()
    harness.add(IN0, [1, 2])
    harness.add(IN1, [0])  # another input partition is not held up by IN0's round
    (other,) = await harness.next_sent()
    assert (other.partition, other.values) == (1, [b"out-0"])
    await settle()
    assert len(harness.producer.sent) == 2  # IN0's next round waits for the first's answer
    first.ack()
    (second,) = await harness.next_sent()
    assert second.values == [b"out-1", b"out-2"]


async def test_acks_mark_the_slots_and_free_what_they_held(harness: Harness) -> None:
    delivery = harness.delivery
    harness.add(IN0, [0, 1], size=100)
    harness.add(IN1, [7], size=30)
    assert (delivery.pending(), delivery.pending_bytes()) == (3, 230)
    sent = await harness.next_sent(2)
    in0 = next(batch for batch in sent if batch.partition == 0)
    in0.ack()
    await until(lambda: delivery.pending() == 1)
    assert delivery.pending_bytes() == 30
    assert delivery.ledger(IN0).committable() == 2
    assert delivery.ledger(IN1).committable() is None


async def test_outputs_that_do_not_fit_one_batch_follow_in_later_rounds_in_order() -> None:
    harness = Harness(FakeProducer(batch_size=300))  # two 100-byte records per batch
    emitter = asyncio.create_task(harness.delivery.run_emitter())
    try:
        harness.add(IN0, range(5), padding=b"x" * 94)
        values: list[bytes] = []
        sizes: list[int] = []
        while len(values) < 5:
            (batch,) = await harness.next_sent()
            await settle()
            assert not harness.producer.unanswered()[1:]  # never two rounds at once
            sizes.append(len(batch.records))
            values += [value[:5] for value in batch.values if value]
            batch.ack()
        assert sizes == [2, 2, 1]
        assert values == [b"out-%d" % offset for offset in range(5)]
        await until(lambda: harness.delivery.ledger(IN0).committable() == 5)
    finally:
        emitter.cancel()
        await asyncio.gather(emitter, return_exceptions=True)


# -- a broker that does not take outputs for a while -------------------------------------------


async def test_a_failed_round_goes_before_what_waited_behind_it() -> None:
    harness = Harness(FakeProducer(batch_size=300))  # two 100-byte records per batch
    emitter = asyncio.create_task(harness.delivery.run_emitter())
    try:
        harness.add(IN0, range(4), padding=b"x" * 94)
        (first,) = await harness.next_sent()  # 0 and 1; 2 and 3 wait for the next round
        first.fail(NotLeaderForPartitionError("the leader moved"))
        values: list[bytes] = []
        while len(values) < 4:
            (batch,) = await harness.next_sent()
            values += [value[:5] for value in batch.values if value]
            batch.ack()
        assert values == [b"out-0", b"out-1", b"out-2", b"out-3"]
    finally:
        emitter.cancel()
        await asyncio.gather(emitter, return_exceptions=True)


async def test_a_retriable_failure_resends_the_round_first_after_a_backoff_while_blocked(
    harness: Harness,
) -> None:
    loop = asyncio.get_running_loop()
    delivery = harness.delivery
    harness.add(IN0, [0, 1])
    (first,) = await harness.next_sent()
    with structlog.testing.capture_logs() as logs:
        first.fail(KafkaTimeoutError("no answer"))
        failed_at = loop.time()
        await settle()
        assert delivery.blocked
        harness.add(IN0, [2])  # resolved while the broker is in trouble: goes after the resend
        (resend,) = await harness.next_sent()
        assert loop.time() - failed_at >= BACKOFF[0] * 0.9
        assert delivery.blocked  # until a round is acknowledged
        assert resend.values == [b"out-0", b"out-1", b"out-2"]
        resend.ack()
        await until(lambda: not delivery.blocked)
    assert delivery.ledger(IN0).committable() == 3
    assert delivery.resends == 2
    events = [entry["event"] for entry in logs]
    assert events == ["broker_not_writable", "broker_writable"]
    assert logs[1]["down_s"] >= BACKOFF[0] * 0.9


@pytest.mark.parametrize(
    "error",
    [
        RequestTimedOutError("slow"),
        NotLeaderForPartitionError("moved"),
        KafkaTimeoutError("expired in the accumulator"),
    ],
    ids=lambda error: type(error).__name__,
)
async def test_errors_kafka_calls_retriable_are_resent_unchanged(
    harness: Harness, error: Exception
) -> None:
    harness.add(IN0, [0])
    (first,) = await harness.next_sent()
    first.fail(error)
    (resend,) = await harness.next_sent()
    assert resend.topic == RESULTS
    assert resend.values == [b"out-0"]
    assert harness.unwritable_calls == []


async def test_a_cancelled_produce_counts_as_retriable(harness: Harness) -> None:
    harness.add(IN0, [0])
    (first,) = await harness.next_sent()
    first.future.cancel()
    (resend,) = await harness.next_sent()
    assert resend.values == [b"out-0"]


async def test_a_send_that_raises_before_it_is_queued_is_sent_again(harness: Harness) -> None:
    harness.producer.raise_on_send.append(KafkaTimeoutError("no room in the accumulator"))
    harness.add(IN0, [0, 1])
    (resend,) = await harness.next_sent()  # the first send never got a future
    assert harness.delivery.blocked
    assert resend.values == [b"out-0", b"out-1"]
    resend.ack()
    await until(lambda: not harness.delivery.blocked)


async def test_the_backoff_grows_while_failures_go_on_and_starts_over_after_an_ack(
    harness: Harness,
) -> None:
    loop = asyncio.get_running_loop()
    harness.add(IN0, [0])

    async def fail_and_time_the_resend() -> float:
        (batch,) = harness.producer.unanswered()
        batch.fail(RequestTimedOutError("slow"))
        failed_at = loop.time()
        await harness.next_sent()
        return loop.time() - failed_at

    await harness.next_sent()
    gaps = [await fail_and_time_the_resend() for _ in range(3)]
    assert gaps[1] >= 2 * BACKOFF[0] * 0.9
    assert gaps[2] >= 4 * BACKOFF[0] * 0.9
    harness.producer.unanswered()[0].ack()
    harness.add(IN0, [1])
    await harness.next_sent()
    assert await fail_and_time_the_resend() < BACKOFF[1] * 0.75  # back to the first wait


async def test_a_hold_that_starts_during_the_resend_backoff_stops_the_resend(
    harness: Harness,
) -> None:
    harness.add(IN0, [0])
    (first,) = await harness.next_sent()
    first.fail(KafkaTimeoutError("no answer"))
    await settle()  # the emitter now waits out the backoff
    harness.delivery.hold_writes(True)  # fenced by a rebalance meanwhile
    await asyncio.sleep(BACKOFF[0] * 3)
    assert len(harness.producer.sent) == 1
    harness.delivery.hold_writes(False)
    (resend,) = await harness.next_sent()
    assert resend.values == [b"out-0"]


# -- outputs the broker refuses for good -------------------------------------------------------


async def test_a_refused_batch_is_split_into_single_records_sent_in_order(
    harness: Harness,
) -> None:
    harness.add(IN0, range(3))
    (first,) = await harness.next_sent()
    first.fail(MessageSizeTooLargeError("the batch is too large"))
    singles = []
    for _ in range(3):
        (single,) = await harness.next_sent()
        singles.append(single.values)
        single.ack()
    assert singles == [[b"out-0"], [b"out-1"], [b"out-2"]]
    assert not harness.delivery.blocked  # nothing to wait for: split and sent at once
    assert harness.unwritable_calls == []
    await until(lambda: harness.delivery.ledger(IN0).committable() == 3)


async def test_a_refused_single_output_is_replaced_by_the_unwritable_record(
    harness: Harness,
) -> None:
    harness.add(IN0, [0, 1])
    (first,) = await harness.next_sent()
    first.fail(MessageSizeTooLargeError("too large"))
    (alone,) = await harness.next_sent()
    assert alone.values == [b"out-0"]
    with structlog.testing.capture_logs() as logs:
        alone.fail(MessageSizeTooLargeError("too large"))
        sent = await harness.next_sent(2)  # one round: the replacement, and the next single
    assert harness.unwritable_calls == [0]
    by_topic = {batch.topic: batch for batch in sent}
    replacement = by_topic[FAILURES]
    assert replacement.values == [None]
    assert replacement.records[0].headers == [("refused", b"MessageSizeTooLargeError")]
    assert by_topic[RESULTS].values == [b"out-1"]
    assert [(entry["event"], entry["offset"]) for entry in logs] == [("output_refused", 0)]
    for batch in sent:
        batch.ack()
    await until(lambda: harness.delivery.ledger(IN0).committable() == 2)
    assert harness.fatal == []


async def test_the_replacement_record_goes_in_a_batch_of_its_own(harness: Harness) -> None:
    harness.add(IN0, [0], failed())
    (first,) = await harness.next_sent()
    harness.add(IN0, [1], failed())  # the same destination, ready behind it
    first.fail(MessageSizeTooLargeError("too large"))
    (replacement,) = await harness.next_sent()
    await settle()
    assert replacement.values == [None]
    assert len(harness.producer.sent) == 2  # offset 1 waits for the next round
    replacement.ack()
    (after,) = await harness.next_sent()
    assert after.values == [b"out-1"]


async def test_the_bridge_stops_only_when_even_the_unwritable_record_is_refused(
    harness: Harness,
) -> None:
    harness.add(IN0, [0])
    refusal = MessageSizeTooLargeError("too large")
    for _ in range(2):
        (batch,) = await harness.next_sent()
        assert harness.fatal == []
        batch.fail(refusal)
    await until(lambda: harness.fatal == [refusal])
    assert harness.delivery.failed
    assert harness.unwritable_calls == [0]
    await settle()
    assert len(harness.producer.sent) == 2
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await harness.delivery.drain([IN0], timeout_s=1.0) is False
    assert loop.time() - started < 0.5  # at once: nothing will ever be acknowledged
    assert harness.delivery.ledger(IN0).committable() is None  # uncommitted: a restart replays


async def test_a_batch_that_timed_out_is_resent_unchanged_even_if_another_was_refused(
    harness: Harness,
) -> None:
    harness.add(IN0, [0])  # a result
    harness.add(IN0, [1], failed())  # a dead letter: another destination, same round
    sent = await harness.next_sent(2)
    by_topic = {batch.topic: batch for batch in sent}
    by_topic[RESULTS].fail(RequestTimedOutError("slow"))
    await settle()
    by_topic[FAILURES].fail(MessageSizeTooLargeError("too large"))
    sent = await harness.next_sent(2)
    assert harness.unwritable_calls == [1]  # only the refused one is replaced
    assert any(batch.topic == RESULTS and batch.values == [b"out-0"] for batch in sent)
    assert not harness.fatal


# -- holds, drains, rebalances -----------------------------------------------------------------


async def test_hold_writes_stops_new_rounds_and_lets_those_in_flight_finish(
    harness: Harness,
) -> None:
    delivery = harness.delivery
    harness.add(IN0, [0])
    (in_flight,) = await harness.next_sent()
    delivery.hold_writes(True)
    harness.add(IN0, [1])
    harness.add(IN1, [0])
    in_flight.ack()
    await asyncio.sleep(0.02)
    assert len(harness.producer.sent) == 1
    assert delivery.ledger(IN0).committable() == 1  # the round in flight was acknowledged
    delivery.hold_writes(False)
    sent = await harness.next_sent(2)
    assert sorted((batch.partition, batch.values[0]) for batch in sent) == [
        (0, b"out-1"),
        (1, b"out-0"),
    ]


async def test_drain_waits_for_the_acks_of_the_partitions_asked_for(harness: Harness) -> None:
    loop = asyncio.get_running_loop()
    harness.add(IN0, [0])
    harness.add(IN1, [0])  # never acknowledged: not asked for
    sent = await harness.next_sent(2)
    in0 = next(batch for batch in sent if batch.partition == 0)
    loop.call_later(0.02, in0.ack)
    assert await harness.delivery.drain([IN0], timeout_s=1.0) is True
    assert await harness.delivery.drain([IN1], timeout_s=0.03) is False
    assert await harness.delivery.drain([TopicPartition("in", 9)], timeout_s=0.0) is True


async def test_hand_back_forgets_the_partition_and_what_it_would_resend(
    harness: Harness,
) -> None:
    delivery = harness.delivery
    harness.add(IN0, range(3))
    (in_flight,) = await harness.next_sent()
    assert delivery.hand_back([IN0, IN1]) == 3
    assert delivery.pending() == 0
    assert IN0 not in delivery.ledgers
    in_flight.fail(KafkaTimeoutError("no answer"))  # answered after the hand-back
    await asyncio.sleep(BACKOFF[0] * 3)
    assert len(harness.producer.sent) == 1  # the next owner writes them, not this member
    harness.add(IN0, [0])  # assigned again later: replayed from the commit
    (replay,) = await harness.next_sent()
    assert replay.values == [b"out-0"]  # the old round is not part of it


async def test_hand_back_drops_outputs_waiting_for_a_resend(harness: Harness) -> None:
    harness.add(IN0, range(2))
    (first,) = await harness.next_sent()
    first.fail(KafkaTimeoutError("no answer"))
    await settle()  # waiting out the backoff to send 0 and 1 again
    assert harness.delivery.hand_back([IN0]) == 2
    harness.add(IN0, [0])  # assigned again at once: replayed from the commit
    (replay,) = await harness.next_sent()
    assert replay.values == [b"out-0"]


async def test_a_round_answered_after_its_partition_came_back_is_not_resent(
    harness: Harness,
) -> None:
    harness.add(IN0, range(2))
    (old,) = await harness.next_sent()
    harness.delivery.hand_back([IN0])
    harness.add(IN0, range(2))  # assigned again at once: replayed from the commit
    await settle()
    assert len(harness.producer.sent) == 1  # behind the old round, still in flight
    old.fail(KafkaTimeoutError("no answer"))
    (replay,) = await harness.next_sent()
    assert replay.values == [b"out-0", b"out-1"]


async def test_flush_flushes_the_producer_and_swallows_its_kafka_errors(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    await harness.delivery.flush()
    assert harness.producer.flushes == 1

    async def unreachable() -> None:
        raise KafkaConnectionError("closing")

    monkeypatch.setattr(harness.producer, "flush", unreachable)
    await harness.delivery.flush()


async def test_a_resent_output_is_rebuilt_and_counted_once_when_acknowledged(
    harness: Harness,
) -> None:
    harness.add(IN0, range(2))
    (first,) = await harness.next_sent()
    first.fail(KafkaTimeoutError("no answer"))
    (again,) = await harness.next_sent()
    assert again.values == [b"out-0", b"out-1"]
    assert harness.written_offsets == []  # nothing counted for the failed send
    again.ack()
    await settle()
    assert harness.written_offsets == [0, 1]
