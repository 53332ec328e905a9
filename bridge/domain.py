"""The types every part of the bridge shares: what a model expects, what is asked of
it, what an event becomes, and what came of it.

Neutral ground: the pure core (``bridge.pipeline``), the model-server clients
(``bridge.serving``) and the Kafka side all import this module, and it imports
nothing of theirs, so no part depends on another just to name a type.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bridge.errors import BridgeError

# --- Signatures: built from GetModelMetadata; everything downstream validates and
# encodes against them, so the protocol is decided in one place.


class DType(enum.IntEnum):
    """The TensorFlow dtypes the bridge can send and read (values are TF's DataType)."""

    FLOAT = 1
    DOUBLE = 2
    INT32 = 3
    UINT8 = 4
    INT16 = 5
    INT8 = 6
    STRING = 7
    INT64 = 9
    BOOL = 10
    UINT16 = 17
    HALF = 19
    UINT32 = 22
    UINT64 = 23

    @property
    def tf_name(self) -> str:
        return "DT_" + self.name

    @property
    def is_float(self) -> bool:
        return self in (DType.FLOAT, DType.DOUBLE, DType.HALF)

    @property
    def is_integer(self) -> bool:
        return self in _INT_RANGES

    @property
    def int_range(self) -> tuple[int, int]:
        return _INT_RANGES[self]


_INT_RANGES = {
    DType.INT8: (-(2**7), 2**7 - 1),
    DType.INT16: (-(2**15), 2**15 - 1),
    DType.INT32: (-(2**31), 2**31 - 1),
    DType.INT64: (-(2**63), 2**63 - 1),
    DType.UINT8: (0, 2**8 - 1),
    DType.UINT16: (0, 2**16 - 1),
    DType.UINT32: (0, 2**32 - 1),
    DType.UINT64: (0, 2**64 - 1),
}


class UnsupportedSignatureError(Exception):
    """The signature uses something the bridge cannot feed (e.g. an unsupported dtype)."""


def dtype_from_name(name: str) -> DType:
    """``"DT_FLOAT"`` -> ``DType.FLOAT``."""
    try:
        return DType[name.removeprefix("DT_")]
    except KeyError:
        raise UnsupportedSignatureError(f"dtype {name} is not supported by the bridge") from None


def dtype_from_number(number: int) -> DType:
    try:
        return DType(number)
    except ValueError:
        raise UnsupportedSignatureError(f"dtype #{number} is not supported by the bridge") from None


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One input or output: dtype and shape (``None`` = unknown rank, ``-1`` = any size)."""

    dtype: DType
    shape: tuple[int, ...] | None

    @property
    def batched(self) -> bool:
        """True if the first dimension is the batch (any size)."""
        return self.shape is not None and len(self.shape) >= 1 and self.shape[0] == -1

    @property
    def instance_shape(self) -> tuple[int, ...] | None:
        """The shape of one event's value: the signature's shape without the batch dim."""
        if self.shape is None:
            return None
        return self.shape[1:] if self.batched else self.shape


@dataclass(frozen=True, slots=True)
class Signature:
    """A signature of one model version, as reported by the server."""

    model: str
    version: int | None
    name: str
    inputs: Mapping[str, TensorSpec]
    outputs: Mapping[str, TensorSpec]

    @property
    def batchable(self) -> bool:
        """Several events fit in one request only if every input has a batch dimension."""
        return all(spec.batched for spec in self.inputs.values())


# --- Requests: what a call asks for, and what it answers.


@dataclass(frozen=True, slots=True)
class Target:
    """What a request asks for: a model, optionally pinned by label or version."""

    model: str
    label: str | None = None
    version: int | None = None
    signature: str = "serving_default"

    def __str__(self) -> str:
        if self.label is not None:
            return f"{self.model}@{self.label}"
        if self.version is not None:
            return f"{self.model}@{self.version}"
        return f"{self.model}@latest"


@dataclass(frozen=True, slots=True)
class Prediction:
    """A response split back per instance.

    ``version`` is the version that served the request, from the response when the
    protocol says it (gRPC always does; TF Serving's REST predict response does
    not, so REST knows it only when the target pins a version).
    """

    version: int | None
    outputs: list[dict[str, Any]]


# --- Events: one event's model input, checked against the signature.

Leaf = float | int | bool | bytes


@dataclass(slots=True)
class Instance:
    """One event's model input: per signature input, its leaves (row-major) and shape."""

    values: dict[str, list[Leaf]]
    shapes: dict[str, tuple[int, ...]]  # shared between instances of a fixed-shape signature
    # The copied event fields, already JSON: a field the result cannot hold fails the
    # event here, not later in the emitter, and the encoding is done once.
    copied: bytes
    # Instances can share a request only if their shapes agree (variable inner dims).
    shape_key: tuple[tuple[int, ...], ...]


# What a result embeds for "fields" when no fields are copied.
NO_FIELDS = b"{}"


@dataclass(slots=True)
class Routed:
    """Where an event went, and what its output record carries back from the event."""

    route: str  # the route's name: a label, a version number, or "latest"
    target: Target
    # The copied event fields, already JSON (``{}`` when none are copied, or the event
    # never became an instance).
    copied: bytes


# --- Outcomes: a result to publish, or a failure to dead-letter.


@dataclass(slots=True)
class Success:
    outputs: dict[str, Any]
    version: int | None  # the version that served it, when the protocol says
    attempts: int
    model_ms: float  # duration of the successful call


@dataclass(slots=True)
class Failure:
    error: BridgeError
    attempts: int  # model calls made (0: the event never reached the model)
    first_attempt_ms: int | None = None  # epoch milliseconds
    last_attempt_ms: int | None = None


Outcome = Success | Failure
