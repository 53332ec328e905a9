"""The salvage reader of record batches: agrees with aiokafka where aiokafka can read,
and reads on (or says why not) where aiokafka raises."""

from __future__ import annotations

import random
import struct
import zlib

import cramjam
import pytest
from aiokafka.errors import CorruptRecordException, UnsupportedCodecError
from aiokafka.record.legacy_records import LegacyRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.record.util import calc_crc32c, decode_varint

from bridge.kafka import batches
from bridge.kafka.batches import RawRecord, ReadBatch, read_batches
from tools.harness.batches import (
    CODEC_NAMES,
    HEADER,
    build,
    fix_crc,
    record,
    varint,
    with_payload,
)


def read(data: bytes | bytearray | memoryview) -> list[ReadBatch]:
    return list(read_batches(data))


def ours(data: bytes | bytearray) -> list[tuple[object, ...]]:
    return [
        (r.offset, r.timestamp, r.key, r.value, list(r.headers))
        for batch in read(data)
        for r in batch.records
    ]


def aiokafka_reads(data: bytes | bytearray) -> list[tuple[object, ...]]:
    records = MemoryRecords(bytes(data))
    out: list[tuple[object, ...]] = []
    while records.has_next():
        batch = records.next_batch()
        assert batch is not None
        for r in batch:
            headers = [(k.encode(), v) for k, v in r.headers]
            out.append((r.offset, r.timestamp, r.key, r.value, headers))
    return out


@pytest.mark.parametrize("codec", [0, 1, 2, 3, 4])
def test_reads_what_aiokafka_reads_for_every_codec(codec: int) -> None:
    data = build(codec=codec, base_offset=100)
    # aiokafka's builder falls back to no compression when it does not pay: make sure
    # this batch really is compressed with the codec under test.
    assert data[22] & 0x07 == codec
    [batch] = read(data)
    assert batch.problem is None
    assert batch.crc_ok
    assert (batch.base_offset, batch.last_offset) == (100, 102)
    assert ours(data) == aiokafka_reads(data)
    assert [r.offset for r in batch.records] == [100, 101, 102]


def test_null_and_empty_keys_values_and_header_values_stay_apart() -> None:
    [batch] = read(build())
    first, second, third = batch.records
    assert first == RawRecord(
        0, 1_700_000_000_000, b"key-0", b"value " * 20, ((b"trace", b"abc"), (b"n", None))
    )
    assert (second.key, second.headers) == (None, ())
    assert (third.key, third.value, third.headers) == (b"", None, ((b"k", b""),))
    assert second.timestamp == 1_700_000_000_007


def test_batches_in_a_row_continue_their_offsets() -> None:
    data = build(codec=0) + build(codec=1, base_offset=3) + build(codec=4, base_offset=6)
    got = read(data)
    assert [(b.base_offset, b.last_offset, b.problem) for b in got] == [
        (0, 2, None),
        (3, 5, None),
        (6, 8, None),
    ]
    assert [r[0] for r in ours(data)] == list(range(9))
    assert ours(data) == aiokafka_reads(data)


def test_log_append_time_gives_every_record_the_max_timestamp() -> None:
    data = build()
    data[22] |= 0x08
    fix_crc(data)
    (max_timestamp,) = struct.unpack_from(">q", data, 35)
    assert [r[1] for r in ours(data)] == [max_timestamp] * 3
    assert ours(data) == aiokafka_reads(data)


def test_transactional_and_control_flags_and_producer_id() -> None:
    data = build(transactional=True, producer_id=77)
    data[22] |= 0x20
    fix_crc(data)
    [batch] = read(data)
    aio = MemoryRecords(bytes(data)).next_batch()
    assert aio is not None
    assert batch.is_transactional and aio.is_transactional
    assert batch.is_control and aio.is_control_batch
    assert batch.producer_id == 77 == aio.producer_id
    assert (batch.problem, len(batch.records)) == (None, 3)
    [plain] = read(build())
    assert (plain.is_transactional, plain.is_control, plain.producer_id) == (False, False, -1)


def test_a_header_key_that_is_not_utf8_is_kept_as_bytes() -> None:
    data = build([(b"k", b"v", [("ab", b"x")])])
    at = data.index(b"ab")
    data[at : at + 2] = b"\xff\xfe"
    fix_crc(data)
    # The Cython reader lets the UnicodeDecodeError out; the pure-Python one wraps it.
    with pytest.raises((UnicodeDecodeError, CorruptRecordException)):
        aiokafka_reads(data)
    [batch] = read(data)
    assert batch.problem is None and batch.crc_ok
    assert batch.records[0].headers == ((b"\xff\xfe", b"x"),)


