"""How much the consume loop may take, and when its partitions pause.

The bridge holds at most ``max_pending`` events and ``max_pending_bytes`` of
their input at once (the fetch sizes are checked against the byte bound, so one
fetch cannot overshoot it by more than ``fetch_max_bytes``).

- Full for a moment (normal under load): no records are taken; what aiokafka
  prefetched stays where it is.
- Full for longer, or a hold (the model server down, the broker not taking
  outputs, commits not landing, this member fenced by a rebalance): the assigned
  partitions are paused, which also drops aiokafka's prefetch, and polling goes on
  so the group keeps the member. They resume once the hold is over and half the
  room is back: pausing and resuming refetch, so no flapping.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

import structlog
from aiokafka import TopicPartition

log = structlog.get_logger(__name__)

STALL_PAUSE_S = 1.0  # full for this long: pause the partitions
FULL_WAIT_S = 0.05  # longest wait for progress while full


class Pausable(Protocol):
    """What flow control needs of the consumer."""

    def assignment(self) -> set[TopicPartition]: ...
    def pause(self, *partitions: TopicPartition) -> None: ...
    def resume(self, *partitions: TopicPartition) -> None: ...


class Held(Protocol):
    """What flow control needs of the delivery."""

    def pending(self) -> int: ...
    def pending_bytes(self) -> int: ...
    def wait_progress(self, timeout_s: float) -> Awaitable[None]: ...


class FlowControl:
    def __init__(
        self,
        consumer: Pausable,
        held: Held,
        hold: Callable[[], str | None],
        max_pending: int,
        max_pending_bytes: int,
    ) -> None:
        self._consumer = consumer
        self._held = held
        self._hold = hold  # why the bridge must not take more now, or None
        self._max_pending = max_pending
        self._max_bytes = max_pending_bytes
        self._full_since: float | None = None
        self.paused = False
        self.pauses = 0

    async def room(self, wait_s: float) -> int:
        """How many more events to take; 0 after waiting up to ``wait_s`` for some to finish."""
        held = self._held
        pending, size = held.pending(), held.pending_bytes()
        now = asyncio.get_running_loop().time()
        full = pending >= self._max_pending or size >= self._max_bytes
        if not full:
            self._full_since = None
        elif self._full_since is None:
            self._full_since = now
        stalled = self._full_since is not None and now - self._full_since >= STALL_PAUSE_S
        reason = self._hold() or ("full" if stalled else None)
        consumer = self._consumer
        if reason is not None:
            if not self.paused:
                log.info("paused", reason=reason, pending=pending, pending_bytes=size)
                self.paused = True
                self.pauses += 1
            consumer.pause(*consumer.assignment())  # also what was assigned since
            return 0
        if self.paused and pending <= self._max_pending // 2 and size <= self._max_bytes // 2:
            consumer.resume(*consumer.assignment())
            self.paused = False
            log.info("resumed", pending=pending, pending_bytes=size)
        if self.paused:
            consumer.pause(*consumer.assignment())  # partitions assigned since start unpaused
            return 0
        if full:
            await held.wait_progress(min(wait_s, FULL_WAIT_S))
            return 0
        return self._max_pending - pending
