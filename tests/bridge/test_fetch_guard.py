"""GuardedFetch: a fetch that raises rewinds, narrows to one partition and salvages it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
import structlog
from aiokafka import TopicPartition
from aiokafka.errors import (
    ConsumerStoppedError,
    CorruptRecordException,
    KafkaConnectionError,
    TopicAuthorizationFailedError,
)

from bridge.errors import BadHeaderError, UndecodableBatchError
from bridge.kafka import fetch as fetch_module
from bridge.kafka.fetch import STRIKES, Fetched, GuardedFetch
from bridge.kafka.salvage import Salvage, SalvagedRecord
from tests.bridge.fake_kafka import FakeConsumer, FakeSalvager

P0, P1, P2 = (TopicPartition("in", partition) for partition in range(3))
BAD = CorruptRecordException("cannot decode the batch")
NOTHING = Salvage([], 0, 0)  # the bridge's reader found nothing to skip either


def salvaged(
    tp: TopicPartition, offset: int, problem: BadHeaderError | None = None
) -> SalvagedRecord:
    return SalvagedRecord(tp.topic, tp.partition, offset, offset, None, None, b"s", [], problem)


def offsets(records: Sequence[Any]) -> list[int]:
    return [record.offset for record in records]


class Setup:
    def __init__(self, *script: Salvage | BaseException, reset_to_earliest: bool = True) -> None:
        self.consumer = FakeConsumer()
        self.salvager = FakeSalvager(list(script) or [NOTHING])
        self.fetch = GuardedFetch(
            self.consumer,
            self.salvager,  # type: ignore[arg-type]
            reset_to_earliest=reset_to_earliest,
        )

    async def get(self, max_records: int | None = None, timeout_ms: int = 1) -> Fetched:
        return await self.fetch.getmany(timeout_ms, max_records)

    async def careful(self) -> None:
        """A fetch that raises once (aiokafka refused something): careful mode from now on."""
        self.consumer.getmany_errors.append(BAD)
        assert await self.get() == Fetched()


async def test_records_pass_through_as_aiokafka_returns_them() -> None:
    setup = Setup()
    setup.consumer.write(P0, 3)
    setup.consumer.write(P1, 2)
    fetched = await setup.get()
    assert {tp: offsets(records) for tp, records in fetched.records.items()} == {
        P0: [0, 1, 2],
        P1: [0, 1],
    }
    assert fetched.salvaged == {}
    assert setup.consumer.getmany_calls == [()]
    assert setup.consumer.seeks == []


async def test_a_failed_fetch_puts_every_partition_back_where_the_bridge_expects_it() -> None:
    setup = Setup()
    consumer = setup.consumer
    consumer.group_offsets[P2] = 5
    consumer.write(P0, 6)  # P0: the bridge got 0..2
    consumer.write(P1, 4)  # P1: nothing got, nothing committed
    consumer.write(P2, 8)  # P2: nothing got since the commit at 5, where it cannot be read
    consumer.poison(P2, 5, BAD)
    assert offsets((await setup.get(max_records=3)).records[P0]) == [0, 1, 2]
    with structlog.testing.capture_logs() as logs:
        # This call drains P0 3..5 and P1 0..3, then raises at P2: those records are lost.
        assert await setup.get() == Fetched()
    assert consumer.positions == {P0: 3, P1: 0, P2: 5}
    assert sorted(consumer.seeks, key=str) == sorted([(P0, 3), (P1, "beginning"), (P2, 5)], key=str)
    assert [entry["event"] for entry in logs] == ["fetch_failed"]
    # From now on partition by partition: what the failed call lost comes back.
    fetched = await setup.get()
    assert {tp: offsets(records) for tp, records in fetched.records.items()} == {
        P0: [3, 4, 5],
        P1: [0, 1, 2, 3],
    }
    assert consumer.getmany_calls[-3:] == [(P0,), (P1,), (P2,)]
    assert setup.salvager.calls == [(P2, 5)]  # at its position: it never moved


async def test_without_a_commit_or_an_earliest_reset_a_partition_is_left_where_it_is() -> None:
    setup = Setup(reset_to_earliest=False)
    setup.consumer.write(P0, 3)
    await setup.careful()
    assert setup.consumer.seeks == []


async def test_the_partition_that_raises_is_salvaged_and_the_consumer_moved_past_it() -> None:
    bad_header = BadHeaderError("header 0 is not UTF-8")
    rescued = [salvaged(P0, 2, bad_header), salvaged(P0, 3)]
    setup = Setup(Salvage(rescued, resume_at=4, broken_batches=1))
    consumer = setup.consumer
    consumer.write(P0, 6)
    consumer.poison(P0, 2, BAD)
    consumer.write(P1, 1)
    first = await setup.get()
    assert offsets(first.records[P0]) == [0, 1]  # up to the batch aiokafka cannot decode
    assert offsets(first.records[P1]) == [0]
    assert await setup.get() == Fetched()  # the next call raises at 2
    with structlog.testing.capture_logs() as logs:
        fetched = await setup.get()
    assert fetched.salvaged == {P0: rescued}
    assert fetched.records == {}
    assert setup.salvager.calls == [(P0, 2)]
    assert consumer.seeks[-1] == (P0, 4)
    assert setup.fetch.broken_batches == 1
    (entry,) = logs
    assert entry["event"] == "batch_salvaged"
    assert (entry["partition"], entry["offset"], entry["resume_at"]) == (0, 2, 4)
    assert (entry["records"], entry["failing"]) == (2, 1)
    # Found it: back to fetching every partition at once, from past the bad batch.
    fetched = await setup.get()
    assert consumer.getmany_calls[-1] == ()
    assert {tp: offsets(records) for tp, records in fetched.records.items()} == {P0: [4, 5]}


async def test_a_salvage_that_finds_nothing_is_tried_again_then_one_offset_given_up() -> None:
    setup = Setup(NOTHING)
    consumer = setup.consumer
    consumer.write(P0, 3)
    consumer.poison(P0, 0, BAD)
    await setup.careful()
    seeks_after_rewind = list(consumer.seeks)
    for _ in range(STRIKES - 1):
        assert await setup.get() == Fetched()
        assert consumer.seeks == seeks_after_rewind  # not moved: maybe readable next time
    fetched = await setup.get()
    assert len(setup.salvager.calls) == STRIKES
    (given_up,) = fetched.salvaged[P0]
    assert (given_up.offset, given_up.last_offset, given_up.value) == (0, 0, None)
    assert isinstance(given_up.problem, UndecodableBatchError)
    assert "CorruptRecordException" in given_up.problem.message
    assert consumer.seeks[-1] == (P0, 1)
    assert setup.fetch.broken_batches == 1
    assert offsets((await setup.get()).records[P0]) == [1, 2]


async def test_a_salvage_that_cannot_fetch_is_retried_after_a_pause_and_logged_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fetch_module, "SALVAGE_RETRY_S", 0.05)
    down = KafkaConnectionError("the raw fetch failed")
    setup = Setup(down, down, Salvage([salvaged(P0, 0)], resume_at=1, broken_batches=0))
    consumer = setup.consumer
    consumer.write(P0, 2)
    consumer.poison(P0, 0, BAD)
    consumer.write(P1, 2)
    with structlog.testing.capture_logs() as logs:
        await setup.careful()
        fetched = await setup.get()  # P0's salvage fails; P1 is read all the same
        assert offsets(fetched.records[P1]) == [0, 1]
        assert await setup.get() == Fetched()
        assert consumer.getmany_calls[-1] == (P1,)  # P0 is left alone until its retry time
        assert len(setup.salvager.calls) == 1
        await asyncio.sleep(0.06)
        assert await setup.get() == Fetched()  # fails again: not logged again
        await asyncio.sleep(0.06)
        fetched = await setup.get()
    assert offsets(fetched.salvaged[P0]) == [0]
    assert len(setup.salvager.calls) == 3
    events = [entry["event"] for entry in logs]
    assert events == ["fetch_failed", "salvage_failed", "batch_salvaged"]


async def test_a_failed_salvage_keeps_the_fetch_careful_until_its_retry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fetch_module, "CAREFUL_S", 0.02)
    monkeypatch.setattr(fetch_module, "SALVAGE_RETRY_S", 0.05)
    setup = Setup(KafkaConnectionError("the raw fetch failed"))
    setup.consumer.write(P0, 2)
    setup.consumer.poison(P0, 0, BAD)
    setup.consumer.write(P1, 2)
    await setup.careful()
    await setup.get()  # P0's salvage fails
    await asyncio.sleep(0.03)  # past CAREFUL_S, before the retry
    await setup.get()
    assert setup.consumer.getmany_calls[-1] == (P1,)  # not a fetch of all that raises again


@pytest.mark.parametrize("why", ["waiting for a salvage retry", "paused"])
async def test_a_careful_fetch_with_nothing_to_fetch_waits_its_timeout(why: str) -> None:
    setup = Setup(KafkaConnectionError("the raw fetch failed"))
    consumer = setup.consumer
    consumer.write(P0, 2)
    consumer.poison(P0, 0, BAD)
    await setup.careful()
    if why == "paused":
        consumer.pause(P0)
    else:
        await setup.get()  # the salvage fails: P0 is not fetched for SALVAGE_RETRY_S
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await setup.get(timeout_ms=50) == Fetched()
    assert loop.time() - started >= 0.04


async def test_careful_fetches_skip_paused_partitions_and_keep_to_max_records() -> None:
    setup = Setup()
    for tp in (P0, P1, P2):
        setup.consumer.write(tp, 5)
    await setup.careful()
    setup.consumer.pause(P1)
    fetched = await setup.get(max_records=7)
    assert {tp: offsets(records) for tp, records in fetched.records.items()} == {
        P0: [0, 1, 2, 3, 4],
        P2: [0, 1],
    }
    assert setup.consumer.getmany_calls[-2:] == [(P0,), (P2,)]


async def test_careful_fetching_ends_after_careful_s(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch_module, "CAREFUL_S", 0.03)
    setup = Setup()
    setup.consumer.write(P0, 1)
    setup.consumer.write(P1, 1)
    await setup.careful()
    await setup.get()
    assert setup.consumer.getmany_calls[-2:] == [(P0,), (P1,)]
    await asyncio.sleep(0.04)
    await setup.get()
    assert setup.consumer.getmany_calls[-1] == ()


@pytest.mark.parametrize(
    "error",
    [ConsumerStoppedError(), TopicAuthorizationFailedError("no read access")],
    ids=lambda error: type(error).__name__,
)
async def test_errors_that_mean_the_topic_cannot_be_read_at_all_propagate(
    error: Exception,
) -> None:
    setup = Setup()
    setup.consumer.write(P0, 3)
    setup.consumer.getmany_errors.append(error)
    with pytest.raises(type(error)):
        await setup.get()
    assert setup.consumer.seeks == []
    await setup.careful()
    setup.consumer.getmany_errors.append(error)  # raised by getmany(P0) of a careful fetch
    with pytest.raises(type(error)):
        await setup.get()
    assert setup.salvager.calls == []


# -- a rebalance in the middle of it -----------------------------------------------------------


async def test_a_rebalance_during_a_salvage_voids_it_and_moves_nothing() -> None:
    setup = Setup()
    consumer = setup.consumer
    consumer.write(P0, 3)
    consumer.poison(P0, 0, BAD)
    await setup.careful()
    seeks_before = []

    def rebalance_then_answer() -> Salvage:
        setup.fetch.forget({P0})  # what the rebalance listener does
        consumer.rebalance({P0})
        seeks_before.extend(consumer.seeks)
        return Salvage([salvaged(P0, 0)], resume_at=1, broken_batches=1)

    setup.salvager.script = [rebalance_then_answer]
    assert await setup.get() == Fetched()
    assert consumer.seeks == seeks_before  # the new generation starts from its commit
    assert consumer.positions[P0] == 0
    assert setup.fetch.broken_batches == 0


async def test_a_rebalance_during_the_rewind_is_not_followed_by_a_seek() -> None:
    setup = Setup()
    consumer = setup.consumer
    consumer.group_offsets[P0] = 2
    consumer.write(P0, 10)
    seeks_before = []

    async def rebalance() -> None:
        consumer.on_committed = None
        consumer.group_offsets[P0] = 6  # the revocation drained and committed up to 6
        setup.fetch.forget({P0})
        consumer.rebalance({P0})
        seeks_before.extend(consumer.seeks)

    consumer.on_committed = rebalance
    await setup.careful()
    assert consumer.seeks == seeks_before
    assert consumer.positions[P0] == 6  # not back at 2: 2..5 would be written twice


async def test_records_read_before_a_rebalance_in_a_careful_fetch_are_dropped() -> None:
    setup = Setup()
    consumer = setup.consumer
    for tp in (P0, P1):
        consumer.write(tp, 3)
    await setup.careful()

    def rebalance(partitions: tuple[TopicPartition, ...]) -> None:
        if partitions == (P1,):  # P0 was read in the old generation
            consumer.on_getmany = None
            setup.fetch.forget({P0, P1})
            consumer.rebalance({P0})

    consumer.on_getmany = rebalance
    fetched = await setup.get()
    assert P0 not in fetched.records  # the new generation reads it again from its commit
    assert offsets((await setup.get()).records[P0]) == [0, 1, 2]


async def test_records_read_after_a_rebalance_in_a_careful_fetch_are_not_lost() -> None:
    setup = Setup()
    consumer = setup.consumer
    for tp in (P0, P1):
        consumer.write(tp, 3)
    await setup.careful()

    def rebalance(partitions: tuple[TopicPartition, ...]) -> None:
        consumer.on_getmany = None
        setup.fetch.forget({P0, P1})  # the listener runs while getmany(P0) waits ...
        consumer.rebalance({P0, P1})  # ... which then reads the new assignment

    consumer.on_getmany = rebalance
    delivered: dict[TopicPartition, list[int]] = {P0: [], P1: []}
    for _ in range(3):
        fetched = await setup.get()
        for tp, records in fetched.records.items():
            delivered[tp] += offsets(records)
    assert delivered == {P0: [0, 1, 2], P1: [0, 1, 2]}
