"""The consume loop: room -> fetch -> intake -> due batches, until the bridge stops.

A stop (SIGTERM) ends a fetch that is waiting, including one that waits for a
rebalance to finish: the bridge stops at once instead of joining the next
generation only to leave it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

import structlog

from bridge.flow import FlowControl
from bridge.intake import Dispatch, Intake
from bridge.kafka.fetch import Fetched, GuardedFetch
from bridge.lanes import Lanes

log = structlog.get_logger(__name__)

IDLE_POLL_MS = 200  # longest a poll waits when no batch is open (bounds stop latency)
T = TypeVar("T")


async def consume(
    *,
    fetch: GuardedFetch,
    flow: FlowControl,
    intake: Intake,
    lanes: Lanes,
    dispatch: Dispatch,
    stop: asyncio.Event,
    max_records: int,
) -> None:
    loop = asyncio.get_running_loop()
    stopping = asyncio.ensure_future(stop.wait())
    first = True
    try:
        while not stop.is_set():
            deadline = lanes.deadline()
            timeout_ms = (
                IDLE_POLL_MS if deadline is None else max(0, int((deadline - loop.time()) * 1000))
            )
            room = await flow.room(timeout_ms / 1000)
            fetched: Fetched | None = Fetched()
            if room > 0:
                fetched = await _unless(
                    fetch.getmany(timeout_ms, max_records=min(room, max_records)), stopping
                )
            elif flow.paused:  # keep polling, so the group knows this member is alive
                fetched = await _unless(fetch.getmany(timeout_ms), stopping)
            if fetched is None:
                break  # stopped while fetching
            if first and (fetched.records or fetched.salvaged):
                log.info("consuming")
                first = False
            intake.take(fetched, loop.time())
            for batch in lanes.take_due(loop.time()):
                dispatch(batch)
    finally:
        stopping.cancel()


async def _unless(work: Awaitable[T], stopping: asyncio.Future[Any]) -> T | None:
    """``work``'s result, or None if the bridge is told to stop first (``work`` is cancelled)."""
    task: asyncio.Future[T] = asyncio.ensure_future(work)
    await asyncio.wait((task, stopping), return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        return task.result()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return None
