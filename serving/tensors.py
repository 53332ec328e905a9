"""Tensors in and out of the server, for both front ends.

gRPC: TensorProto <-> numpy. Responses use TF Serving's default encoding, the typed
repeated fields (``float_val``, ``string_val``, ...) rather than ``tensor_content``,
so clients that read either way see what they would upstream.

REST: JSON bodies <-> numpy, typed by the signature's dtypes (second half of the file).
Both hand numpy arrays to ``predict.py``.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

from serving.errors import ServingError

# DataType enum -> numpy dtype, for the types a SavedModel signature can carry
# through Predict. DT_STRING tensors are object arrays of bytes.
NUMPY_DTYPES: dict[int, np.dtype] = {
    types_pb2.DT_FLOAT: np.dtype(np.float32),
    types_pb2.DT_DOUBLE: np.dtype(np.float64),
    types_pb2.DT_HALF: np.dtype(np.float16),
    types_pb2.DT_INT8: np.dtype(np.int8),
    types_pb2.DT_INT16: np.dtype(np.int16),
    types_pb2.DT_INT32: np.dtype(np.int32),
    types_pb2.DT_INT64: np.dtype(np.int64),
    types_pb2.DT_UINT8: np.dtype(np.uint8),
    types_pb2.DT_UINT16: np.dtype(np.uint16),
    types_pb2.DT_UINT32: np.dtype(np.uint32),
    types_pb2.DT_UINT64: np.dtype(np.uint64),
    types_pb2.DT_BOOL: np.dtype(np.bool_),
    types_pb2.DT_STRING: np.dtype(object),
    types_pb2.DT_COMPLEX64: np.dtype(np.complex64),
    types_pb2.DT_COMPLEX128: np.dtype(np.complex128),
}

# TensorFlow's DataTypeString names, which TF Serving puts in its messages.
TYPE_NAMES: dict[int, str] = {
    types_pb2.DT_FLOAT: "float",
    types_pb2.DT_DOUBLE: "double",
    types_pb2.DT_HALF: "half",
    types_pb2.DT_BFLOAT16: "bfloat16",
    types_pb2.DT_INT8: "int8",
    types_pb2.DT_INT16: "int16",
    types_pb2.DT_INT32: "int32",
    types_pb2.DT_INT64: "int64",
    types_pb2.DT_UINT8: "uint8",
    types_pb2.DT_UINT16: "uint16",
    types_pb2.DT_UINT32: "uint32",
    types_pb2.DT_UINT64: "uint64",
    types_pb2.DT_BOOL: "bool",
    types_pb2.DT_STRING: "string",
    types_pb2.DT_COMPLEX64: "complex64",
    types_pb2.DT_COMPLEX128: "complex128",
}


def type_name(dtype: int) -> str:
    """TensorFlow's DataTypeString for an enum value (``float`` for DT_FLOAT)."""
    return TYPE_NAMES.get(dtype) or str(types_pb2.DataType.Name(dtype)).removeprefix("DT_").lower()


def _parsing_error(alias: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"tensor parsing error: {alias}")


def to_ndarray(alias: str, proto: tensor_pb2.TensorProto) -> np.ndarray:
    """Decode one request input the way Tensor::FromProto accepts it.

    Fewer values than elements repeat the last value (none at all means zeros);
    more values than elements, a bad ``tensor_content`` length or an unknown
    dtype are ``tensor parsing error: ALIAS``.
    """
    if proto.dtype not in NUMPY_DTYPES or any(d.size < 0 for d in proto.tensor_shape.dim):
        raise _parsing_error(alias)
    try:
        array = tf.make_ndarray(proto)
    except (ValueError, TypeError) as exc:
        raise _parsing_error(alias) from exc
    expected = tuple(d.size for d in proto.tensor_shape.dim)
    if array.shape != expected:
        raise _parsing_error(alias)
    return np.asarray(array)


def _shape_proto(shape: tuple[int, ...]) -> tensor_shape_pb2.TensorShapeProto:
    return tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in shape]
    )


def _half_bits(flat: np.ndarray) -> list[int]:
    return flat.astype(np.float16).view(np.uint16).astype(np.int32).tolist()  # type: ignore[no-any-return]


def _complex_parts(flat: np.ndarray) -> list[float]:
    return np.stack([flat.real, flat.imag], axis=-1).ravel().tolist()


def _as_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, np.bytes_ | bytearray | memoryview):
        return bytes(value)
    return str(value).encode()


