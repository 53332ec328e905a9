"""Per-key ordering in the ledger: order per key, other keys overtaking, contiguous commits."""

from __future__ import annotations

import random
from dataclasses import dataclass

from bridge.pipeline.keyed import KeyedLedger
from bridge.pipeline.ledger import Slot, SlotState


@dataclass(frozen=True)
class Rec:
    key: bytes | None


Ledger = KeyedLedger[str, None]


def add(ledger: Ledger, offset: int, key: bytes | None) -> Slot[str, None]:
    return ledger.add(offset, Rec(key), None)


def finish(ledger: Ledger, slot: Slot[str, None], outcome: str = "x") -> None:
    """What ``Delivery.finish`` does for a keyed ledger."""
    slot.resolve(outcome)
    ledger.resolved(slot)


def offsets(slots: list[Slot[str, None]]) -> list[int]:
    return [slot.offset for slot in slots]


def test_other_keys_overtake_a_held_key_whose_own_order_holds() -> None:
    ledger = Ledger()
    a0, b1, a2, b3, c4 = (add(ledger, o, k) for o, k in enumerate([b"a", b"b", b"a", b"b", b"c"]))
    finish(ledger, a2)  # a's second event is done before its first
    finish(ledger, b3)
    finish(ledger, c4)
    assert offsets(ledger.take_ready()) == [4]  # b3 waits for b1, a2 for a0; c4 goes
    finish(ledger, b1)
    assert offsets(ledger.take_ready()) == [1, 3]
    assert ledger.take_ready() == []
    finish(ledger, a0)
    assert offsets(ledger.take_ready()) == [0, 2]
    assert all(slot.state is SlotState.SENT for slot in (a0, b1, a2, b3, c4))


def test_commits_stay_contiguous_behind_a_held_key() -> None:
    ledger = Ledger()
    held = add(ledger, 10, b"slow")
    others = [add(ledger, offset, b"k%d" % offset) for offset in range(11, 15)]
    for slot in others:
        finish(ledger, slot)
    for slot in ledger.take_ready():
        ledger.ack(slot)
    assert ledger.committable() is None  # 11..14 written, but 10 is not: nothing to commit
    assert len(ledger) == 5  # the written ones stay counted until the commit passes them
    assert ledger.oldest_offset() == 10
    finish(ledger, held)
    (sent,) = ledger.take_ready()
    ledger.ack(sent)
    assert ledger.committable() == 15
    assert len(ledger) == 0


def test_acks_out_of_order_advance_the_commit_only_over_the_acked_head() -> None:
    ledger = Ledger()
    slots = [add(ledger, offset, b"k%d" % (offset % 2)) for offset in range(4)]
    for slot in slots:
        finish(ledger, slot)
    assert offsets(ledger.take_ready()) == [0, 1, 2, 3]
    ledger.ack(slots[2])
    ledger.ack(slots[1])
    assert ledger.committable() is None
    ledger.ack(slots[0])
    assert ledger.committable() == 3
    ledger.ack(slots[3])
    assert ledger.committable() == 4


def test_keyless_events_are_each_their_own_key() -> None:
    ledger = Ledger()
    first, second = add(ledger, 0, None), add(ledger, 1, None)
    finish(ledger, second)
    assert ledger.take_ready() == [second]  # no order among null keys: nothing waits
    finish(ledger, first)
    assert ledger.take_ready() == [first]


def test_a_key_pending_again_after_its_chain_emptied_starts_a_new_chain() -> None:
    ledger = Ledger()
    first = add(ledger, 0, b"a")
    finish(ledger, first)
    assert ledger.take_ready() == [first]
    second, third = add(ledger, 1, b"a"), add(ledger, 2, b"a")
    finish(ledger, third)
    assert ledger.take_ready() == []  # third is behind second, though first left
    finish(ledger, second)
    assert ledger.take_ready() == [second, third]


def test_a_slot_of_a_handed_back_ledger_is_not_taken_by_the_new_one() -> None:
    old, new = Ledger(), Ledger()
    stale = add(old, 5, b"a")
    add(new, 5, b"a")  # the next owner of the partition replays offset 5
    stale.resolve("late")
    new.resolved(stale)  # a worker finishing after the hand-back
    assert new.take_ready() == []
    keyless = add(old, 6, None)
    keyless.resolve("late")
    new.resolved(keyless)
    assert new.take_ready() == []


def test_any_finishing_order_keeps_every_key_in_order_and_sends_each_slot_once() -> None:
    rng = random.Random(12)
    for _ in range(50):
        ledger = Ledger()
        keys = [rng.choice([b"a", b"b", b"c", None]) for _ in range(40)]
        slots = [add(ledger, offset, key) for offset, key in enumerate(keys)]
        sent: list[Slot[str, None]] = []
        for slot in rng.sample(slots, len(slots)):
            finish(ledger, slot)
            taken = ledger.take_ready()
            sent += taken
            for done in taken:
                if rng.random() < 0.7:
                    ledger.ack(done)
        assert sorted(offsets(sent)) == list(range(40))
        for key in (b"a", b"b", b"c"):
            mine = [slot.offset for slot in sent if keys[slot.offset] == key]
            assert mine == sorted(mine)
        for slot in sent:
            if slot.state is SlotState.SENT:
                ledger.ack(slot)
        assert ledger.committable() == 40
        assert len(ledger) == 0
        assert not (ledger._first or ledger._last or ledger._later or ledger._ready)
