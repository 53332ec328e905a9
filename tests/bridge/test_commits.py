"""The committer: one past the last acknowledged offset, bounded, failures logged once."""

from __future__ import annotations

import asyncio

import pytest
import structlog
from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError, KafkaConnectionError, RequestTimedOutError

from bridge.domain import Success
from bridge.kafka.commits import Committer
from bridge.pipeline.ledger import EventLedger, PartitionLedger
from tests.bridge.fake_kafka import HANG, FakeConsumer

P0, P1, P2 = (TopicPartition("in", partition) for partition in range(3))
INTERVAL_S = 0.02
TIMEOUT_S = 0.05


class Setup:
    def __init__(self) -> None:
        self.consumer = FakeConsumer()
        self.ledgers: dict[TopicPartition, EventLedger] = {}
        self.rejections = 0
        self.committer = Committer(
            self.consumer,
            self.ledgers,
            INTERVAL_S,
            TIMEOUT_S,
            on_rejected=self.rejected,
        )

    def rejected(self) -> None:
        self.rejections += 1

    def acked(self, tp: TopicPartition, offsets: range, *, in_flight: int = 0) -> None:
        """Slots for ``offsets``, acknowledged, then ``in_flight`` more sent but not yet."""
        ledger = self.ledgers.setdefault(tp, PartitionLedger())
        slots = [
            ledger.add(offset, None, None)
            for offset in range(offsets.start, offsets.stop + in_flight)
        ]
        for slot in slots:
            slot.resolve(Success({}, 1, 1, 1.0))
        ledger.take_ready()
        for slot in slots[: len(offsets)]:
            ledger.ack(slot)


@pytest.fixture
def setup() -> Setup:
    return Setup()


async def test_commits_one_past_the_last_acknowledged_offset_of_each_partition(
    setup: Setup,
) -> None:
    setup.acked(P0, range(0, 5))
    setup.acked(P1, range(10, 12), in_flight=3)  # 12..14 in flight: not committed
    setup.ledgers[P2] = PartitionLedger()  # nothing acknowledged yet: not in the commit
    assert await setup.committer.commit() is True
    assert setup.consumer.commits == [{P0: 5, P1: 12}]
    assert (setup.ledgers[P0].committed, setup.ledgers[P1].committed) == (5, 12)
    assert setup.committer.outcomes == {"ok": 1, "failed": 0, "rejected": 0}


async def test_a_partition_whose_offset_did_not_move_is_not_committed_again(setup: Setup) -> None:
    setup.acked(P0, range(0, 5))
    setup.acked(P1, range(0, 2))
    await setup.committer.commit()
    setup.acked(P1, range(2, 4))
    assert await setup.committer.commit() is True
    assert await setup.committer.commit() is True  # nothing owed: no request at all
    assert setup.consumer.commits == [{P0: 5, P1: 2}, {P1: 4}]
    assert setup.committer.outcomes["ok"] == 2


async def test_a_partial_commit_commits_only_the_partitions_asked_for(setup: Setup) -> None:
    setup.acked(P0, range(0, 5))
    setup.acked(P1, range(0, 2))
    assert await setup.committer.commit([P1, TopicPartition("in", 9)]) is True  # 9: not ours
    assert setup.consumer.commits == [{P1: 2}]
    assert setup.ledgers[P0].committed is None
    assert await setup.committer.commit() is True
    assert setup.consumer.commits[-1] == {P0: 5}


async def test_a_rejected_commit_is_counted_and_fences_the_member(setup: Setup) -> None:
    setup.acked(P0, range(0, 3))
    setup.consumer.commit_script = [CommitFailedError("generation over")]
    with structlog.testing.capture_logs() as logs:
        assert await setup.committer.commit() is False
    assert setup.rejections == 1
    assert setup.committer.outcomes == {"ok": 0, "failed": 0, "rejected": 1}
    assert setup.ledgers[P0].committed is None
    assert [(entry["event"], entry["partitions"]) for entry in logs] == [("commit_rejected", 1)]
    assert "the group rebalanced" in logs[0]["reason"]