# dtype enum -> (repeated field, how a flat numpy array becomes its values)
_FIELDS: dict[int, tuple[str, Callable[[np.ndarray], list[object]]]] = {
    types_pb2.DT_FLOAT: ("float_val", lambda a: a.tolist()),
    types_pb2.DT_DOUBLE: ("double_val", lambda a: a.tolist()),
    types_pb2.DT_HALF: ("half_val", _half_bits),  # type: ignore[dict-item]
    types_pb2.DT_INT8: ("int_val", lambda a: a.astype(np.int32).tolist()),
    types_pb2.DT_INT16: ("int_val", lambda a: a.astype(np.int32).tolist()),
    types_pb2.DT_INT32: ("int_val", lambda a: a.tolist()),
    types_pb2.DT_UINT8: ("int_val", lambda a: a.astype(np.int32).tolist()),
    types_pb2.DT_UINT16: ("int_val", lambda a: a.astype(np.int32).tolist()),
    types_pb2.DT_INT64: ("int64_val", lambda a: a.tolist()),
    types_pb2.DT_UINT32: ("uint32_val", lambda a: a.tolist()),
    types_pb2.DT_UINT64: ("uint64_val", lambda a: a.tolist()),
    types_pb2.DT_BOOL: ("bool_val", lambda a: a.tolist()),
    types_pb2.DT_STRING: ("string_val", lambda a: [_as_bytes(v) for v in a]),
    types_pb2.DT_COMPLEX64: ("scomplex_val", _complex_parts),  # type: ignore[dict-item]
    types_pb2.DT_COMPLEX128: ("dcomplex_val", _complex_parts),  # type: ignore[dict-item]
}

_ENUMS: dict[np.dtype, int] = {
    np.dtype(np.float32): types_pb2.DT_FLOAT,
    np.dtype(np.float64): types_pb2.DT_DOUBLE,
    np.dtype(np.float16): types_pb2.DT_HALF,
    np.dtype(np.int8): types_pb2.DT_INT8,
    np.dtype(np.int16): types_pb2.DT_INT16,
    np.dtype(np.int32): types_pb2.DT_INT32,
    np.dtype(np.int64): types_pb2.DT_INT64,
    np.dtype(np.uint8): types_pb2.DT_UINT8,
    np.dtype(np.uint16): types_pb2.DT_UINT16,
    np.dtype(np.uint32): types_pb2.DT_UINT32,
    np.dtype(np.uint64): types_pb2.DT_UINT64,
    np.dtype(np.bool_): types_pb2.DT_BOOL,
    np.dtype(np.complex64): types_pb2.DT_COMPLEX64,
    np.dtype(np.complex128): types_pb2.DT_COMPLEX128,
}


def dtype_enum(array: np.ndarray) -> int:
    """The DataType of a numpy array (object, str and bytes arrays are DT_STRING)."""
    if array.dtype.kind in "OSU":
        return int(types_pb2.DT_STRING)
    try:
        return _ENUMS[array.dtype]
    except KeyError:
        raise ServingError(
            grpc.StatusCode.INTERNAL, f"Unsupported output tensor type: {array.dtype}"
        ) from None


def to_tensor_proto(array: np.ndarray, dtype: int | None = None) -> tensor_pb2.TensorProto:
    """Encode an output like Tensor::AsProtoField (typed fields, never tensor_content)."""
    array = np.asarray(array)
    enum = dtype if dtype is not None else dtype_enum(array)
    field, convert = _FIELDS[enum]
    proto = tensor_pb2.TensorProto(dtype=enum, tensor_shape=_shape_proto(array.shape))
    getattr(proto, field).extend(convert(array.ravel()))
    return proto


# ---------------------------------------------------------------------------
# REST JSON <-> numpy, following TF Serving's util/json_tensor.cc: the same
# checks in the same order, with the same messages (RapidJSON's wording for
# syntax errors, byte offsets included).
# ---------------------------------------------------------------------------


class JsonFormat(enum.Enum):
    """How a predict request was written; the response is written the same way."""

    ROW = "instances"
    COLUMNAR = "inputs"


