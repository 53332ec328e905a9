"""A fuzz run: many kinds of malformed input mixed with valid events, one record each.

Seeded, so a failure replays. Each input is a valid payment or one of the bad
kinds below (bytes, JSON, nesting, sizes, keys, headers), written by aiokafka, by
librdkafka in lz4 batches, or byte for byte as broken batches (a header key that
is not UTF-8, a CRC that no longer matches). The bridge must end each one as
exactly one record: valid payments as results, the rest as failures with a reason
the README lists, never ``internal_error``, and it must not exit.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import orjson
import pytest

from tests.integration.kafka_io import (
    Item,
    Producer,
    Sent,
    drain_exactly_once,
    end_offsets,
    ended_as,
    make_topics,
    produce_raw_batch,
    produce_with_librdkafka,
)
from tests.integration.procs import Bridges, log_events, stopped_counts
from tests.kafka_batches import Entry, build, with_header_key
from tools.harness.payments import payment
from tools.harness.processes import ModelServer, bridge_env

pytestmark = pytest.mark.integration

SEED = 20261201
COUNT = 1500
MAX_EVENT_BYTES = 65_536
FAILURE = "failure"  # any failure reason will do (random bytes can be many things)
REASONS = {
    "not_json", "not_object", "oversize", "missing_input", "wrong_type", "wrong_shape",
    "too_deep", "bad_header", "corrupt_batch", "undecodable_batch",
}  # fmt: skip


def nested(depth: int, leaf: object) -> bytes:
    """JSON nested ``depth`` lists deep (orjson itself will not write over 254 levels)."""
    return b"[" * depth + orjson.dumps(leaf) + b"]" * depth


def valid(rng: random.Random, i: int) -> tuple[bytes | None, str]:
    return orjson.dumps(payment(rng, i)), "result"


def with_field(rng: random.Random, i: int, field: str, raw: bytes) -> bytes:
    """A payment whose ``field`` holds ``raw`` JSON, spliced in as text."""
    event = payment(rng, i)
    event[field] = "@@"
    return orjson.dumps(event).replace(b'"@@"', raw)


HUGE_VECTOR = b"[" + b"0.5," * 5000 + b"1]"
DEEP_DICT = b'{"a":' * 900 + b"1" + b"}" * 900
BIG_INT = b"123456789012345678901234567890"
Make = Callable[[random.Random, int], tuple[bytes | None, str]]


def field(name: str, raw: bytes, expected: str) -> Make:
    return lambda rng, i: (with_field(rng, i, name, raw), expected)


def fixed(value: bytes | None, expected: str) -> Make:
    return lambda rng, i: (value, expected)


KINDS: list[Make] = [
    valid,
    fixed(None, "not_json"),  # a tombstone
    fixed(b"", "not_json"),
    lambda rng, i: (rng.randbytes(rng.randint(1, 300)), FAILURE),
    fixed(b'{"id": "\xff\xfe"}', "not_json"),  # not UTF-8 inside a string
    fixed(b"[1, 2, 3]", "not_object"),
    fixed(b"12.5", "not_object"),
    fixed(b'{"x": "' + b"y" * MAX_EVENT_BYTES + b'"}', "oversize"),
    fixed(b'{"time": 1.0, "amount": 2.0}', "missing_input"),
    field("amount", b"null", "wrong_type"),
    field("amount", b'"12"', "wrong_type"),
    field("pca", b"[true]", "wrong_shape"),
    field("pca", HUGE_VECTOR, "wrong_shape"),
    field("pca", b"[[1, 2], [3]]", "wrong_shape"),
    field("pca", nested(1000, 1.0), "wrong_shape"),  # under orjson's 1,024 levels
    field("amount", DEEP_DICT, "wrong_type"),
    field("meta", nested(300, "x"), "too_deep"),  # a copied field JSON output cannot nest
    fixed(nested(2000, 1), "not_json"),
    field("amount", BIG_INT, "result"),  # read as a float
    field("id", b'"a", "id": "b"', "result"),  # a duplicate key: the last one wins
    field("amount", b"NaN", "not_json"),
]


def fuzz_items(rng: random.Random, count: int) -> list[Item]:
    items = []
    for i in range(count):
        make = KINDS[0] if rng.random() < 0.5 else rng.choice(KINDS[1:])
        value, expected = make(rng, i)
        key = rng.choice([None, b"", rng.randbytes(rng.randint(1, 40)), f"card-{i}".encode()])
        if key is None and value is None:
            key = b"tombstone"  # a producer needs one of the two
        headers = tuple(
            (rng.choice(["trace", "é", "x" * 200, ""]), rng.choice([rng.randbytes(8), b""]))
            for _ in range(rng.randint(0, 4))
        )
        items.append(Item(key, value, headers, expected))
    return items


async def test_a_fuzzed_mix_ends_as_one_record_each_and_never_stops_the_bridge(
    kafka_bootstrap: str, topic_prefix: str, model_server: ModelServer, bridges: Bridges
) -> None:
    rng = random.Random(SEED)
    topics = await make_topics(kafka_bootstrap, topic_prefix, inputs=3, results=2, failures=1)
    sent: list[Sent] = []
    items = fuzz_items(rng, COUNT)
    third = len(items) // 3
    async with Producer(kafka_bootstrap) as producer:
        sent += await producer.send_all(topics.input, items[:third])
        sent += await asyncio.to_thread(
            produce_with_librdkafka, kafka_bootstrap, topics.input, items[third : 2 * third], "lz4"
        )
        for n in range(10):  # broken batches between the others
            partition = n % topics.input_partitions
            batch_items = [
                Item(f"raw-{n}-{k}".encode(), valid(rng, k)[0], (), "result") for k in range(3)
            ]
            entries: list[Entry] = [(it.key, it.value, [("h", b"1")]) for it in batch_items]
            if n % 2 == 0:
                entries[1] = (entries[1][0], entries[1][1], [("XX", b"1")])
                raw = with_header_key(build(entries), b"XX", b"\xc3\x28")  # invalid UTF-8
                expected = ["result", "bad_header", "result"]
            else:
                raw = build(entries)
                at = raw.index(b'"amount"')
                raw[at + 1] ^= 0x20  # the CRC no longer matches
                expected = ["corrupt_batch"] * 3
            base = await produce_raw_batch(kafka_bootstrap, topics.input, partition, bytes(raw))
            sent += [
                Sent(partition, base + k, Item(it.key, it.value, (), expected[k]))
                for k, it in enumerate(batch_items)
            ]
        sent += await producer.send_all(topics.input, items[2 * third :])

    env = bridge_env(
        kafka_bootstrap,
        topics.names,
        model_server,
        group=topics.group,
        BRIDGE_BATCH__MAX_SIZE="16",
        BRIDGE_MODEL__MAX_EVENT_BYTES=str(MAX_EVENT_BYTES),
        BRIDGE_MODEL__COPY_FIELDS='["id", "meta"]',
    )
    bridge = await bridges.start_assigned(env)
    out, final = await drain_exactly_once(kafka_bootstrap, topics, bridge, sent, 120)
    got = ended_as(out)
    wrong = [
        (s.source, s.item.expected, got[s.source], (s.item.value or b"")[:60])
        for s in sent
        if got[s.source] != s.item.expected
        and not (s.item.expected == FAILURE and got[s.source] in REASONS)
    ]
    assert not wrong, f"{len(wrong)} inputs ended otherwise than expected: {wrong[:10]}"
    assert final == end_offsets(sent)
    assert not log_events(bridge, "internal_error")
    assert stopped_counts(bridge)["events"] == len(sent)
