"""Event bytes -> a validated model instance, or an EventError that says what is wrong.

Checking every event against the signature's dtypes and shapes before it is sent
means a malformed event fails alone and at once, instead of failing a whole batch
on the server.
"""

from __future__ import annotations

import base64
import binascii
import reprlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from bridge.domain import NO_FIELDS, DType, Instance, Leaf, Signature, TensorSpec
from bridge.errors import (
    FieldTooDeepError,
    InputShapeError,
    InputTypeError,
    MissingInputError,
    NotAnObjectError,
    NotJsonError,
    OversizeError,
)
from bridge.pipeline.typed import TypedDecoder

# TensorFlow's TensorShape has at most 254 dimensions: a list nested deeper cannot be
# a tensor, and checking it level by level would only spend the stack.
MAX_RANK = 254


def parse_event(value: bytes | None, max_bytes: int) -> dict[str, Any]:
    """Decode the record value as a JSON object."""
    if value is None:
        raise NotJsonError("the record has no value (null), expected a JSON object")
    if len(value) > max_bytes:
        raise OversizeError(f"the event is {len(value)} bytes, over the limit of {max_bytes}")
    try:
        event = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise NotJsonError(f"the value is not JSON: {exc}") from exc
    if not isinstance(event, dict):
        raise NotAnObjectError(f"the value is JSON {type(event).__name__}, expected an object")
    return event


class InstanceBuilder:
    """Builds instances for one signature; the field mapping and copied fields are fixed."""

    def __init__(
        self,
        signature: Signature,
        input_map: Mapping[str, str] | None = None,
        copy_fields: Sequence[str] = (),
    ) -> None:
        self.signature = signature
        input_map = input_map or {}
        # (input name, event field, spec, fast-path plan) in signature order.
        self._inputs = [
            (name, input_map.get(name, name), spec, _fast_plan(spec))
            for name, spec in signature.inputs.items()
        ]
        self._copy_fields = tuple(copy_fields)
        # When every input's fast path has one possible shape, all fast-path instances
        # share one shapes dict and batch key instead of building them per event.
        plans = [plan for _, _, _, plan in self._inputs]
        self._fixed: dict[str, tuple[int, ...]] | None = None
        if all(plan is not None and plan.length != -1 for plan in plans):
            self._fixed = {
                name: () if plan.scalar else (plan.length,)
                for name, _, _, plan in self._inputs
                if plan is not None
            }
        self._fixed_key = tuple(self._fixed.values()) if self._fixed is not None else ()
        # The typed pass takes what the fast path takes: numbers and booleans, scalars or
        # flat lists; a signature with any other input is left to the checks whole.
        typed_inputs = [
            (name, field, spec.dtype, () if plan.scalar else (plan.length,))
            for name, field, spec, plan in self._inputs
            if plan is not None
        ]
        self._typed = (
            TypedDecoder.for_inputs(typed_inputs, self._copy_fields, self._fixed)
            if len(typed_inputs) == len(self._inputs)
            else None
        )

    def decode(self, value: bytes | None, max_bytes: int) -> Instance:
        """Event bytes -> instance: the typed fast path, else the checks that word the error."""
        if self._typed is not None and value is not None and len(value) <= max_bytes:
            instance = self._typed.decode(value)
            if instance is not None:
                return instance
        return self.build(parse_event(value, max_bytes))

    def build(self, event: Mapping[str, Any]) -> Instance:
        values: dict[str, list[Leaf]] = {}
        general: dict[str, tuple[int, ...]] = {}  # shapes of inputs off the fast path
        for name, field, spec, plan in self._inputs:
            if field not in event:
                where = f"field '{field}'" if field == name else f"field '{field}' (input '{name}')"
                raise MissingInputError(f"missing {where}; the signature needs {self._needs()}")
            value = event[field]
            if plan is not None:
                fast = _fast_leaves(value, plan)
                if fast is not None:
                    values[name] = fast
                    continue
            leaves: list[Leaf] = []
            general[name] = _flatten(value, spec, field, leaves)
            values[name] = leaves
        copied = self._copy(event) if self._copy_fields else NO_FIELDS
        if not general and self._fixed is not None:
            return Instance(values, self._fixed, copied, self._fixed_key)
        shapes = {
            name: general[name] if name in general else _fast_shape(plan, values[name])
            for name, _, _, plan in self._inputs
        }
        return Instance(values, shapes, copied, tuple(shapes.values()))

    def _copy(self, event: Mapping[str, Any]) -> bytes:
        fields = {f: event[f] for f in self._copy_fields if f in event}
        try:
            return orjson.dumps(fields)
        except TypeError as exc:  # orjson encodes at most 254 levels of nesting
            names = ", ".join(f"'{f}'" for f in fields)
            raise FieldTooDeepError(
                f"copied field(s) {names} cannot be written into the result: {exc}"
            ) from exc

    def _needs(self) -> str:
        return ", ".join(f"'{field}'" for _, field, _, _ in self._inputs)


_NUMBERS = frozenset({int, float})
_INTEGERS = frozenset({int})
_BOOLS = frozenset({bool})


@dataclass(frozen=True, slots=True)
class _FastPlan:
    """What the common case of one input looks like, worked out once per signature."""

    scalar: bool
    length: int  # of a flat list; -1 = any
    kinds: frozenset[type]
    int_range: tuple[int, int] | None


