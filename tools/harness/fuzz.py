"""Fuzzed inputs: many kinds of malformed input mixed with valid payments, each with what
it must end as. Seeded, so a failure replays.

``tests/integration/test_fuzz.py`` runs a short mix through a bridge; ``make chaos``
runs a long one. The kinds cover bytes, JSON, nesting, sizes, keys and headers.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import orjson

from tools.harness.kafka_io import Item
from tools.harness.payments import payment

SEED = 20261201
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