def test_a_flipped_byte_is_a_crc_mismatch_but_the_records_are_still_read() -> None:
    data = build()
    at = data.index(b"key-0")
    data[at] ^= 0x01
    (stored,) = struct.unpack_from(">I", data, 17)
    aio = MemoryRecords(bytes(data)).next_batch()
    assert aio is not None and not aio.validate_crc()  # the consumer raises on this
    [batch] = read(data)
    computed = calc_crc32c(bytes(data[21:]))
    assert not batch.crc_ok
    assert batch.problem == f"CRC mismatch (stored {stored:#010x}, computed {computed:#010x})"
    assert [r.key for r in batch.records] == [b"jey-0", None, b""]


@pytest.mark.parametrize("codec", [5, 6, 7])
def test_an_unknown_codec_is_a_problem_with_no_records(codec: int) -> None:
    data = build(base_offset=9)
    data[22] = (data[22] & ~0x07) | codec
    fix_crc(data)
    with pytest.raises(UnsupportedCodecError):
        aiokafka_reads(data)
    [batch] = read(data)
    assert batch.problem == f"unknown compression codec {codec}"
    assert (batch.records, batch.crc_ok, batch.base_offset, batch.last_offset) == ((), True, 9, 11)


@pytest.mark.parametrize("codec", [1, 2, 3, 4])
def test_garbage_in_a_compressed_payload_cannot_be_decompressed(codec: int) -> None:
    data = build(codec=codec)
    garbage = bytes(random.Random(codec).randrange(256) for _ in range(len(data) - HEADER))
    data = with_payload(data, garbage)
    [batch] = read(data)
    assert batch.problem is not None
    assert batch.problem.startswith(f"cannot decompress ({CODEC_NAMES[codec]}): ")
    assert (batch.records, batch.crc_ok) == ((), True)


def test_snappy_both_framings_and_lz4_frames_are_read() -> None:
    plain = build()
    records = bytes(plain[HEADER:])
    xerial = build(codec=2)
    assert xerial[HEADER : HEADER + 8] == b"\x82SNAPPY\x00"  # what Java producers write
    raw_snappy = with_payload(plain, bytes(cramjam.snappy.compress_raw(records)), codec=2)
    lz4_frame = with_payload(plain, bytes(cramjam.lz4.compress(records)), codec=3)
    for data in (xerial, raw_snappy, lz4_frame):
        [batch] = read(data)
        assert batch.problem is None
        assert ours(data) == ours(plain) == aiokafka_reads(data)


def test_a_trailing_partial_batch_yields_nothing_and_spares_the_ones_before() -> None:
    first, second = build(), build(codec=1, base_offset=3)
    whole = read(first)
    for cut in range(len(second)):
        assert read(first + second[:cut]) == whole, cut


def test_a_batch_whose_records_are_cut_keeps_the_records_before_the_cut() -> None:
    data = build([(b"k", b"v" * 30, []) for _ in range(4)])
    record_size = (len(data) - HEADER) // 4
    data = with_payload(data, bytes(data[HEADER : HEADER + 2 * record_size + 5]))
    [batch] = read(data)
    assert batch.problem == "truncated record 3 of 4"
    assert [r.offset for r in batch.records] == [0, 1]
    assert batch.last_offset == 3


def test_more_records_counted_than_present_or_fewer() -> None:
    data = build()
    [short] = read(with_payload(data, bytes(data[HEADER:]), count=4))
    assert short.problem == "truncated record 4 of 4"
    assert len(short.records) == 3
    [long] = read(with_payload(data, bytes(data[HEADER:]) + b"\x00\x00", count=3))
    assert long.problem == "2 byte(s) left after the last record"
    assert len(long.records) == 3
    [negative] = read(with_payload(data, bytes(data[HEADER:]), count=-1))
    assert (negative.problem, negative.records) == ("negative record count -1", ())


