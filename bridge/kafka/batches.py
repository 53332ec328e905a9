"""A tolerant reader of Kafka record batches (message format v2), for salvage.

aiokafka refuses a whole batch when one part of it is off: a header key that is
not UTF-8, a CRC mismatch, a compression codec it does not know. It raises, and
the partition never moves past that offset. The bridge then fetches the raw bytes
at the failing offset and reads them here instead: this reader never raises, keeps
header keys as bytes, reads whatever records it can, and says in ``problem`` what
is wrong, so the caller can dead-letter or skip the batch and move on.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from aiokafka.codec import gzip_decode, lz4_decode, snappy_decode, zstd_decode
from aiokafka.record.util import calc_crc32c


@dataclass(frozen=True, slots=True)
class RawRecord:
    offset: int
    timestamp: int  # ms; for LOG_APPEND_TIME batches the batch's max_timestamp
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[bytes, bytes | None], ...]  # keys as raw bytes: they may not be UTF-8


@dataclass(frozen=True, slots=True)
class ReadBatch:
    base_offset: int
    last_offset: int  # base_offset + last_offset_delta
    records: tuple[RawRecord, ...]  # what could be read (may be empty)
    problem: str | None  # None = fine; else a short sentence saying why it is not
    crc_ok: bool
    is_control: bool
    is_transactional: bool
    producer_id: int


# baseOffset, batchLength, partitionLeaderEpoch, magic, crc, attributes, lastOffsetDelta,
# baseTimestamp, maxTimestamp, producerId, producerEpoch, baseSequence, recordCount
_V2_HEADER = struct.Struct(">qiibIhiqqqhii")
_LOG_OVERHEAD = 12  # baseOffset and batchLength: the only fields every format shares
_MAGIC_AT = 16
_CRC_FROM = 21  # the v2 CRC covers attributes .. end; the leader epoch is left out
# Smallest sane batchLength per magic: one v0/v1 message without key and value, or an
# empty v2 batch. An unknown magic must at least cover its own magic byte.
_MIN_LENGTH = {0: 14, 1: 22, 2: _V2_HEADER.size - _LOG_OVERHEAD}
_MIN_LENGTH_UNKNOWN = _MAGIC_AT + 1 - _LOG_OVERHEAD

_CODECS: dict[int, tuple[str, Callable[[bytes], bytes]]] = {
    1: ("gzip", gzip_decode),
    2: ("snappy", snappy_decode),  # raw snappy and the xerial framing Java producers write
    3: ("lz4", lz4_decode),  # the LZ4 frame format (KIP-57)
    4: ("zstd", zstd_decode),
}


class _Malformed(Exception):
    """A record that cannot be read; the message says why."""


def read_batches(data: bytes | bytearray | memoryview) -> Iterator[ReadBatch]:
    """Every batch in a fetch response's record set, in order. Never raises.

    A trailing incomplete batch (the broker cuts the response at its byte limit)
    yields nothing. Reading stops where the next batch's length cannot be trusted.
    """
    # One flat copy: a caller's memoryview may be multi-dimensional or of another format.
    buf = memoryview(bytes(data))
    pos = 0
    while len(buf) - pos > _MAGIC_AT:
        base_offset, length = struct.unpack_from(">qi", buf, pos)
        magic = struct.unpack_from(">b", buf, pos + _MAGIC_AT)[0]
        end = pos + _LOG_OVERHEAD + length
        if length < _MIN_LENGTH.get(magic, _MIN_LENGTH_UNKNOWN):
            # Without a length there is no next batch; report this one if its offsets
            # can still be read, then stop.
            if magic != 2:
                yield _unsupported(base_offset, magic, f"has an invalid length {length}")
            elif len(buf) - pos >= 27:
                delta = struct.unpack_from(">i", buf, pos + 23)[0]
                yield _bad(base_offset, base_offset + delta, f"invalid batch length {length}")
            return
        if end > len(buf):
            return
        batch = buf[pos:end]
        pos = end
        if magic != 2:
            # v0/v1 CRC is plain CRC-32 from the magic byte on.
            stored = struct.unpack_from(">I", batch, _MAGIC_AT - 4)[0]
            crc_ok = magic in (0, 1) and zlib.crc32(batch[_MAGIC_AT:]) == stored
            yield _unsupported(base_offset, magic, "is not supported", crc_ok)
            continue
        try:
            read = _read_v2(batch)
        except Exception as err:  # noqa: BLE001
            # Last guard: _read_v2 checks every bound it relies on, so this is a bug here,
            # not in the data; it must still not stall the partition. The length was sane,
            # so the following batches can still be read.
            delta = struct.unpack_from(">i", batch, 23)[0]
            read = _bad(base_offset, base_offset + delta, f"unreadable batch: {err!r}")
        yield read


def _unsupported(offset: int, magic: int, why: str, crc_ok: bool = False) -> ReadBatch:
    # v0/v1 entries carry one offset, the last one of a compressed wrapper: the offset
    # to skip past. For an unknown magic it is the best guess there is.
    return _bad(offset, offset, f"message format v{magic} {why}", crc_ok)


def _bad(base: int, last: int, problem: str, crc_ok: bool = False) -> ReadBatch:
    return ReadBatch(base, last, (), problem, crc_ok, False, False, -1)


def _read_v2(batch: memoryview) -> ReadBatch:
    (base_offset, _, _, _, stored_crc, attributes, last_delta, base_ts, max_ts, producer_id, _, _,
     count) = _V2_HEADER.unpack_from(batch)  # fmt: skip
    computed = calc_crc32c(bytes(batch[_CRC_FROM:]))
    problems = []
    if computed != stored_crc:
        problems.append(f"CRC mismatch (stored {stored_crc:#010x}, computed {computed:#010x})")
    codec = attributes & 0x07
    body = batch[_V2_HEADER.size :]
    payload: memoryview | None = body
    if codec in _CODECS:
        name, decode = _CODECS[codec]
        try:
            payload = memoryview(decode(body.tobytes()))
        except Exception as err:  # noqa: BLE001
            # The codec libraries raise an open set of types (cramjam's, zlib's, OSError,
            # EOFError, struct.error, ...); each means the same thing: no records.
            problems.append(f"cannot decompress ({name}): {err}")
            payload = None
    elif codec != 0:
        problems.append(f"unknown compression codec {codec}")
        payload = None
    records: list[RawRecord] = []
    if payload is not None:
        timestamp = max_ts if attributes & 0x08 else None  # LOG_APPEND_TIME: one for all
        try:
            _read_records(_Cursor(payload), count, base_offset, base_ts, timestamp, records)
        except _Malformed as err:
            problems.append(str(err))
    return ReadBatch(
        base_offset=base_offset,
        last_offset=base_offset + last_delta,
        records=tuple(records),
        problem="; ".join(problems) or None,
        crc_ok=computed == stored_crc,
        is_control=bool(attributes & 0x20),
        is_transactional=bool(attributes & 0x10),
        producer_id=producer_id,
    )


def _read_records(
    cursor: _Cursor,
    count: int,
    base_offset: int,
    base_ts: int,
    timestamp: int | None,
    out: list[RawRecord],
) -> None:
    """Append the records to ``out`` until the first that cannot be read."""
    if count < 0:
        raise _Malformed(f"negative record count {count}")
    for index in range(count):
        cursor.start(f"record {index + 1} of {count}")
        out.append(cursor.record(base_offset, base_ts, timestamp))
    if cursor.at != len(cursor.buf):
        raise _Malformed(f"{len(cursor.buf) - cursor.at} byte(s) left after the last record")


class _Cursor:
    """Reads records one after another, each strictly inside its own length."""

    __slots__ = ("at", "buf", "end", "overrun", "where")

    def __init__(self, buf: memoryview) -> None:
        self.buf = buf
        self.at = 0
        self.end = len(buf)
        self.where = self.overrun = ""

    def start(self, where: str) -> None:
        self.where, self.end, self.overrun = where, len(self.buf), f"truncated {where}"

    def record(self, base_offset: int, base_ts: int, timestamp: int | None) -> RawRecord:
        length = self.varint()
        if length < 0:
            raise _Malformed(f"{self.where} has a negative length {length}")
        if self.at + length > len(self.buf):
            raise _Malformed(self.overrun)
        # Running past the record's own length is a length mismatch, not a licence to
        # read the next record's bytes.
        self.end = self.at + length
        self.overrun = f"{self.where} runs past its length {length}"
        self.at += 1  # attributes: int8, unused (aiokafka reads a varint; Kafka a byte)
        ts_delta = self.varint(10)
        offset_delta = self.varint()
        key = self.blob("key")
        value = self.blob("value")
        header_count = self.varint()
        if header_count < 0:
            raise _Malformed(f"{self.where} has a negative header count {header_count}")
        headers = []
        for _ in range(header_count):
            h_key = self.blob("header key")
            if h_key is None:
                raise _Malformed(f"{self.where} has a null header key")
            headers.append((h_key, self.blob("header value")))
        if self.at != self.end:
            raise _Malformed(f"{self.where} has {self.end - self.at} byte(s) after its headers")
        when = base_ts + ts_delta if timestamp is None else timestamp
        return RawRecord(base_offset + offset_delta, when, key, value, tuple(headers))

    def blob(self, what: str) -> bytes | None:
        size = self.varint()
        if size == -1:
            return None
        if size < 0:
            raise _Malformed(f"{self.where} has a negative {what} length {size}")
        if self.at + size > self.end:
            raise _Malformed(self.overrun)
        self.at += size
        return bytes(self.buf[self.at - size : self.at])

    def varint(self, max_bytes: int = 5) -> int:
        """A zigzag varint (5 bytes at most) or varlong (10), as Kafka's ByteUtils reads."""
        raw = shift = 0
        for i in range(self.at, min(self.end, self.at + max_bytes)):
            byte = self.buf[i]
            raw |= (byte & 0x7F) << shift
            if not byte & 0x80:
                self.at = i + 1
                return (raw >> 1) ^ -(raw & 1)
            shift += 7
        if self.end - self.at >= max_bytes:
            raise _Malformed(f"{self.where} has a varint longer than {max_bytes} bytes")
        raise _Malformed(self.overrun)
