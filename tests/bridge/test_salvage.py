"""What the salvage path makes of raw bytes aiokafka refused: records, failures, a range."""

from __future__ import annotations

from aiokafka import TopicPartition

from bridge.errors import BadHeaderError, CorruptBatchError, UndecodableBatchError
from bridge.kafka.salvage import Aborted, read_salvage
from tools.harness.batches import build, fix_crc, flip_last_byte, with_header_key, with_payload

TP = TopicPartition("payments", 2)
GOOD = [(b"k0", b'{"a": 0}', [("trace", b"t0")]), (b"k1", b'{"a": 1}', [])]


def test_good_batches_come_back_as_records_to_handle() -> None:
    data = build(GOOD, base_offset=10) + build(GOOD, base_offset=12)
    salvage = read_salvage(TP, 10, bytes(data), "UnicodeDecodeError: ...")
    assert [(r.offset, r.key, r.value, r.problem) for r in salvage.records] == [
        (10, b"k0", b'{"a": 0}', None),
        (11, b"k1", b'{"a": 1}', None),
        (12, b"k0", b'{"a": 0}', None),
        (13, b"k1", b'{"a": 1}', None),
    ]
    assert salvage.records[0].headers == [("trace", b"t0")]
    assert salvage.resume_at == 14
    assert salvage.broken_batches == 0


def test_records_before_the_position_are_skipped() -> None:
    salvage = read_salvage(TP, 11, bytes(build(GOOD, base_offset=10)), "x")
    assert [r.offset for r in salvage.records] == [11]


def test_a_header_key_that_is_not_utf8_fails_that_record_and_stops_there() -> None:
    entries = [GOOD[0], (b"k1", b'{"a": 1}', [("XX", b"v")]), GOOD[1]]
    bad = with_header_key(build(entries, base_offset=5), b"XX", b"\xff\xfe")
    after = build(GOOD, base_offset=8)
    salvage = read_salvage(TP, 5, bytes(bad + after), "UnicodeDecodeError: ...")
    assert [r.offset for r in salvage.records] == [5, 6, 7]  # not the batch after it
    assert salvage.records[0].problem is None and salvage.records[2].problem is None
    problem = salvage.records[1].problem
    assert isinstance(problem, BadHeaderError)
    assert "header 0" in problem.message and "\\xff\\xfe" in problem.message
    assert salvage.records[1].headers == [("\\xff\\xfe", b"v")]  # written back escaped
    assert salvage.records[1].value == b'{"a": 1}'
    assert salvage.resume_at == 8
    assert salvage.broken_batches == 1


def test_a_crc_mismatch_fails_each_record_it_holds() -> None:
    damaged = build(GOOD, base_offset=5)
    at = damaged.index(b'"a": 1')
    damaged[at : at + 6] = b'"a": 9'  # the CRC no longer matches; the structure still reads
    data = build(GOOD, base_offset=3) + damaged
    salvage = read_salvage(TP, 3, bytes(data), "CorruptRecordException: Invalid CRC")
    assert [(r.offset, type(r.problem).__name__) for r in salvage.records] == [
        (3, "NoneType"),
        (4, "NoneType"),
        (5, "CorruptBatchError"),
        (6, "CorruptBatchError"),
    ]
    problem = salvage.records[2].problem
    assert isinstance(problem, CorruptBatchError)
    assert "batch 5-6 of payments[2]: CRC mismatch" in problem.message
    assert salvage.records[3].value == b'{"a": 9}'  # as read, for whoever looks at it
    assert salvage.resume_at == 7


def test_a_batch_that_breaks_off_fails_what_was_read_and_the_rest_as_a_range() -> None:
    data = flip_last_byte(build(GOOD, base_offset=5))  # the last record no longer parses
    salvage = read_salvage(TP, 5, bytes(data), "CorruptRecordException: Invalid CRC")
    assert [(r.offset, r.last_offset, type(r.problem).__name__) for r in salvage.records] == [
        (5, 5, "CorruptBatchError"),
        (6, 6, "UndecodableBatchError"),
    ]
    assert salvage.resume_at == 7


def test_a_batch_nothing_can_be_read_from_is_one_range() -> None:
    unknown_codec = with_payload(build(GOOD, base_offset=20), b"\x00" * 16, codec=5)
    salvage = read_salvage(TP, 20, bytes(unknown_codec), "UnsupportedCodecError: codec 5")
    (only,) = salvage.records
    assert (only.offset, only.last_offset, only.key, only.value) == (20, 21, None, None)
    assert isinstance(only.problem, UndecodableBatchError)
    assert "offsets 20-21 of payments[2] cannot be read" in only.problem.message
    assert "unknown compression codec 5" in only.problem.message
    assert "UnsupportedCodecError" in only.problem.message
    assert salvage.resume_at == 22


def test_nothing_at_the_offset_moves_nothing() -> None:
    salvage = read_salvage(TP, 50, b"", "x")
    assert salvage.records == [] and salvage.resume_at == 50


def _control(base_offset: int, producer_id: int) -> bytearray:
    entry = (b"\x00\x00\x00\x00", b"\x00\x00\x00\x00\x00\x00", [])
    marker = build([entry], base_offset=base_offset, transactional=True, producer_id=producer_id)
    marker[22] |= 0x20  # the control flag (the marker's contents are not read)
    return fix_crc(marker)


def test_under_read_committed_an_aborted_transactions_records_are_skipped() -> None:
    # Producer 7 aborts offsets 0-1 (marker at 2); producer 8 commits 3-4 (marker at 5);
    # producer 7 then writes 6-7 in a new transaction that commits (marker at 8).
    data = (
        build(GOOD, base_offset=0, transactional=True, producer_id=7)
        + _control(2, 7)
        + build(GOOD, base_offset=3, transactional=True, producer_id=8)
        + _control(5, 8)
        + build(GOOD, base_offset=6, transactional=True, producer_id=7)
        + _control(8, 7)
    )
    committed = read_salvage(TP, 0, bytes(data), "x", [Aborted(7, 0)])
    assert [r.offset for r in committed.records] == [3, 4, 6, 7]
    assert committed.resume_at == 9
    uncommitted = read_salvage(TP, 0, bytes(data), "x")
    assert [r.offset for r in uncommitted.records] == [0, 1, 3, 4, 6, 7]
