"""Synthetic card payments for the demo, the benchmarks and the integration tests.

Shaped like the events the demo model ``fraud`` expects: ``time``, ``amount`` and
28 ``pca`` features, plus an ``id`` and a ``card`` (the Kafka key). A few kinds of
malformed events exercise every failure reason that needs no model call.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

import orjson

PCA_FEATURES = 28

# reason a malformed event will fail with -> how to spoil a good one
MALFORMED_KINDS = ("not_json", "not_object", "missing_input", "wrong_type", "wrong_shape")


@dataclass(frozen=True, slots=True)
class Payment:
    key: bytes
    value: bytes
    expected: str  # "result", or the failure reason it must end with


def payment(rng: random.Random, index: int, fraud_rate: float = 0.002) -> dict[str, object]:
    fraud = rng.random() < fraud_rate
    pca = [round(rng.gauss(0.0, 1.0), 4) for _ in range(PCA_FEATURES)]
    amount = round(rng.lognormvariate(3.5, 1.2), 2)
    if fraud:
        # The demo model learned frauds as shifted in a few features (V14, V17 low).
        pca[13] -= 6.0
        pca[16] -= 5.0
        amount = round(rng.choice([1.0, rng.uniform(500, 2500)]), 2)
    return {
        "id": f"tx-{index}",
        "card": f"card-{rng.randrange(1000)}",
        "time": float(index),
        "amount": amount,
        "pca": pca,
    }


def spoil(event: dict[str, object], kind: str) -> bytes:
    """A malformed value that must fail with ``kind`` as its reason."""
    if kind == "not_json":
        return b"\x00not json{"
    if kind == "not_object":
        return orjson.dumps([event["amount"]])
    broken = dict(event)
    if kind == "missing_input":
        del broken["pca"]
    elif kind == "wrong_type":
        broken["amount"] = "twelve euros"
    elif kind == "wrong_shape":
        broken["pca"] = broken["pca"][:5]  # type: ignore[index]
    else:
        raise ValueError(f"unknown malformed kind {kind}")
    return orjson.dumps(broken)


def payments(count: int, seed: int = 7, malformed_every: int = 0) -> Iterator[Payment]:
    """``count`` payments; every ``malformed_every``-th one (if > 0) is malformed."""
    rng = random.Random(seed)
    for index in range(count):
        event = payment(rng, index)
        key = str(event["card"]).encode()
        if malformed_every and index % malformed_every == malformed_every - 1:
            kind = MALFORMED_KINDS[(index // malformed_every) % len(MALFORMED_KINDS)]
            yield Payment(key, spoil(event, kind), kind)
        else:
            yield Payment(key, orjson.dumps(event), "result")
