"""Order of outputs and the committable offset, per partition."""

from __future__ import annotations

import pytest

from bridge.pipeline.ledger import PartitionLedger, SlotState


def test_outputs_leave_in_offset_order_even_when_finished_out_of_order() -> None:
    ledger: PartitionLedger[str, None] = PartitionLedger()
    slots = [ledger.add(offset, None, None) for offset in (10, 11, 12)]
    slots[2].resolve("c")
    slots[1].resolve("b")
    assert ledger.take_ready() == []  # 10 is not finished: nothing may overtake it
    slots[0].resolve("a")
    assert [s.outcome for s in ledger.take_ready()] == ["a", "b", "c"]
    assert ledger.take_ready() == []
    assert all(s.state is SlotState.SENT for s in slots)


def test_commit_never_passes_unacknowledged_work() -> None:
    ledger: PartitionLedger[str, None] = PartitionLedger()
    slots = [ledger.add(offset, None, None) for offset in range(5)]
    for slot in slots:
        slot.resolve("x")
    ledger.take_ready()
    assert ledger.committable() is None
    ledger.ack(slots[1])  # acks may arrive out of order (results vs failures topic)
    assert ledger.committable() is None
    ledger.ack(slots[0])
    assert ledger.committable() == 2
    ledger.ack(slots[3])
    assert ledger.committable() == 2
    assert len(ledger) == 3
    ledger.ack(slots[2])
    assert ledger.committable() == 4
    ledger.ack(slots[4])
    assert ledger.committable() == 5
    assert len(ledger) == 0


def test_sending_continues_after_acked_slots_leave() -> None:
    ledger: PartitionLedger[str, None] = PartitionLedger()
    first = ledger.add(0, None, None)
    first.resolve("a")
    (sent,) = ledger.take_ready()
    ledger.ack(sent)
    second = ledger.add(1, None, None)
    third = ledger.add(2, None, None)
    third.resolve("c")
    assert ledger.take_ready() == []
    second.resolve("b")
    assert ledger.take_ready() == [second, third]
    assert len(ledger) == 2  # second and third are sent, not yet acknowledged


def test_misuse_is_loud() -> None:
    ledger: PartitionLedger[str, None] = PartitionLedger()
    slot = ledger.add(5, None, None)
    with pytest.raises(ValueError, match="not after"):
        ledger.add(5, None, None)
    with pytest.raises(RuntimeError, match="acknowledged in state WAITING"):
        ledger.ack(slot)
    slot.resolve("a")
    with pytest.raises(RuntimeError, match="resolved twice"):
        slot.resolve("b")


def test_an_offset_already_taken_is_refused_even_after_its_slot_left() -> None:
    ledger: PartitionLedger[str, None] = PartitionLedger()
    slot = ledger.add(5, None, None, size=30)
    assert ledger.bytes == 30
    slot.resolve("done")
    (sent,) = ledger.take_ready()
    ledger.ack(sent)
    assert len(ledger) == 0 and ledger.bytes == 0
    assert ledger.last_offset == 5
    with pytest.raises(ValueError, match="offset 5 is not after 5"):
        ledger.add(5, None, None)


def test_the_oldest_fetch_time_is_the_head_slots_until_it_is_acknowledged() -> None:
    ledger: PartitionLedger[str, None] = PartitionLedger()
    assert ledger.oldest_fetched() is None
    first, second = ledger.add(0, None, None), ledger.add(1, None, None)
    first.fetched, second.fetched = 10.0, 12.0
    second.resolve("b")
    assert ledger.oldest_fetched() == 10.0  # a finished later slot does not make it younger
    first.resolve("a")
    for slot in ledger.take_ready():
        ledger.ack(slot)
        if slot is first:
            assert ledger.oldest_fetched() == 12.0
    assert ledger.oldest_fetched() is None
