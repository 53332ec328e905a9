"""A pipeline task that dies stops the bridge (uncommitted) instead of leaving it stalled."""

from __future__ import annotations

import asyncio

from bridge.app import Bridge
from bridge.settings import Settings

from .fakes import FakeModelClient


def bridge() -> Bridge:
    settings = Settings(
        kafka={"bootstrap_servers": "127.0.0.1:9"},
        topics={"input": "in", "results": "out", "failures": "dlq"},
        model={"name": "fraud"},
    )
    return Bridge(settings, client=FakeModelClient())


async def test_a_task_that_raises_stops_the_bridge_with_its_error() -> None:
    under_test = bridge()

    async def emitter() -> None:
        raise TypeError("headers must be a list")

    task = asyncio.create_task(emitter(), name="emitter")
    await asyncio.gather(task, return_exceptions=True)
    under_test._task_ended(task)
    assert under_test.stop.is_set()
    assert isinstance(under_test.fatal, TypeError)


async def test_cancelled_and_finished_tasks_are_not_failures() -> None:
    under_test = bridge()
    finished = asyncio.create_task(asyncio.sleep(0))
    cancelled = asyncio.create_task(asyncio.sleep(10))
    cancelled.cancel()
    await asyncio.gather(finished, cancelled, return_exceptions=True)
    under_test._task_ended(finished)
    under_test._task_ended(cancelled)
    assert not under_test.stop.is_set()
    assert under_test.fatal is None
