"""Scriptable stand-ins for aiokafka's producer and consumer: no sockets, real batches.

- ``FakeProducer`` hands out real ``BatchBuilder`` batches (so the batch size limit
  is aiokafka's own) and records every ``send_batch`` as a ``Sent`` whose future the
  test answers: ``ack()`` or ``fail(error)``.
- ``FakeConsumer`` holds one log per partition (a list indexed by offset: a
  ``FakeRecord`` or an exception aiokafka would raise at that offset) and a
  position per partition, and fetches the way aiokafka does: a call that raises
  for one partition loses what it had drained from the others in the same call,
  their positions moved on; the raising partition never moves.
- ``FakeSalvager`` answers ``salvage`` from a script.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import IllegalStateError
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.memory_records import MemoryRecords

from bridge.domain import NO_FIELDS, Routed, Target
from bridge.kafka.salvage import Salvage

HANG = "hang"  # a commit script entry: this commit never answers


async def until(predicate: Callable[[], bool], timeout_s: float = 1.0) -> None:
    """Let the event loop run until ``predicate()`` holds; fail after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"not true within {timeout_s} s")
        await asyncio.sleep(0.001)


async def settle(steps: int = 20) -> None:
    """A few turns of the event loop: done-callbacks and woken tasks run."""
    for _ in range(steps):
        await asyncio.sleep(0)


# -- the producer ---------------------------------------------------------------------------


# Where the fakes' events were routed: the Kafka side only carries it along.
ROUTED = Routed("latest", Target("m"), NO_FIELDS)


@dataclass(frozen=True, slots=True)
class SentRecord:
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


@dataclass(slots=True)
class Sent:
    """One ``send_batch``: where it went, what it held, and its future to answer."""

    topic: str
    partition: int
    records: list[SentRecord]
    future: asyncio.Future[Any]

    @property
    def values(self) -> list[bytes | None]:
        return [record.value for record in self.records]

    def ack(self) -> None:
        self.future.set_result(None)

    def fail(self, error: BaseException) -> None:
        self.future.set_exception(error)


def read_back(batch: BatchBuilder) -> list[SentRecord]:
    """The records of a closed batch, decoded the way a broker would."""
    records = MemoryRecords(bytes(batch._build()))
    out: list[SentRecord] = []
    while (read := records.next_batch()) is not None:
        out.extend(SentRecord(r.key, r.value, list(r.headers)) for r in read)
    return out


class FakeProducer:
    def __init__(self, batch_size: int = 16384, *, auto_ack: bool = False) -> None:
        self.batch_size = batch_size
        self.auto_ack = auto_ack  # every batch acknowledged at once
        self.sent: list[Sent] = []
        self.raise_on_send: list[BaseException] = []  # raised by the next send_batch calls
        self.flushes = 0

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(self.batch_size, 0)

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> Any:
        if self.raise_on_send:
            raise self.raise_on_send.pop(0)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.sent.append(Sent(topic, partition, read_back(batch), future))
        if self.auto_ack:
            future.set_result(None)
        return future

    async def flush(self) -> None:
        self.flushes += 1

    def unanswered(self) -> list[Sent]:
        return [sent for sent in self.sent if not sent.future.done()]

    async def wait_sent(self, count: int, timeout_s: float = 1.0) -> list[Sent]:
        """Until ``count`` batches were sent in all; returns them all."""
        await until(lambda: len(self.sent) >= count, timeout_s)
        return self.sent


# -- the consumer ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FakeRecord:
    """What the bridge reads of an aiokafka ``ConsumerRecord``."""

    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    value: bytes | None = b"{}"
    headers: Sequence[tuple[str, bytes]] = ()
    timestamp: int | None = None


Hook = Callable[[], Awaitable[None] | None]