# attributes, timestampDelta, offsetDelta as single bytes (varints 0 and 1)
ATTRS_TS_OFF = b"\x00\x00\x00"
GOOD = record(ATTRS_TS_OFF, varint(1), b"k", varint(1), b"v", varint(0))


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        (record(ATTRS_TS_OFF, varint(-2)), "record 2 of 2 has a negative key length -2"),
        (
            record(ATTRS_TS_OFF, varint(-1), varint(-3)),
            "record 2 of 2 has a negative value length -3",
        ),
        (
            record(ATTRS_TS_OFF, varint(-1), varint(-1), varint(-1)),
            "record 2 of 2 has a negative header count -1",
        ),
        (
            record(ATTRS_TS_OFF, varint(-1), varint(-1), varint(1), varint(-1), varint(-1)),
            "record 2 of 2 has a null header key",
        ),
        (
            record(ATTRS_TS_OFF, varint(-1), varint(-1), varint(1), varint(-5)),
            "record 2 of 2 has a negative header key length -5",
        ),
        (
            record(ATTRS_TS_OFF, varint(4), b"k"),  # the key runs past the record
            "record 2 of 2 runs past its length 5",
        ),
        (
            record(ATTRS_TS_OFF, varint(-1), varint(-1), varint(0), b"\x00"),
            "record 2 of 2 has 1 byte(s) after its headers",
        ),
        (
            record(b"\x00", b"\xff" * 11, b"\x00"),  # a timestamp delta over 10 bytes
            "record 2 of 2 has a varint longer than 10 bytes",
        ),
        (
            record(ATTRS_TS_OFF, b"\xff\xff\xff\xff\xff\x01"),
            "record 2 of 2 has a varint longer than 5 bytes",
        ),
        (varint(-4) + b"\x00" * 10, "record 2 of 2 has a negative length -4"),
        (b"\x80", "truncated record 2 of 2"),  # the length varint itself is cut
        (varint(50) + b"\x00" * 10, "truncated record 2 of 2"),
    ],
)
def test_a_malformed_record_is_named_and_the_ones_before_it_kept(bad: bytes, problem: str) -> None:
    data = with_payload(build(), GOOD + bad, count=2)
    [batch] = read(data)
    assert batch.problem == problem
    assert batch.crc_ok
    assert batch.records == (RawRecord(0, 1_700_000_000_000, b"k", b"v", ()),)


def test_crc_and_record_problems_are_both_told() -> None:
    data = with_payload(build(), GOOD + b"\x80", count=2)
    data[HEADER + 5] ^= 0xFF  # GOOD's key
    [batch] = read(data)
    assert batch.problem is not None
    assert batch.problem.startswith("CRC mismatch (stored ")
    assert batch.problem.endswith("; truncated record 2 of 2")
    assert len(batch.records) == 1


def test_message_format_v1_is_reported_with_its_offset_and_skipped() -> None:
    builder = LegacyRecordBatchBuilder(magic=1, compression_type=1, batch_size=1 << 20)
    for i in range(3):
        builder.append(i, timestamp=5, key=b"k", value=b"v" * 50)
    wrapper = builder.build()
    # The broker gives a compressed v1 wrapper the offset of its last inner message.
    struct.pack_into(">q", wrapper, 0, 42)
    data = wrapper + build(base_offset=43)
    v1, v2 = read(data)
    assert v1 == ReadBatch(42, 42, (), "message format v1 is not supported", True, False, False, -1)
    assert (v2.base_offset, v2.problem, len(v2.records)) == (43, None, 3)
    # An unknown magic has no known CRC, however well the v0/v1 one happens to fit.
    wrapper[16] = 3
    struct.pack_into(">I", wrapper, 12, zlib.crc32(wrapper[16:]))
    assert read(wrapper)[0].crc_ok is False


@pytest.mark.parametrize("magic", [0, 1, 3, -1])
def test_a_v2_batch_with_another_magic_byte_is_reported_and_skipped(magic: int) -> None:
    data = build(base_offset=5) + build(base_offset=8)
    data[16] = magic & 0xFF
    first, second = read(data)
    assert first.problem == f"message format v{magic} is not supported"
    assert (first.base_offset, first.last_offset, first.records, first.crc_ok) == (5, 5, (), False)
    assert (second.base_offset, second.problem) == (8, None)


@pytest.mark.parametrize("length", [-1, 0, 48, -(1 << 31)])
def test_an_absurd_batch_length_ends_reading_after_saying_its_offsets(length: int) -> None:
    data = build() + build(base_offset=3) + build(base_offset=6)
    second = len(build())
    struct.pack_into(">i", data, second + 8, length)
    got = read(data)
    assert [(b.base_offset, b.last_offset) for b in got] == [(0, 2), (3, 5)]
    assert got[1].problem == f"invalid batch length {length}"
    assert got[1].records == ()
    # Too few bytes left to read the last offset delta: nothing to say, just stop.
    assert read(data[: second + 26]) == got[:1]


@pytest.mark.parametrize(("magic", "length"), [(0, 13), (1, 21), (1, -5), (9, 4)])
def test_an_absurd_length_of_another_format_ends_reading_after_its_offset(
    magic: int, length: int
) -> None:
    data = build(base_offset=7) + build(base_offset=10)
    struct.pack_into(">ib", data, 8, length, 0)
    data[16] = magic
    [batch] = read(data)
    assert (batch.base_offset, batch.last_offset, batch.records) == (7, 7, ())
    assert batch.problem == f"message format v{magic} has an invalid length {length}"


