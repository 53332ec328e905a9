"""Flow control: count and byte bounds, short waits while full, pauses, resumes at half."""

from __future__ import annotations

import asyncio

import pytest
import structlog
from aiokafka import TopicPartition

from bridge import flow as flow_module
from bridge.flow import FULL_WAIT_S, FlowControl
from tests.bridge.fake_kafka import FakeConsumer

P0, P1, P2 = (TopicPartition("in", partition) for partition in range(3))
MAX_PENDING, MAX_BYTES = 10, 1000
STALL_S = 0.03


class Held:
    """The delivery as flow control sees it: pending work, and a wait for progress."""

    def __init__(self) -> None:
        self.count = 0
        self.bytes = 0
        self.waits: list[float] = []

    def pending(self) -> int:
        return self.count

    def pending_bytes(self) -> int:
        return self.bytes

    async def wait_progress(self, timeout_s: float) -> None:
        self.waits.append(timeout_s)


class Setup:
    def __init__(self) -> None:
        self.consumer = FakeConsumer(assigned={P0, P1})
        self.held = Held()
        self.hold_reason: str | None = None
        self.flow = FlowControl(
            self.consumer, self.held, lambda: self.hold_reason, MAX_PENDING, MAX_BYTES
        )

    def pending(self, count: int, size: int = 0) -> None:
        self.held.count, self.held.bytes = count, size


@pytest.fixture
def setup(monkeypatch: pytest.MonkeyPatch) -> Setup:
    monkeypatch.setattr(flow_module, "STALL_PAUSE_S", STALL_S)
    return Setup()


async def test_room_is_what_the_count_bound_leaves(setup: Setup) -> None:
    setup.pending(3, 100)
    assert await setup.flow.room(1.0) == 7
    setup.pending(0)
    assert await setup.flow.room(1.0) == MAX_PENDING
    assert setup.held.waits == []
    assert setup.consumer.paused() == set()


@pytest.mark.parametrize(
    ("count", "size"), [(MAX_PENDING, 0), (2, MAX_BYTES)], ids=["count", "bytes"]
)
async def test_full_takes_nothing_and_waits_a_little_for_progress(
    setup: Setup, count: int, size: int
) -> None:
    setup.pending(count, size)
    assert await setup.flow.room(1.0) == 0
    assert await setup.flow.room(0.01) == 0
    assert setup.held.waits == [FULL_WAIT_S, 0.01]  # the shorter of the two
    assert not setup.flow.paused
    assert setup.consumer.paused() == set()  # a moment of full: prefetch stays


async def test_full_for_the_stall_time_pauses_every_assigned_partition(setup: Setup) -> None:
    setup.pending(MAX_PENDING, 10)
    assert await setup.flow.room(1.0) == 0
    assert not setup.flow.paused
    await asyncio.sleep(STALL_S * 1.2)
    with structlog.testing.capture_logs() as logs:
        assert await setup.flow.room(1.0) == 0
        assert await setup.flow.room(1.0) == 0  # still paused: logged once
    assert setup.flow.paused
    assert setup.flow.pauses == 1
    assert setup.consumer.paused() == {P0, P1}
    assert logs == [
        {
            "event": "paused",
            "reason": "full",
            "pending": MAX_PENDING,
            "pending_bytes": 10,
            "log_level": "info",
        }
    ]


async def test_the_stall_clock_starts_over_when_room_came_back_meanwhile(setup: Setup) -> None:
    setup.pending(MAX_PENDING)
    await setup.flow.room(1.0)
    await asyncio.sleep(STALL_S * 0.7)
    setup.pending(MAX_PENDING - 1)
    assert await setup.flow.room(1.0) == 1
    setup.pending(MAX_PENDING)
    await setup.flow.room(1.0)
    await asyncio.sleep(STALL_S * 0.7)  # full for longer than STALL_S in all, not in one piece
    await setup.flow.room(1.0)
    assert not setup.flow.paused


async def test_a_hold_pauses_at_once_with_room_to_spare(setup: Setup) -> None:
    setup.pending(1)
    setup.hold_reason = "model server down"
    with structlog.testing.capture_logs() as logs:
        assert await setup.flow.room(1.0) == 0
    assert setup.flow.paused
    assert setup.consumer.paused() == {P0, P1}
    assert setup.held.waits == []  # no wait: the consume loop goes on polling
    assert [(entry["event"], entry["reason"]) for entry in logs] == [
        ("paused", "model server down")
    ]


async def test_resume_needs_the_hold_over_and_both_bounds_at_half(setup: Setup) -> None:
    setup.pending(3, 100)
    setup.hold_reason = "broker not taking outputs"
    await setup.flow.room(1.0)
    setup.pending(1, 0)
    assert await setup.flow.room(1.0) == 0  # still held
    setup.hold_reason = None
    steps = [(6, 0), (5, 501), (1, 999)]  # count above half, bytes above half, ...
    with structlog.testing.capture_logs() as logs:
        for count, size in steps:
            setup.pending(count, size)
            assert await setup.flow.room(1.0) == 0
            assert setup.consumer.paused() == {P0, P1}
        setup.pending(MAX_PENDING // 2, MAX_BYTES // 2)
        assert await setup.flow.room(1.0) == MAX_PENDING // 2
    assert not setup.flow.paused
    assert setup.consumer.paused() == set()
    assert setup.held.waits == []
    assert logs == [{"event": "resumed", "pending": 5, "pending_bytes": 500, "log_level": "info"}]


async def test_a_stall_pause_lasts_until_half_even_when_no_longer_full(setup: Setup) -> None:
    setup.pending(MAX_PENDING)
    await setup.flow.room(1.0)
    await asyncio.sleep(STALL_S * 1.2)
    await setup.flow.room(1.0)
    assert setup.flow.paused
    setup.pending(MAX_PENDING - 2)
    assert await setup.flow.room(1.0) == 0
    assert setup.flow.paused
    setup.pending(MAX_PENDING // 2)
    assert await setup.flow.room(1.0) == MAX_PENDING // 2
    assert not setup.flow.paused


async def test_partitions_assigned_during_a_hold_are_paused_too(setup: Setup) -> None:
    setup.hold_reason = "fenced by a rebalance"
    await setup.flow.room(1.0)
    setup.consumer.rebalance({P1, P2})  # a new assignment starts unpaused
    assert await setup.flow.room(1.0) == 0
    assert setup.consumer.paused() == {P1, P2}
    assert setup.flow.pauses == 1


async def test_partitions_assigned_while_paused_for_half_are_paused_too(setup: Setup) -> None:
    setup.pending(8)
    setup.hold_reason = "commits not landing"
    await setup.flow.room(1.0)
    setup.hold_reason = None
    assert await setup.flow.room(1.0) == 0  # hold over, but not yet at half
    setup.consumer.rebalance({P0, P1})  # aiokafka forgets pauses across a rebalance
    assert await setup.flow.room(1.0) == 0
    assert setup.flow.paused
    assert setup.consumer.paused() == {P0, P1}
