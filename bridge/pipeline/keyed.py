"""Per-key ordering (``DELIVERY__ORDERING=key``): keys of one partition do not wait for each other.

``KeyedLedger`` keeps the partition ledger's slots and its committable offset (one
past the unbroken ACKED run at the head, so commits stay contiguous), but hands a
slot to the producer as soon as it is READY and every earlier slot *of the same
key* was sent, as Confluent's parallel-consumer does in key mode. A key whose
events are retried holds only itself; the others' outputs keep flowing, and the
commit waits at the held key's oldest event.

Each key is a chain: the oldest unsent slot of the key (``_first``), the newest
(``_last``) and a link from each slot to the next of its key (``_later``). A slot
that becomes READY while first of its chain is queued (``resolved``);
``take_ready`` walks each queued chain over its READY slots. Every slot is
linked, queued and walked once, so the cost is O(1) per slot, whatever the
number of keys or the length of the deque; the maps hold only pending slots, so
memory stays within BATCH__MAX_PENDING like the slots themselves.

A record without a key (null) is a chain of its own: Kafka's producers promise no
order for such records (the default partitioner spreads them), so none is kept,
and one retried keyless event holds up no other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bridge.domain import Outcome, Routed
from bridge.pipeline.ledger import C, PartitionLedger, Slot, SlotState, T


def record_key(record: Any) -> Any:
    """The Kafka key of a consumed record (aiokafka's and the salvaged ones alike)."""
    return record.key


class KeyedLedger(PartitionLedger[T, C]):
    """A partition's slots, sent in offset order per key (not per partition).

    Unlike the base ledger, the owner must call ``resolved`` after a slot got its
    outcome: that is how a READY slot is found without scanning the deque.
    """

    def __init__(self, key_of: Callable[[Any], Any] = record_key) -> None:
        super().__init__()  # the base's send cursor (_next_to_send) is not used here
        self._key_of = key_of
        self._first: dict[Any, Slot[T, C]] = {}  # chain -> its oldest slot not yet sent
        self._last: dict[Any, Slot[T, C]] = {}  # chain -> its newest slot
        self._later: dict[Slot[T, C], Slot[T, C]] = {}  # slot -> the next slot of its chain
        self._ready: list[Slot[T, C]] = []  # chains whose first slot became READY

    def _chain(self, slot: Slot[T, C]) -> Any:
        key = self._key_of(slot.record)
        return slot if key is None else key  # a keyless slot is a chain of its own

    def add(self, offset: int, record: Any, context: C, size: int = 0) -> Slot[T, C]:
        slot = super().add(offset, record, context, size)
        chain = self._chain(slot)
        last = self._last.get(chain)
        if last is None:
            self._first[chain] = slot
        else:
            self._later[last] = slot
        self._last[chain] = slot
        return slot

    def resolved(self, slot: Slot[T, C]) -> None:
        """``slot`` got its outcome; a slot of another ledger (handed back) is ignored."""
        if slot.state is SlotState.READY and self._first.get(self._chain(slot)) is slot:
            self._ready.append(slot)
        # Not first of its chain: the walk of its chain takes it once the earlier are sent.

    def take_ready(self) -> list[Slot[T, C]]:
        """READY slots whose earlier slots of the same key were all sent, in offset order.

        The caller hands them to the producer in this order; they become SENT.
        """
        heads = self._ready
        if not heads:
            return []
        self._ready = []
        taken: list[Slot[T, C]] = []
        later = self._later
        for head in heads:
            chain = self._chain(head)
            slot: Slot[T, C] | None = head
            while slot is not None and slot.state is SlotState.READY:
                slot.state = SlotState.SENT
                taken.append(slot)
                slot = later.pop(slot, None)
            if slot is None:  # the chain is all sent: the key has nothing pending
                del self._first[chain]
                del self._last[chain]
            else:
                self._first[chain] = slot  # WAITING: queued by ``resolved`` when it is READY
        if len(heads) > 1:
            # Across keys, oldest first: a round reads like partition order when nothing is
            # held, and resends (sorted by offset in delivery) keep every key's order.
            taken.sort(key=_offset)
        return taken


def _offset(slot: Slot[Any, Any]) -> int:
    return slot.offset


EventKeyedLedger = KeyedLedger[Outcome, Routed]