def test_any_bytes_like_input_reads_the_same() -> None:
    first = build(codec=3)
    data = first + build(base_offset=3)
    expected = read(bytes(data))
    assert read(data) == expected
    assert read(memoryview(data)) == expected
    assert read(memoryview(b"xx" + data)[2:]) == expected
    assert read(memoryview(bytes(data)).cast("B", (len(data),))) == expected
    assert read(b"") == read(data[:16]) == read(first[:-1]) == []
    assert len(expected) == 2


def test_an_unexpected_error_becomes_a_problem_batch_and_reading_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(self: object, *args: object) -> RawRecord:
        raise RuntimeError("a bug")

    monkeypatch.setattr(batches._Cursor, "record", broken)
    got = read(build() + build(base_offset=3))
    assert [(b.base_offset, b.last_offset, b.records) for b in got] == [(0, 2, ()), (3, 5, ())]
    assert got[0].problem == "unreadable batch: RuntimeError('a bug')"


def test_a_record_attributes_byte_is_one_byte() -> None:
    # Kafka reads the record's attributes as an int8; aiokafka reads a varint, so a
    # byte with its top bit set shifts every field after it.
    data = with_payload(
        build(), record(b"\x80\x00\x00", varint(1), b"k", varint(1), b"v", varint(0)), count=1
    )
    [batch] = read(data)
    assert batch.problem is None
    assert batch.records == (RawRecord(0, 1_700_000_000_000, b"k", b"v", ()),)
    assert aiokafka_reads(data) != ours(data)
    assert misread_attributes(data)


def mutate(rng: random.Random, data: bytearray) -> bytearray:
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(5)
        at = rng.randrange(len(data)) if data else 0
        if kind == 0 and data:
            data[at] = rng.randrange(256)
        elif kind == 1:
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif kind == 2:
            del data[at : at + rng.randint(1, 8)]
        elif kind == 3:
            data = data[:at]
        elif len(data) > HEADER:
            # Aim at the header fields that steer the reader.
            field = rng.choice([8, 16, 21, 23, 57])
            data[field + rng.randrange(4)] = rng.randrange(256)
    return data


def test_random_mutations_never_raise_nor_reach_the_last_guard() -> None:
    rng = random.Random(20240611)
    seeds = [build(codec=c, base_offset=c * 3) for c in range(5)]
    seeds.append(seeds[0] + seeds[2] + seeds[4])
    seeds.append(with_payload(build(), GOOD * 3, count=3))
    compared = 0
    for case in range(4000):
        if case % 10 == 0:
            data = bytearray(rng.randbytes(rng.randrange(200)))
        else:
            data = mutate(rng, rng.choice(seeds))
        if case % 2:
            refit(data)
        got = read(data)
        for batch in got:
            assert isinstance(batch, ReadBatch)
            # The broad guard is for bugs: random bytes must be caught by the narrow checks.
            assert batch.problem is None or not batch.problem.startswith("unreadable"), batch
            assert batch.problem is not None or batch.crc_ok
        if got and all(b.problem is None for b in got) and aiokafka_agrees(data):
            compared += 1
    assert compared > 100  # the comparison above is not vacuous


def refit(data: bytearray) -> None:
    """Make the first batch's length and CRC fit again, so the mutation reaches the records."""
    if len(data) >= HEADER:
        struct.pack_into(">i", data, 8, len(data) - 12)
        fix_crc(data)


def aiokafka_agrees(data: bytearray) -> bool:
    """Where aiokafka reads the batches too, it reads the same records."""
    try:
        theirs = aiokafka_reads(data)
    except Exception:  # noqa: BLE001 - aiokafka's reasons to refuse are not under test
        return False
    if ours(data) != theirs:
        assert misread_attributes(data), (ours(data), theirs)
    return True


def misread_attributes(data: bytearray) -> bool:
    """Whether some record's attributes byte has its top bit set, which aiokafka
    misreads (see test_a_record_attributes_byte_is_one_byte)."""
    pos = 0
    while pos + HEADER <= len(data):
        (length,) = struct.unpack_from(">i", data, pos + 8)
        payload = bytearray(data[pos + HEADER : pos + 12 + length])
        codec = data[pos + 22] & 0x07
        if codec:
            payload = bytearray(batches._CODECS[codec][1](bytes(payload)))
        at = 0
        while at < len(payload):
            size, at = decode_varint(payload, at)
            if payload[at] & 0x80:
                return True
            at += size
        pos += 12 + length
    return False
