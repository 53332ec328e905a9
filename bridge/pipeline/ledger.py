"""Per-partition bookkeeping: output order and the offset that is safe to commit.

Every consumed record gets a ``Slot`` in its partition's ledger, in offset order.
A slot moves WAITING -> READY (its result or failure is known) -> SENT (handed to
the producer) -> ACKED (Kafka acknowledged the output record). Records are handed
to the producer strictly in offset order, so results keep input order within a
partition even when batches finish out of order; the committable offset is one
past the last slot of the unbroken ACKED run at the head, so nothing is ever
committed past unfinished work.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from bridge.domain import Outcome, Routed

T = TypeVar("T")  # what became of the record
C = TypeVar("C")  # what the pipeline carries with it from consume to produce


class SlotState(enum.IntEnum):
    WAITING = 0
    READY = 1
    SENT = 2
    ACKED = 3


@dataclass(slots=True, eq=False)
class Slot(Generic[T, C]):
    """One consumed record and what became of it."""

    offset: int
    record: Any
    context: C
    size: int = 0  # bytes of the input held while the slot is pending (key + value)
    outcome: T | None = None
    state: SlotState = SlotState.WAITING
    # Loop times the pipeline stamps as the record moves along (for timings).
    fetched: float = 0.0
    dispatched: float | None = None
    trace: Any = None  # the event's span while tracing is on (bridge.tracing), else None

    def resolve(self, outcome: T) -> None:
        if self.state is not SlotState.WAITING:
            raise RuntimeError(f"offset {self.offset} resolved twice")
        self.outcome = outcome
        self.state = SlotState.READY


class PartitionLedger(Generic[T, C]):
    """The slots of one partition, oldest first."""

    def __init__(self) -> None:
        self._slots: deque[Slot[T, C]] = deque()
        self._next_to_send = 0  # index into _slots of the first slot not yet SENT
        self._committable: int | None = None
        self.committed: int | None = None  # last offset the group accepted, kept by the committer
        self.bytes = 0  # sizes of the slots not yet acknowledged
        self.last_offset: int | None = None  # of the newest slot ever added

    def __len__(self) -> int:
        """Slots not yet acknowledged (pending work)."""
        return len(self._slots)

    def add(self, offset: int, record: Any, context: C, size: int = 0) -> Slot[T, C]:
        if self.last_offset is not None and offset <= self.last_offset:
            raise ValueError(f"offset {offset} is not after {self.last_offset}")
        slot: Slot[T, C] = Slot(offset, record, context, size)
        self._slots.append(slot)
        self.bytes += size
        self.last_offset = offset
        return slot

    def take_ready(self) -> list[Slot[T, C]]:
        """Slots whose outcome is known and whose predecessors were all sent, in order.

        The caller hands them to the producer in this order; they become SENT.
        """
        taken: list[Slot[T, C]] = []
        slots = self._slots
        while (
            self._next_to_send < len(slots) and slots[self._next_to_send].state is SlotState.READY
        ):
            slot = slots[self._next_to_send]
            slot.state = SlotState.SENT
            taken.append(slot)
            self._next_to_send += 1
        return taken

    def ack(self, slot: Slot[T, C]) -> None:
        """Kafka acknowledged the slot's output record."""
        self.ack_all((slot,))

    def ack_all(self, acked: Iterable[Slot[T, C]]) -> None:
        """Kafka acknowledged these slots' output records (a producer batch's)."""
        for slot in acked:
            if slot.state is not SlotState.SENT:
                raise RuntimeError(f"offset {slot.offset} acknowledged in state {slot.state.name}")
            slot.state = SlotState.ACKED
        slots = self._slots
        while slots and slots[0].state is SlotState.ACKED:
            done = slots.popleft()
            self._committable = done.offset + 1
            self.bytes -= done.size
            self._next_to_send -= 1

    def oldest_fetched(self) -> float | None:
        """When the oldest slot not yet acknowledged was fetched (loop time), or None."""
        return self._slots[0].fetched if self._slots else None

    def oldest_offset(self) -> int | None:
        """The offset of the oldest slot not yet acknowledged, or None."""
        return self._slots[0].offset if self._slots else None

    def committable(self) -> int | None:
        """The offset to commit (next to read), or None if nothing finished yet."""
        return self._committable


# The bridge's own: a slot holds an event's outcome and where the event was routed.
EventSlot = Slot[Outcome, Routed]
EventLedger = PartitionLedger[Outcome, Routed]
