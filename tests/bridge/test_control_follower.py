"""The control-topic follower: starts from the routes in force, and a record it cannot
read never stops the bridge."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
import structlog
from aiokafka import TopicPartition
from aiokafka.errors import CorruptRecordException

import bridge.control as control
from bridge.control import RoutesFollower
from bridge.pipeline.routing import Routes
from bridge.settings import KafkaSettings

TOPIC = "control"
TP = TopicPartition(TOPIC, 0)
UNREADABLE = object()  # a record the client raises on


@dataclass
class Record:
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int = 0


def routes_value(model: str, **weights: int) -> bytes:
    return orjson.dumps({"model": model, "routes": weights})


class FakeReader:
    """aiokafka's consumer as the follower uses it: one partition holding ``log``.

    ``UNREADABLE`` in the log raises as aiokafka does at a batch it cannot decode,
    on every fetch that reaches it; ``later`` is appended after the start.
    """

    def __init__(self, log: list[Any], later: list[Any] | None = None) -> None:
        self.log = log
        self.later = later or []
        self.position_ = 0
        self.started = self.stopped = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return {0} if topic == TOPIC else None

    async def topics(self) -> set[str]:
        return {TOPIC}

    def assign(self, partitions: list[TopicPartition]) -> None:
        assert partitions == [TP]

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        self.position_ = 0

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {TP: len(self.log)}

    async def position(self, tp: TopicPartition) -> int:
        return self.position_

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0
    ) -> dict[TopicPartition, list[Record]]:
        if self.position_ >= len(self.log) and self.later:
            self.log.append(self.later.pop(0))
        if self.position_ >= len(self.log):
            await asyncio.sleep(timeout_ms / 1000)
            return {}
        entry = self.log[self.position_]
        if entry is UNREADABLE:
            raise CorruptRecordException("Invalid CRC")
        self.position_ += 1
        return {TP: [Record(self.position_ - 1, *entry)]}


class Applied:
    def __init__(self) -> None:
        self.routes: list[Routes | None] = []
        self.changed = asyncio.Event()

    async def __call__(self, routes: Routes | None) -> None:
        self.routes.append(routes)
        self.changed.set()

    def described(self) -> list[str | None]:
        return [r.describe() if r is not None else None for r in self.routes]


def follower_on(
    reader: FakeReader, monkeypatch: pytest.MonkeyPatch, applied: Applied
) -> RoutesFollower:
    monkeypatch.setattr(control, "make_reader", lambda kafka, timeout_ms: reader)
    monkeypatch.setattr(control, "FAILED_FETCH_WAIT_S", 0.001)
    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:9")
    return RoutesFollower(kafka, TOPIC, "fraud", "serving_default", applied)


async def test_start_applies_the_latest_routes_of_its_model_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reader = FakeReader(
        [
            (b"fraud", routes_value("fraud", stable=100)),
            (b"churn", routes_value("churn", canary=1)),
            (b"fraud", routes_value("fraud", stable=90, canary=10)),
        ]
    )
    applied = Applied()
    await follower_on(reader, monkeypatch, applied).start()
    assert applied.described() == ["stable=90 canary=10"]


async def test_at_start_a_malformed_latest_record_leaves_the_routes_before_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reader = FakeReader(
        [(b"fraud", routes_value("fraud", stable=1, canary=1)), (b"fraud", b"{not json")]
    )
    applied = Applied()
    with structlog.testing.capture_logs() as logs:
        await follower_on(reader, monkeypatch, applied).start()
    assert applied.described() == ["stable=1 canary=1"]
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["routes_rejected"]


async def test_at_start_a_tombstone_means_the_settings_routes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reader = FakeReader([(b"fraud", routes_value("fraud", stable=1)), (b"fraud", None)])
    applied = Applied()
    await follower_on(reader, monkeypatch, applied).start()
    assert applied.routes == [None]


async def test_start_survives_an_unreadable_record_with_what_came_before_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reader = FakeReader([(b"fraud", routes_value("fraud", canary=1)), UNREADABLE])
    applied = Applied()
    with structlog.testing.capture_logs() as logs:
        await follower_on(reader, monkeypatch, applied).start()
    assert applied.described() == ["canary=1"]
    assert [e["event"] for e in logs if e["event"] == "control_topic_unreadable"] == [
        "control_topic_unreadable"
    ]


async def test_an_unreadable_control_record_is_logged_once_and_the_follower_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reader = FakeReader([], later=[UNREADABLE])
    applied = Applied()
    follower = follower_on(reader, monkeypatch, applied)
    await follower.start()
    with structlog.testing.capture_logs() as logs:
        running = asyncio.create_task(follower.run())
        for _ in range(50):  # the follower keeps fetching at the bad record
            await asyncio.sleep(0.002)
        # The bad batch goes (compaction, a rewrite): the next record is applied.
        reader.log[reader.position_] = (b"fraud", routes_value("fraud", stable=80, canary=20))
        await asyncio.wait_for(applied.changed.wait(), 5)
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert [e["event"] for e in logs if e["event"] == "control_topic_unreadable"] == [
        "control_topic_unreadable"
    ]
    assert applied.described() == ["stable=80 canary=20"]


async def test_following_applies_changes_and_rejects_a_bad_one_keeping_the_last(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reader = FakeReader(
        [(b"fraud", routes_value("fraud", stable=1))],
        later=[
            (b"churn", routes_value("churn", canary=1)),
            (b"fraud", routes_value("churn", canary=1)),  # key and value disagree
            (b"fraud", routes_value("fraud", canary=1)),
        ],
    )
    applied = Applied()
    follower = follower_on(reader, monkeypatch, applied)
    await follower.start()
    with structlog.testing.capture_logs() as logs:
        running = asyncio.create_task(follower.run())
        while len(applied.routes) < 2:
            applied.changed.clear()
            await asyncio.wait_for(applied.changed.wait(), 5)
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert applied.described() == ["stable=1", "canary=1"]
    rejected = [e for e in logs if e["event"] == "routes_rejected"]
    assert len(rejected) == 1 and "names model churn" in rejected[0]["reason"]
    await follower.stop()
    assert reader.stopped