def _invalid(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _decimal_text(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(value)


def json_text(value: Any, indent: int = 0) -> str:
    """A JSON value as RapidJSON's PrettyWriter prints it inside error messages."""
    pad = " " * (indent + 4)
    if isinstance(value, dict):
        if not value:
            return "{}"
        members = (
            f"{pad}{json.dumps(k, ensure_ascii=False)}: {json_text(v, indent + 4)}"
            for k, v in value.items()
        )
        return "{\n" + ",\n".join(members) + "\n" + " " * indent + "}"
    if isinstance(value, list):
        if not value:
            return "[]"
        items = (pad + json_text(v, indent + 4) for v in value)
        return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"
    if isinstance(value, float):
        return _decimal_text(value)
    return json.dumps(value, ensure_ascii=False)


def _json_type(value: Any) -> str:
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


# Python's json messages -> RapidJSON's (GetParseError_En) for the same mistakes.
_PARSE_ERRORS = {
    "Expecting property name enclosed in double quotes": "Missing a name for object member.",
    "Expecting ':' delimiter": "Missing a colon after a name of object member.",
    "Extra data": "The document root must not be followed by other values.",
    "Invalid control character at": "Invalid encoding in string.",
    "Invalid \\escape": "Invalid escape character in string.",
    "Invalid \\uXXXX escape": "Incorrect hex digit after \\u escape in string.",
}


def _innermost_container(text: str) -> str:
    """'{' or '[' : the container open at the end of ``text`` (strings skipped)."""
    stack: list[str] = []
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            stack.append(char)
        elif char in "}]" and stack:
            stack.pop()
    return stack[-1] if stack else "["


def _parse_error(text: str, exc: json.JSONDecodeError) -> ServingError:
    pos = exc.pos
    if exc.msg == "Expecting value":
        what = "The document is empty." if not text.strip() else "Invalid value."
    elif exc.msg == "Expecting ',' delimiter":
        what = (
            "Missing a comma or '}' after an object member."
            if _innermost_container(text[:pos]) == "{"
            else "Missing a comma or ']' after an array element."
        )
    elif exc.msg == "Unterminated string starting at":
        # RapidJSON notices at the end of the input, not where the string began.
        what, pos = "Missing a closing quotation mark in string.", len(text)
    else:
        what = _PARSE_ERRORS.get(exc.msg, exc.msg)
    offset = len(text[:pos].encode("utf-8", "surrogateescape"))
    return _invalid(f"JSON Parse error: {what} at offset: {offset}")


def parse_json_object(body: bytes) -> dict[str, Any]:
    """Parse a request body; NaN/Infinity/-Infinity are accepted like RapidJSON's flag."""
    if not body:
        raise _invalid("JSON Parse error: The document is empty")
    # surrogateescape keeps offsets of invalid UTF-8 (RapidJSON does not validate it).
    text = body.decode("utf-8", "surrogateescape")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _parse_error(text, exc) from exc
    except RecursionError as exc:
        raise _invalid("JSON Parse error: Nesting too deep at offset: 0") from exc
    if not isinstance(doc, dict):
        raise _invalid(f"JSON Value: {json_text(doc)} Is not object")
    return doc


def signature_name_of(doc: dict[str, Any]) -> str:
    """The optional ``signature_name`` ("" when absent), which must be a string."""
    name = doc.get("signature_name", "")
    if not isinstance(name, str):
        raise _invalid(
            f"JSON Value: {json_text(doc)} not formatted correctly. "
            "'signature_name' key must be a string value."
        )
    return name


# --- one JSON value -> one tensor element ----------------------------------

_INT32 = (-(2**31), 2**31 - 1)
_RANGES: dict[int, tuple[int, int]] = {
    types_pb2.DT_INT32: _INT32,
    types_pb2.DT_INT16: _INT32,  # RapidJSON only checks IsInt(); TF casts the rest
    types_pb2.DT_INT8: _INT32,
    types_pb2.DT_UINT8: _INT32,
    types_pb2.DT_INT64: (-(2**63), 2**63 - 1),
    types_pb2.DT_UINT32: (0, 2**32 - 1),
    types_pb2.DT_UINT64: (0, 2**64 - 1),
}
_FLOAT_DIGITS = {types_pb2.DT_FLOAT: 24, types_pb2.DT_DOUBLE: 53}
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _type_error(value: Any, dtype: int) -> ServingError:
    return _invalid(
        f"JSON Value: {json_text(value)} Type: {_json_type(value)} "
        f"is not of expected type: {type_name(dtype)}"
    )


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _decode_b64(value: Any) -> bytes:
    if not _is_b64(value):
        raise _invalid(f"JSON Value: {json_text(value)} not formatted correctly for base64 data")
    text: str = value["b64"]
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _invalid("Unable to base64 decode") from exc


def _lossless(value: int | float, dtype: int) -> bool:
    """RapidJSON-parsed number fits a float/double exactly (IsLosslessDecimal)."""
    if isinstance(value, int) and -(2**63) <= value < 2**64:
        return bool(abs(value) <= 2 ** _FLOAT_DIGITS[dtype] - 1)
    number = float(value)
    if not math.isfinite(number) or dtype == types_pb2.DT_DOUBLE:
        return True
    return -_FLOAT32_MAX <= number <= _FLOAT32_MAX


def _element(value: Any, dtype: int) -> object:
    if isinstance(value, dict):
        if dtype == types_pb2.DT_STRING:
            return _decode_b64(value)
        raise _type_error(value, dtype)
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if dtype in _FLOAT_DIGITS:
        if not is_number:
            raise _type_error(value, dtype)
        if not _lossless(value, dtype):
            raise _invalid(
                f"Cannot convert JSON value: {json_text(value)} to "
                f"{type_name(dtype)} without loss of precision."
            )
        return value
    if dtype in _RANGES:
        low, high = _RANGES[dtype]
        if not (is_number and isinstance(value, int) and low <= value <= high):
            raise _type_error(value, dtype)
        return value
    if dtype == types_pb2.DT_STRING:
        if not isinstance(value, str):
            raise _type_error(value, dtype)
        return value.encode("utf-8", "surrogateescape")
    if dtype == types_pb2.DT_BOOL:
        if not isinstance(value, bool):
            raise _type_error(value, dtype)
        return value
    raise ServingError(
        grpc.StatusCode.UNIMPLEMENTED,
        f"Conversion of JSON Value: {json_text(value)} to type: {type_name(dtype)}",
    )


# --- one JSON value (scalar or nested lists) -> one numpy array -------------


def _dense_shape(value: Any) -> list[int]:
    """The shape the first elements spell out (GetDenseTensorShape)."""
    shape: list[int] = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _fill(value: Any, level: int, shape: list[int], dtype: int, out: list[object]) -> None:
    rank = len(shape)
    if not isinstance(value, list):
        if level != rank:
            raise _invalid(
                f"JSON Value: {json_text(value)} found at incorrect level: {level + 1} "
                f"in the JSON DOM. Expected at level: {rank}"
            )
        out.append(_element(value, dtype))
        return
    if level >= rank:
        raise _invalid(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(value) != shape[level]:
        raise _invalid(
            f"Encountered list at unexpected size: {len(value)} at level: {level} "
            f"expected size: {shape[level]}"
        )
    for item in value:
        _fill(item, level + 1, shape, dtype, out)


def _build(values: list[object], shape: list[int], dtype: int) -> np.ndarray:
    if dtype == types_pb2.DT_STRING:
        array = np.empty(len(values), dtype=object)
        array[:] = values
    elif dtype in (types_pb2.DT_INT8, types_pb2.DT_INT16, types_pb2.DT_UINT8):
        # TF stores these in int_val and narrows them, wrapping out-of-range values.
        array = np.array(values, dtype=np.int64).astype(NUMPY_DTYPES[dtype])
    else:
        array = np.array(values, dtype=NUMPY_DTYPES[dtype])
    return array.reshape(shape)


def _fast_array(value: Any, dtype: int) -> np.ndarray | None:
    """numpy's C parser for the common case: a dense, homogeneous numeric value.

    Anything it cannot prove valid returns None, and the element-by-element path
    then either accepts it or finds TF Serving's exact error.
    """
    if dtype not in _FLOAT_DIGITS and dtype not in _RANGES and dtype != types_pb2.DT_BOOL:
        return None
    try:
        array = np.asarray(value)
    except (ValueError, TypeError, OverflowError):
        return None
    kind = array.dtype.kind
    if dtype == types_pb2.DT_BOOL:
        return array if kind == "b" else None
    if kind not in "iu" and not (kind == "f" and dtype in _FLOAT_DIGITS):
        return None
    if dtype in _FLOAT_DIGITS:
        if kind in "iu":
            limit = 2 ** _FLOAT_DIGITS[dtype] - 1
            if array.size and (array.max() > limit or array.min() < -limit):
                return None
        elif dtype == types_pb2.DT_FLOAT:
            finite = array[np.isfinite(array)]
            if finite.size and np.abs(finite).max() > _FLOAT32_MAX:
                return None
        return array.astype(NUMPY_DTYPES[dtype])
    low, high = _RANGES[dtype]
    if array.size and (int(array.min()) < low or int(array.max()) > high):
        return None
    if dtype in (types_pb2.DT_INT8, types_pb2.DT_INT16, types_pb2.DT_UINT8):
        return array.astype(np.int64).astype(NUMPY_DTYPES[dtype])
    return array.astype(NUMPY_DTYPES[dtype])


def _to_array(value: Any, dtype: int) -> np.ndarray:
    fast = _fast_array(value, dtype)
    if fast is not None:
        return fast
    shape = _dense_shape(value)
    values: list[object] = []
    _fill(value, 0, shape, dtype, values)
    return _build(values, shape, dtype)


def _shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _status_text(error: ServingError) -> str:
    """absl::Status::ToString(), which TF Serving embeds in per-element errors."""
    return f"{error.code.name}: {error.message}"


# --- request bodies ----------------------------------------------------------


def _rows_to_arrays(instances: list[Any], dtypes: Mapping[str, int]) -> dict[str, np.ndarray]:
    def is_object(value: Any) -> bool:
        return isinstance(value, dict) and not _is_b64(value)

    if not isinstance(instances[0], dict) and len(dtypes) > 1:
        raise _invalid(
            "instances is a plain list, but expecting list of objects as multiple "
            "input tensors required as per tensorinfo_map"
        )
    names = sorted(dtypes)
    if not is_object(instances[0]):
        fast = _fast_array(instances, dtypes[names[0]])
        if fast is not None and fast.ndim >= 1:
            return {names[0]: fast}
    elif all(isinstance(e, dict) and e.keys() == set(names) for e in instances):
        columns = {n: _fast_array([e[n] for e in instances], dtypes[n]) for n in names}
        if all(c is not None and c.ndim >= 1 for c in columns.values()):
            return {n: c for n, c in columns.items() if c is not None}

    rows: dict[str, list[np.ndarray]] = {}

    def add(item: Any, name: str) -> None:
        if name not in dtypes:
            raise _invalid(f"JSON object: does not have named input: {name}")
        array = _to_array(item, dtypes[name])
        if name in rows:
            first = rows[name][0]
            if first.size != array.size:
                raise _invalid(f"Expecting tensor size: {first.size} but got: {array.size}")
            if first.shape != array.shape:
                raise _invalid(
                    f"Expecting shape {_shape_text(first.shape)} "
                    f"but got: {_shape_text(array.shape)}"
                )
        rows.setdefault(name, []).append(array)

    objects = is_object(instances[0])
    for index, element in enumerate(instances):
        if objects:
            if not is_object(element):
                raise _invalid(f"Expecting object but got list at item {index} of input list")
            for key, item in element.items():
                try:
                    add(item, key)
                except ServingError as exc:
                    raise _invalid(
                        f"Failed to process element: {index} key: {key} of 'instances' list. "
                        f"Error: {_status_text(exc)}"
                    ) from exc
            if set(element) != set(names):
                raise _invalid(
                    f"Failed to process element: {index} of 'instances' list. JSON object: "
                    f"{json_text(element)} must only have keys: {','.join(names)}"
                )
        else:
            if is_object(element):
                raise _invalid(f"Expecting value/list but got object at item {index} of input list")
            try:
                add(element, names[0])
            except ServingError as exc:
                raise _invalid(
                    f"Failed to process element: {index} of 'instances' list. "
                    f"Error: {_status_text(exc)}"
                ) from exc
    return {name: np.stack(arrays) for name, arrays in rows.items()}


def _columns_to_arrays(value: Any, dtypes: Mapping[str, int]) -> dict[str, np.ndarray]:
    if not isinstance(value, dict) or _is_b64(value):
        if len(dtypes) > 1:
            raise _invalid(
                "inputs is a plain value/list, but expecting an object as multiple input "
                "tensors required as per tensorinfo_map"
            )
        ((name, dtype),) = dtypes.items()
        return {name: _to_array(value, dtype)}
    arrays = {}
    for name in sorted(dtypes):
        if name not in value:
            raise _invalid(f"Missing named input: {name} in 'inputs' object.")
        arrays[name] = _to_array(value[name], dtypes[name])
    return arrays


def json_to_inputs(
    doc: dict[str, Any], dtypes: Mapping[str, int], signature_name: str
) -> tuple[JsonFormat, dict[str, np.ndarray]]:
    """Inputs of a parsed predict body, typed by the signature's input dtypes."""
    if not dtypes:
        raise _invalid(f"Failed to get input map for signature: {signature_name or 'DEFAULT'}")
    if "instances" in doc:
        if "inputs" in doc:
            raise _invalid(
                f"JSON Value: {json_text(doc)} Not formatted correctly expecting only one of "
                "'inputs' or 'instances' keys to exist "
            )
        instances = doc["instances"]
        if not isinstance(instances, list):
            raise _invalid(
                f"JSON Value: {json_text(doc)} Excepting 'instances' to be an list/array"
            )
        if not instances:
            raise _invalid(f"JSON Value: {json_text(doc)} No values in 'instances' array")
        return JsonFormat.ROW, _rows_to_arrays(instances, dtypes)
    if "inputs" in doc:
        return JsonFormat.COLUMNAR, _columns_to_arrays(doc["inputs"], dtypes)
    raise _invalid("Missing 'inputs' or 'instances' key")


# --- responses ----------------------------------------------------------------


def _float_text(value: float, digits: int, same: Callable[[float, str], bool]) -> str:
    """WriteDecimal: six significant digits if they round-trip, else full precision."""
    if not math.isfinite(value):
        return _decimal_text(value)
    text = f"{value:g}"
    if not same(value, text):
        text = f"{value:.{digits}g}"
    if "." not in text and "e" not in text:
        text += ".0"
    return text


def _float32_text(value: float) -> str:
    return _float_text(value, 9, lambda v, t: float(np.float32(t)) == v)


def _float64_text(value: float) -> str:
    return _float_text(value, 17, lambda v, t: float(t) == v)


def _string_text(value: object) -> str:
    return json.dumps(_as_bytes(value).decode("utf-8", "replace"), ensure_ascii=False)


def _bytes_text(value: object) -> str:
    return '{"b64": "' + base64.b64encode(_as_bytes(value)).decode("ascii") + '"}'


def _leaf_writer(name: str, array: np.ndarray) -> Callable[[Any], str]:
    kind = array.dtype.kind
    if kind in "OSU":
        return _bytes_text if name.endswith("_bytes") else _string_text
    if kind == "b":
        return lambda v: "true" if v else "false"
    if kind in "iu":
        return str
    if array.dtype in (np.float32, np.float16):
        return _float32_text
    if array.dtype == np.float64:
        return _float64_text
    raise _invalid(f"Failed to write JSON value for tensor type: {array.dtype}")


def _tensor_json(array: Any, write: Callable[[Any], str]) -> str:
    if isinstance(array, np.generic):
        return write(array.item())
    if not isinstance(array, np.ndarray):  # an element of an object (string) array
        return write(array)
    if array.ndim == 0:
        return write(array.item())
    if array.ndim == 1:
        return "[" + ", ".join(write(v) for v in array.tolist()) + "]"
    return "[" + ", ".join(_tensor_json(sub, write) for sub in array) + "]"


def outputs_to_json(outputs: Mapping[str, np.ndarray], fmt: JsonFormat) -> str:
    """The response body: ``{"predictions": [...]}`` or ``{"outputs": ...}``."""
    if not outputs:
        raise _invalid("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    writers = {name: _leaf_writer(name, np.asarray(outputs[name])) for name in names}
    if fmt is JsonFormat.COLUMNAR:
        if len(names) == 1:
            body = _tensor_json(np.asarray(outputs[names[0]]), writers[names[0]])
        else:
            members = (
                f"{json.dumps(n)}: {_tensor_json(np.asarray(outputs[n]), writers[n])}"
                for n in names
            )
            body = "{" + ", ".join(members) + "}"
        return '{"outputs": ' + body + "}"

    batch = -1
    for name in names:
        shape = np.shape(outputs[name])
        if not shape:
            raise _invalid(f"Tensor name: {name} has no shape information ")
        if batch >= 0 and shape[0] != batch:
            raise _invalid(
                f"Tensor name: {name} has inconsistent batch size: {shape[0]} expecting: {batch}"
            )
        batch = shape[0]
    items = []
    for row in range(batch):
        if len(names) == 1:
            items.append(_tensor_json(outputs[names[0]][row], writers[names[0]]))
        else:
            members = (
                f"{json.dumps(n)}: {_tensor_json(outputs[n][row], writers[n])}" for n in names
            )
            items.append("{" + ", ".join(members) + "}")
    return '{"predictions": [' + ", ".join(items) + "]}"
