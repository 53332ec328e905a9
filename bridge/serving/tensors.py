"""Instances <-> TensorProto, without numpy (the bridge's runtime stays small).

Numbers travel in ``tensor_content`` (little-endian, packed with ``array``), which
is what TF Serving parses fastest; strings go in ``string_val``. Responses may use
either form, including TF's compression of repeated values in the ``*_val``
fields, so decoding accepts both.
"""

from __future__ import annotations

import base64
import struct
import sys
from array import array
from collections.abc import Sequence
from math import prod
from typing import Any

from bridge.domain import DType, Instance, Leaf, Signature, dtype_from_number
from bridge.wire import tensor_pb2, types_pb2

_ARRAY_CODES = {
    DType.FLOAT: "f",
    DType.DOUBLE: "d",
    DType.INT8: "b",
    DType.UINT8: "B",
    DType.INT16: "h",
    DType.UINT16: "H",
    DType.INT32: "i",
    DType.UINT32: "I",
    DType.INT64: "q",
    DType.UINT64: "Q",
}
_BIG_ENDIAN = sys.byteorder == "big"


def _pack(dtype: DType, leaves: list[Leaf]) -> bytes:
    if dtype is DType.BOOL:
        return bytes(bool(v) for v in leaves)
    if dtype is DType.HALF:
        return struct.pack(f"<{len(leaves)}e", *leaves)
    packed: array[Any] = array(_ARRAY_CODES[dtype], leaves)
    if _BIG_ENDIAN:
        packed.byteswap()
    return packed.tobytes()


def _unpack(dtype: DType, content: bytes) -> list[Any]:
    if dtype is DType.BOOL:
        return [b != 0 for b in content]
    if dtype is DType.HALF:
        return list(struct.unpack(f"<{len(content) // 2}e", content))
    values = array(_ARRAY_CODES[dtype])
    values.frombytes(content)
    if _BIG_ENDIAN:
        values.byteswap()
    return values.tolist()


def encode_inputs(
    signature: Signature, instances: Sequence[Instance]
) -> dict[str, tensor_pb2.TensorProto]:
    """One tensor per signature input, instances stacked along a new first dimension."""
    tensors: dict[str, tensor_pb2.TensorProto] = {}
    batched = signature.batchable
    for name, spec in signature.inputs.items():
        leaves: list[Leaf] = []
        for instance in instances:
            leaves.extend(instance.values[name])
        inner = instances[0].shapes[name]
        shape = (len(instances), *inner) if batched else inner
        tensor = tensor_pb2.TensorProto(dtype=types_pb2.DataType.ValueType(spec.dtype))
        for size in shape:
            tensor.tensor_shape.dim.add(size=size)
        if spec.dtype is DType.STRING:
            tensor.string_val.extend(leaves)  # type: ignore[arg-type]
        else:
            tensor.tensor_content = _pack(spec.dtype, leaves)
        tensors[name] = tensor
    return tensors


def decode_tensor(tensor: tensor_pb2.TensorProto) -> tuple[list[Any], tuple[int, ...]]:
    """A tensor's leaves (row-major) and shape."""
    dtype = dtype_from_number(tensor.dtype)
    shape = tuple(dim.size for dim in tensor.tensor_shape.dim)
    count = prod(shape)
    if tensor.tensor_content:
        return _unpack(dtype, tensor.tensor_content), shape
    values: list[Any] = list(_typed_values(dtype, tensor))
    if len(values) < count:
        # TF writes a run of equal trailing values once; the last one repeats.
        values.extend([values[-1] if values else _zero(dtype)] * (count - len(values)))
    return values, shape


def _typed_values(dtype: DType, tensor: tensor_pb2.TensorProto) -> Sequence[Any]:
    if dtype is DType.FLOAT:
        return tensor.float_val
    if dtype is DType.DOUBLE:
        return tensor.double_val
    if dtype is DType.HALF:
        return [struct.unpack("<e", struct.pack("<H", bits))[0] for bits in tensor.half_val]
    if dtype is DType.INT64:
        return tensor.int64_val
    if dtype is DType.UINT32:
        return tensor.uint32_val
    if dtype is DType.UINT64:
        return tensor.uint64_val
    if dtype is DType.BOOL:
        return tensor.bool_val
    if dtype is DType.STRING:
        return tensor.string_val
    return tensor.int_val  # INT8/16/32 and UINT8/16 share int_val


def _zero(dtype: DType) -> Any:
    if dtype is DType.STRING:
        return b""
    if dtype is DType.BOOL:
        return False
    return 0.0 if dtype.is_float else 0


def split_outputs(
    outputs: dict[str, tuple[list[Any], tuple[int, ...]]], count: int
) -> list[dict[str, Any]]:
    """Per instance, each output's value as JSON-ready Python (nested lists, str or b64)."""
    per_instance: list[dict[str, Any]] = [{} for _ in range(count)]
    for name, (leaves, shape) in outputs.items():
        if shape and shape[0] == count:
            inner = shape[1:]
            if not inner and not (leaves and isinstance(leaves[0], bytes)):
                # The common case, one number per instance: nothing to nest or convert.
                for item, value in zip(per_instance, leaves, strict=True):
                    item[name] = value
                continue
            step = prod(inner)
            for i in range(count):
                per_instance[i][name] = nest(leaves[i * step : (i + 1) * step], inner)
        else:
            # Not batched (e.g. a scalar summary): every instance gets the whole value.
            whole = nest(leaves, shape)
            for item in per_instance:
                item[name] = whole
    return per_instance


def nest(leaves: Sequence[Any], shape: tuple[int, ...]) -> Any:
    """Row-major leaves -> nested lists of ``shape`` (a scalar for shape ())."""
    if not shape:
        return _jsonable(leaves[0])
    if len(shape) == 1:
        return [_jsonable(v) for v in leaves]
    step = prod(shape[1:])
    return [nest(leaves[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(value).decode()}
    return value