@pytest.mark.parametrize(
    "error", [KafkaConnectionError("down"), RequestTimedOutError("slow")], ids=repr
)
async def test_a_commit_kafka_refuses_is_counted_as_failed(setup: Setup, error: Exception) -> None:
    setup.acked(P0, range(0, 3))
    setup.consumer.commit_script = [error]
    with structlog.testing.capture_logs() as logs:
        assert await setup.committer.commit() is False
    assert setup.committer.outcomes == {"ok": 0, "failed": 1, "rejected": 0}
    assert setup.rejections == 0
    assert setup.ledgers[P0].committed is None
    assert [(entry["event"], entry["reason"]) for entry in logs] == [("commit_failed", repr(error))]


async def test_a_commit_that_hangs_fails_at_its_deadline(setup: Setup) -> None:
    loop = asyncio.get_running_loop()
    setup.acked(P0, range(0, 3))
    setup.consumer.commit_script = [HANG]
    started = loop.time()
    with structlog.testing.capture_logs() as logs:
        assert await setup.committer.commit() is False
    assert TIMEOUT_S * 0.9 <= loop.time() - started < 1.0
    assert setup.committer.outcomes["failed"] == 1
    assert setup.ledgers[P0].committed is None
    assert logs[0]["reason"] == f"no answer in {TIMEOUT_S} s"


async def test_a_failure_streak_is_logged_once_and_its_end_once(setup: Setup) -> None:
    setup.acked(P0, range(0, 3))
    down = KafkaConnectionError("down")
    setup.consumer.commit_script = [down, down, down, None, down]
    with structlog.testing.capture_logs() as logs:
        for _ in range(3):
            assert await setup.committer.commit() is False
        assert await setup.committer.commit() is True
        setup.acked(P0, range(3, 4))
        assert await setup.committer.commit() is False  # a new streak: logged again
    assert [entry["event"] for entry in logs] == [
        "commit_failed",
        "commits_landing",
        "commit_failed",
    ]
    assert logs[1]["after"] == repr(down)
    assert setup.committer.outcomes == {"ok": 1, "failed": 4, "rejected": 0}
    assert setup.consumer.commits == [{P0: 3}] * 4 + [{P0: 4}]  # the same offsets, tried again


async def test_overdue_once_no_commit_landed_for_two_intervals_while_work_is_owed(
    setup: Setup,
) -> None:
    committer = setup.committer
    setup.acked(P0, range(0, 3))
    assert committer.overdue() is False  # the clock starts at the first question
    await asyncio.sleep(INTERVAL_S * 2.5)
    assert committer.overdue() is True
    assert await committer.commit() is True
    assert committer.overdue() is False


async def test_not_overdue_while_nothing_acknowledged_is_left_to_commit(setup: Setup) -> None:
    committer = setup.committer
    setup.acked(P0, range(0, 3))
    await committer.commit()
    setup.acked(P1, range(0, 0), in_flight=2)  # in flight only: nothing to commit
    assert committer.overdue() is False
    await asyncio.sleep(INTERVAL_S * 2.5)
    assert committer.overdue() is False


async def test_commits_that_keep_failing_make_it_overdue(setup: Setup) -> None:
    committer = setup.committer
    setup.acked(P0, range(0, 3))
    setup.consumer.commit_script = [KafkaConnectionError("down")] * 10
    assert committer.overdue() is False
    await asyncio.sleep(INTERVAL_S * 2.5)
    assert await committer.commit() is False
    assert committer.overdue() is True


async def test_a_partial_commit_does_not_reset_the_overdue_clock(setup: Setup) -> None:
    committer = setup.committer
    setup.acked(P0, range(0, 3))
    setup.acked(P1, range(0, 3))
    assert committer.overdue() is False
    await asyncio.sleep(INTERVAL_S * 2.5)
    assert await committer.commit([P0]) is True
    assert committer.overdue() is True  # P1's work is still owed
    assert await committer.commit() is True
    assert committer.overdue() is False


async def test_run_commits_every_interval(setup: Setup) -> None:
    setup.acked(P0, range(0, 3))
    task = asyncio.create_task(setup.committer.run())
    try:
        await asyncio.sleep(INTERVAL_S * 1.5)
        assert setup.consumer.commits == [{P0: 3}]
        setup.acked(P0, range(3, 5))
        await asyncio.sleep(INTERVAL_S * 1.5)
        assert setup.consumer.commits == [{P0: 3}, {P0: 5}]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