@dataclass(slots=True)
class FakeConsumer:
    """One consumer of a group, with its assignment, positions and the group's offsets."""

    logs: dict[TopicPartition, list[FakeRecord | Exception]] = field(default_factory=dict)
    group_offsets: dict[TopicPartition, int] = field(default_factory=dict)  # committed
    positions: dict[TopicPartition, int] = field(default_factory=dict)
    assigned: set[TopicPartition] = field(default_factory=set)
    paused_tps: set[TopicPartition] = field(default_factory=set)
    # Scripts, and hooks that run inside a call (to stage a rebalance meanwhile).
    commit_script: list[BaseException | str | None] = field(default_factory=list)
    getmany_errors: list[BaseException] = field(default_factory=list)  # raised by the next calls
    on_getmany: Callable[[tuple[TopicPartition, ...]], Awaitable[None] | None] | None = None
    on_committed: Hook | None = None
    end_offsets_error: BaseException | None = None  # raised by end_offsets while set
    # What happened, for the assertions.
    getmany_calls: list[tuple[TopicPartition, ...]] = field(default_factory=list)
    seeks: list[tuple[TopicPartition, int | str]] = field(default_factory=list)
    commits: list[dict[TopicPartition, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for tp in self.assigned:
            self.positions.setdefault(tp, self.group_offsets.get(tp, 0))

    # -- setting it up --

    def write(self, tp: TopicPartition, count: int) -> None:
        """Append ``count`` good records to ``tp``'s log (and assign ``tp``)."""
        log = self.logs.setdefault(tp, [])
        for _ in range(count):
            log.append(FakeRecord(tp.topic, tp.partition, len(log), value=b"v%d" % len(log)))
        if tp not in self.assigned:
            self.assign_more(tp)

    def poison(self, tp: TopicPartition, offset: int, error: Exception) -> None:
        """aiokafka cannot decode ``tp`` at ``offset``: fetching there raises ``error``."""
        self.logs[tp][offset] = error

    def assign_more(self, *partitions: TopicPartition) -> None:
        for tp in partitions:
            self.assigned.add(tp)
            self.positions[tp] = self.group_offsets.get(tp, 0)

    def rebalance(self, assigned: Iterable[TopicPartition]) -> None:
        """A new generation: positions start from the group's offsets, nothing paused."""
        self.assigned = set(assigned)
        self.paused_tps = set()
        self.positions = {tp: self.group_offsets.get(tp, 0) for tp in self.assigned}

    # -- what aiokafka's consumer has --

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def paused(self) -> set[TopicPartition]:
        return set(self.paused_tps)

    def pause(self, *partitions: TopicPartition) -> None:
        self.paused_tps.update(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self.paused_tps.difference_update(partitions)

    def _check(self, tp: TopicPartition) -> None:
        if tp not in self.assigned:
            raise IllegalStateError(f"{tp} is not assigned")

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._check(tp)
        self.seeks.append((tp, offset))
        self.positions[tp] = offset

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        for tp in partitions:
            self._check(tp)
            self.seeks.append((tp, "beginning"))
            self.positions[tp] = 0

    async def committed(self, tp: TopicPartition) -> int | None:
        offset = self.group_offsets.get(tp)  # read before the hook: the answer was on its way
        if self.on_committed is not None:
            await _run(self.on_committed())
        return offset

    async def position(self, tp: TopicPartition) -> int:
        self._check(tp)
        return self.positions[tp]

    async def end_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        if self.end_offsets_error is not None:
            raise self.end_offsets_error
        return {tp: len(self.logs.get(tp, [])) for tp in partitions}

    async def beginning_offsets(
        self, partitions: Iterable[TopicPartition]
    ) -> dict[TopicPartition, int]:
        return dict.fromkeys(partitions, 0)

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))
        outcome = self.commit_script.pop(0) if self.commit_script else None
        if outcome == HANG:
            await asyncio.Event().wait()
        if isinstance(outcome, BaseException):
            raise outcome
        self.group_offsets.update(offsets)

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[FakeRecord]]:
        self.getmany_calls.append(partitions)
        if self.on_getmany is not None:
            await _run(self.on_getmany(partitions))
        if self.getmany_errors:
            raise self.getmany_errors.pop(0)
        fetchable = self.assigned - self.paused_tps
        wanted = sorted(fetchable & set(partitions) if partitions else fetchable)
        drained: dict[TopicPartition, list[FakeRecord]] = {}
        left = max_records
        for tp in wanted:
            if left is not None and left <= 0:
                break
            log, position = self.logs.get(tp, []), self.positions[tp]
            head = log[position] if position < len(log) else None
            if isinstance(head, Exception):
                raise head  # what was drained from the other partitions is lost; they moved on
            got: list[FakeRecord] = []
            while position < len(log) and (left is None or len(got) < left):
                entry = log[position]
                if isinstance(entry, Exception):
                    break  # the next call raises here
                got.append(entry)
                position += 1
            self.positions[tp] = position
            if got:
                drained[tp] = got
                left = None if left is None else left - len(got)
        if not drained and timeout_ms:
            await asyncio.sleep(timeout_ms / 1000)
        return drained


async def _run(result: Awaitable[None] | None) -> None:
    if result is not None:
        await result


# -- the salvager ---------------------------------------------------------------------------


@dataclass(slots=True)
class FakeSalvager:
    """``salvage`` answers from ``script`` in turn (the last entry repeats).

    An entry is a ``Salvage``, an exception to raise, or a callable run first (to
    stage a rebalance in the middle of a salvage) that returns one of those.
    """

    script: list[Salvage | BaseException | Callable[[], Salvage]]
    calls: list[tuple[TopicPartition, int]] = field(default_factory=list)

    async def salvage(self, tp: TopicPartition, offset: int, cause: BaseException) -> Salvage:
        self.calls.append((tp, offset))
        entry = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(entry, BaseException):
            raise entry
        if callable(entry):
            return entry()
        return entry
