"""Record batches in Kafka's wire format, built and broken on purpose for the tests.

aiokafka's own builder writes the well-formed ones; the helpers below then break
them the ways other producers, disks or bugs do (a header key that is not UTF-8,
a flipped byte, an unknown codec), fixing the CRC where the break must not show.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.util import calc_crc32c, encode_varint

HEADER = 61  # size of the v2 batch header, records start here
CODEC_NAMES = {1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}

Header = tuple[str, bytes | None]
Entry = tuple[bytes | None, bytes | None, list[Header]]
DEFAULT: list[Entry] = [
    (b"key-0", b"value " * 20, [("trace", b"abc"), ("n", None)]),
    (None, b"value " * 20, []),
    (b"", None, [("k", b"")]),
]


def build(
    entries: Sequence[Entry] = DEFAULT,
    codec: int = 0,
    base_offset: int = 0,
    transactional: bool = False,
    producer_id: int = -1,
) -> bytearray:
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=codec,
        is_transactional=int(transactional),
        producer_id=producer_id,
        producer_epoch=0 if producer_id >= 0 else -1,
        base_sequence=0 if producer_id >= 0 else -1,
        batch_size=1 << 20,
    )
    for delta, (key, value, headers) in enumerate(entries):
        builder.append(
            delta, timestamp=1_700_000_000_000 + 7 * delta, key=key, value=value, headers=headers
        )
    data: bytearray = builder.build()
    # The broker assigns the base offset; it is outside the CRC.
    struct.pack_into(">q", data, 0, base_offset)
    return data


def fix_crc(data: bytearray, at: int = 0) -> bytearray:
    """Recompute the CRC of the v2 batch starting at ``at`` (over attributes .. end)."""
    (length,) = struct.unpack_from(">i", data, at + 8)
    end = at + 12 + length
    struct.pack_into(">I", data, at + 17, calc_crc32c(bytes(data[at + 21 : end])))
    return data


def with_payload(
    data: bytearray, payload: bytes, count: int | None = None, codec: int | None = None
) -> bytearray:
    """The batch with its records section replaced; length, count and CRC made to fit."""
    out = bytearray(data[:HEADER]) + payload
    struct.pack_into(">i", out, 8, len(out) - 12)
    if count is not None:
        struct.pack_into(">i", out, 57, count)
    if codec is not None:
        (attributes,) = struct.unpack_from(">h", out, 21)
        struct.pack_into(">h", out, 21, (attributes & ~0x07) | codec)
    return fix_crc(out)


def varint(value: int) -> bytes:
    out = bytearray()
    encode_varint(value, out.append)
    return bytes(out)


def record(*fields: bytes) -> bytes:
    """A record from already encoded fields, with its length in front."""
    body = b"".join(fields)
    return varint(len(body)) + body


def with_header_key(data: bytearray, key: bytes, replacement: bytes) -> bytearray:
    """An uncompressed batch with a header key's bytes replaced (same length), CRC fixed."""
    if len(key) != len(replacement):
        raise ValueError("the replacement must keep the length")
    at = data.index(key, HEADER)
    data[at : at + len(key)] = replacement
    return fix_crc(data)


def flip_last_byte(data: bytearray) -> bytearray:
    """A byte changed after the CRC was computed: a CRC mismatch."""
    data[-1] ^= 0xFF
    return data
