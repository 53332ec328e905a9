"""The control-topic follower: a record it cannot read never stops the bridge."""

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

TP = TopicPartition("control", 0)


@dataclass
class Record:
    key: bytes
    value: bytes | None


class FlakyReader:
    """Raises on the first fetches (a batch it cannot decode), then reads a route change."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.fetches = 0

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    async def getmany(self, timeout_ms: int) -> dict[TopicPartition, list[Any]]:
        self.fetches += 1
        if self.fetches <= self.failures:
            raise CorruptRecordException("Invalid CRC")
        if self.fetches == self.failures + 1:
            value = orjson.dumps({"model": "fraud", "routes": {"stable": 80, "canary": 20}})
            return {TP: [Record(b"fraud", value)]}
        await asyncio.sleep(timeout_ms / 1000)
        return {}


async def test_an_unreadable_control_record_is_logged_once_and_the_follower_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(control, "FAILED_FETCH_WAIT_S", 0.001)
    applied: list[Routes | None] = []
    changed = asyncio.Event()

    async def on_routes(routes: Routes | None) -> None:
        applied.append(routes)
        changed.set()

    follower = RoutesFollower(
        KafkaSettings(bootstrap_servers="127.0.0.1:9"),
        "control",
        "fraud",
        "serving_default",
        on_routes,
    )
    reader = FlakyReader(failures=3)
    follower._consumer = reader  # type: ignore[assignment]
    with structlog.testing.capture_logs() as logs:
        running = asyncio.create_task(follower.run())
        await asyncio.wait_for(changed.wait(), 5)
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert [e["event"] for e in logs if e["event"] == "control_topic_unreadable"] == [
        "control_topic_unreadable"
    ]
    (routes,) = applied
    assert routes is not None and routes.describe() == "stable=80 canary=20"