def _fast_plan(spec: TensorSpec) -> _FastPlan | None:
    dtype, shape = spec.dtype, spec.instance_shape
    if dtype.is_float:
        kinds = _NUMBERS
    elif dtype.is_integer:
        kinds = _INTEGERS
    elif dtype is DType.BOOL:
        kinds = _BOOLS
    else:
        return None  # strings take the general path
    int_range = dtype.int_range if dtype.is_integer else None
    if shape == ():
        return _FastPlan(True, 0, kinds, int_range)
    if shape is not None and len(shape) == 1:
        return _FastPlan(False, shape[0], kinds, int_range)
    return None


def _fast_shape(plan: _FastPlan | None, leaves: list[Leaf]) -> tuple[int, ...]:
    assert plan is not None  # noqa: S101 - only fast-path inputs lack a general shape
    return () if plan.scalar else (len(leaves),)


def _fast_leaves(value: Any, plan: _FastPlan) -> list[Leaf] | None:
    """The common cases in C-speed checks: a scalar, or a flat list of the right length.

    None means "take the general path", which also produces the error message.
    """
    if plan.scalar:
        if type(value) not in plan.kinds:
            return None
        if plan.int_range is not None and not plan.int_range[0] <= value <= plan.int_range[1]:
            return None
        return [value]
    if type(value) is not list or not value or plan.length not in (-1, len(value)):
        return None
    if not set(map(type, value)) <= plan.kinds:
        return None
    if plan.int_range is not None and not (
        plan.int_range[0] <= min(value) and max(value) <= plan.int_range[1]
    ):
        return None
    return value


def _flatten(value: Any, spec: TensorSpec, field: str, out: list[Leaf]) -> tuple[int, ...]:
    """Append ``value``'s leaves to ``out`` converted to ``spec.dtype``; return its shape."""
    expected = spec.instance_shape
    shape = _shape_of(value, field)
    if expected is not None and (
        len(shape) != len(expected)
        or any(want not in (-1, got) for want, got in zip(expected, shape, strict=True))
    ):
        raise InputShapeError(
            f"field '{field}' has shape {_fmt_shape(shape)}, "
            f"the signature expects {_fmt_shape(expected)}"
        )
    _walk(value, shape, 0, spec.dtype, _CONVERTERS[spec.dtype], field, out)
    return shape


def _shape_of(value: Any, field: str) -> tuple[int, ...]:
    """The shape the first elements suggest; ``_walk`` checks that the rest agree."""
    dims: list[int] = []
    probe = value
    while isinstance(probe, list):
        if len(dims) == MAX_RANK:
            raise InputShapeError(
                f"field '{field}' nests lists deeper than {MAX_RANK} levels, "
                "more dimensions than a tensor can have"
            )
        dims.append(len(probe))
        if not probe:
            break
        probe = probe[0]
    return tuple(dims)


def _walk(
    value: Any,
    shape: tuple[int, ...],
    level: int,
    dtype: DType,
    convert: Any,
    field: str,
    out: list[Leaf],
) -> None:
    """Leaves in row-major order, checking that every list has its level's length.

    Recursion is bounded by ``MAX_RANK`` (the shape was probed first).
    """
    if level == len(shape):
        if isinstance(value, list):
            raise InputShapeError(f"field '{field}' is a ragged nested list")
        out.append(convert(value, dtype, field))
        return
    if not isinstance(value, list) or len(value) != shape[level]:
        raise InputShapeError(f"field '{field}' is a ragged nested list")
    for item in value:
        _walk(item, shape, level + 1, dtype, convert, field, out)


# Bounded in depth and length, so a deeply nested or huge value cannot break the message.
_SHOWN = reprlib.Repr()
_SHOWN.maxlevel, _SHOWN.maxstring, _SHOWN.maxother, _SHOWN.maxlist = 3, 30, 30, 4


def _type_error(value: Any, dtype: DType, field: str) -> InputTypeError:
    shown = _SHOWN.repr(value)
    kind = "null" if value is None else type(value).__name__
    return InputTypeError(
        f"field '{field}' holds {kind} {shown}, the signature expects {dtype.tf_name}"
    )


def _to_float(value: Any, dtype: DType, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _type_error(value, dtype, field)
    return float(value)


def _to_int(value: Any, dtype: DType, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _type_error(value, dtype, field)
    low, high = dtype.int_range
    if not low <= value <= high:
        raise InputTypeError(f"field '{field}' holds {value}, out of range for {dtype.tf_name}")
    return value


def _to_bool(value: Any, dtype: DType, field: str) -> bool:
    if not isinstance(value, bool):
        raise _type_error(value, dtype, field)
    return value


def _to_bytes(value: Any, dtype: DType, field: str) -> bytes:
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except binascii.Error as exc:
            raise InputTypeError(f"field '{field}' has invalid base64: {exc}") from exc
    raise _type_error(value, dtype, field)


_CONVERTERS = {
    dtype: (
        _to_float
        if dtype.is_float
        else _to_int
        if dtype.is_integer
        else _to_bool
        if dtype is DType.BOOL
        else _to_bytes
    )
    for dtype in DType
}


def _fmt_shape(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join("?" if d == -1 else str(d) for d in shape) + "]"
