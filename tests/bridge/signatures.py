"""Signatures used by the bridge's unit tests (shaped like the demo model's)."""

from __future__ import annotations

from bridge.domain import DType, Signature, TensorSpec

FRAUD = Signature(
    model="fraud",
    version=2,
    name="serving_default",
    inputs={
        "time": TensorSpec(DType.FLOAT, (-1,)),
        "amount": TensorSpec(DType.FLOAT, (-1,)),
        "pca": TensorSpec(DType.FLOAT, (-1, 28)),
    },
    outputs={
        "fraud_probability": TensorSpec(DType.FLOAT, (-1,)),
        "flagged": TensorSpec(DType.BOOL, (-1,)),
    },
)

MIXED = Signature(
    model="mixed",
    version=1,
    name="serving_default",
    inputs={
        "count": TensorSpec(DType.INT32, (-1,)),
        "flag": TensorSpec(DType.BOOL, (-1,)),
        "text": TensorSpec(DType.STRING, (-1,)),
        "grid": TensorSpec(DType.DOUBLE, (-1, -1, 2)),
    },
    outputs={"y": TensorSpec(DType.FLOAT, (-1,))},
)

# Integers and booleans only, fixed and variable lengths: what the typed pass takes.
COUNTS = Signature(
    model="counts",
    version=1,
    name="serving_default",
    inputs={
        "n": TensorSpec(DType.INT8, (-1,)),
        "ids": TensorSpec(DType.INT64, (-1, -1)),
        "on": TensorSpec(DType.BOOL, (-1, 2)),
    },
    outputs={"y": TensorSpec(DType.FLOAT, (-1,))},
)


def fraud_event(**overrides: object) -> dict[str, object]:
    event: dict[str, object] = {"time": 10.0, "amount": 12.5, "pca": [0.1] * 28, "id": "tx-1"}
    event.update(overrides)
    return event
