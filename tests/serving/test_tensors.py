"""serving/tensors.py: TensorProto and REST JSON conversions, with TF Serving's messages."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

from serving.errors import ServingError
from serving.tensors import (
    JsonFormat,
    json_to_inputs,
    outputs_to_json,
    parse_json_object,
    signature_name_of,
    to_ndarray,
    to_tensor_proto,
)

FLOAT = types_pb2.DT_FLOAT
ONE_INPUT = {"x": FLOAT}
TWO_INPUTS = {"a": FLOAT, "b": types_pb2.DT_STRING}


def invalid(call: Any, *args: Any) -> str:
    with pytest.raises(ServingError) as info:
        call(*args)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    return info.value.message


def parse(body: str) -> dict[str, Any]:
    return parse_json_object(body.encode())


def inputs(body: str, dtypes: dict[str, int]) -> tuple[JsonFormat, dict[str, np.ndarray]]:
    return json_to_inputs(parse(body), dtypes, "")


# -- TensorProto ------------------------------------------------------------------


def test_tensor_proto_roundtrip_uses_typed_fields() -> None:
    array = np.array([[1.5, 2.0], [3.0, -4.0]], dtype=np.float32)
    proto = to_tensor_proto(array)
    assert proto.dtype == FLOAT
    assert list(proto.float_val) == [1.5, 2.0, 3.0, -4.0]
    assert not proto.tensor_content
    assert [d.size for d in proto.tensor_shape.dim] == [2, 2]
    np.testing.assert_array_equal(to_ndarray("x", proto), array)


@pytest.mark.parametrize(
    "array",
    [
        np.array([b"a", b"\x00\xff"], dtype=object),
        np.array([True, False]),
        np.array([1, 2], dtype=np.int64),
        np.array([7], dtype=np.uint8),
        np.array([0.5], dtype=np.float16),
        np.array(3.25, dtype=np.float64),
    ],
)
def test_tensor_proto_roundtrip_dtypes(array: np.ndarray) -> None:
    back = to_ndarray("x", to_tensor_proto(array))
    assert back.shape == array.shape
    assert back.tolist() == array.tolist()


def test_tensor_content_from_clients_is_read() -> None:
    proto = tf.make_tensor_proto(np.arange(6, dtype=np.float32).reshape(2, 3))
    assert proto.tensor_content
    np.testing.assert_array_equal(to_ndarray("x", proto), np.arange(6).reshape(2, 3))


@pytest.mark.parametrize(
    "proto",
    [
        tensor_pb2.TensorProto(dtype=types_pb2.DT_INVALID),
        # more values than the shape holds
        tensor_pb2.TensorProto(
            dtype=FLOAT, float_val=[1, 2, 3], tensor_shape={"dim": [{"size": 2}]}
        ),
        # tensor_content of the wrong length
        tensor_pb2.TensorProto(
            dtype=FLOAT, tensor_content=b"\x00" * 5, tensor_shape={"dim": [{"size": 2}]}
        ),
        tensor_pb2.TensorProto(dtype=FLOAT, tensor_shape={"dim": [{"size": -3}]}),
    ],
)
def test_bad_tensor_proto_is_tensor_parsing_error(proto: tensor_pb2.TensorProto) -> None:
    assert invalid(to_ndarray, "x", proto) == "tensor parsing error: x"


def test_fewer_values_repeat_the_last_like_tensorflow() -> None:
    proto = tensor_pb2.TensorProto(
        dtype=FLOAT, float_val=[1, 2], tensor_shape={"dim": [{"size": 4}]}
    )
    assert to_ndarray("x", proto).tolist() == [1, 2, 2, 2]


# -- JSON parsing ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("", "JSON Parse error: The document is empty"),
        ("   ", "JSON Parse error: The document is empty. at offset: 3"),
        ("{x}", "JSON Parse error: Missing a name for object member. at offset: 1"),
        ("nope", "JSON Parse error: Invalid value. at offset: 0"),
        ('{"a": }', "JSON Parse error: Invalid value. at offset: 6"),
        (
            '{"a" 1}',
            "JSON Parse error: Missing a colon after a name of object member. at offset: 5",
        ),
        (
            '{"a": 1 "b": 2}',
            "JSON Parse error: Missing a comma or '}' after an object member. at offset: 8",
        ),
        (
            '{"a": [1 2]}',
            "JSON Parse error: Missing a comma or ']' after an array element. at offset: 9",
        ),
        (
            "{} []",
            "JSON Parse error: The document root must not be followed by other values. "
            "at offset: 3",
        ),
        ('{"é": x}', "JSON Parse error: Invalid value. at offset: 7"),  # bytes, not chars
        ('{"a": "x', "JSON Parse error: Missing a closing quotation mark in string. at offset: 8"),
        ("[1, 2]", "JSON Value: [\n    1,\n    2\n] Is not object"),
    ],
)
def test_parse_errors_use_rapidjson_wording(body: str, message: str) -> None:
    assert invalid(parse_json_object, body.encode()) == message


def test_nan_and_infinity_are_accepted() -> None:
    _, arrays = inputs('{"instances": [NaN, Infinity, -Infinity]}', ONE_INPUT)
    values = arrays["x"].tolist()
    assert math.isnan(values[0])
    assert values[1:] == [math.inf, -math.inf]


def test_signature_name_must_be_a_string() -> None:
    assert signature_name_of(parse('{"signature_name": "s"}')) == "s"
    assert signature_name_of(parse("{}")) == ""
    message = invalid(signature_name_of, parse('{"signature_name": 1}'))
    assert message == (
        'JSON Value: {\n    "signature_name": 1\n} not formatted correctly. '
        "'signature_name' key must be a string value."
    )


# -- row format -------------------------------------------------------------------------


def test_row_format_single_input_batches_rows() -> None:
    fmt, arrays = inputs('{"instances": [[1, 2], [3.5, 4]]}', ONE_INPUT)
    assert fmt is JsonFormat.ROW
    assert arrays["x"].dtype == np.float32
    assert arrays["x"].tolist() == [[1, 2], [3.5, 4]]


def test_row_format_objects_for_several_inputs() -> None:
    body = '{"instances": [{"a": 1, "b": "x"}, {"a": 2, "b": {"b64": "AP8="}}]}'
    _, arrays = inputs(body, TWO_INPUTS)
    assert arrays["a"].tolist() == [1.0, 2.0]
    assert arrays["b"].tolist() == [b"x", b"\x00\xff"]


@pytest.mark.parametrize(
    ("body", "dtypes", "message"),
    [
        (
            '{"instances": [1, 2]}',
            TWO_INPUTS,
            "instances is a plain list, but expecting list of objects as multiple input "
            "tensors required as per tensorinfo_map",
        ),
        (
            '{"instances": [["x"]]}',
            ONE_INPUT,
            "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
            'JSON Value: "x" Type: String is not of expected type: float',
        ),
        (
            '{"instances": [[1, 2], [3]]}',
            ONE_INPUT,
            "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
            "Expecting tensor size: 2 but got: 1",
        ),
        (
            '{"instances": [[[1], [2]], [[1, 2]]]}',
            ONE_INPUT,
            "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
            "Expecting shape [2,1] but got: [1,2]",
        ),
        (
            '{"instances": [{"a": 1}]}',
            TWO_INPUTS,
            "Failed to process element: 0 of 'instances' list. JSON object: "
            '{\n    "a": 1\n} must only have keys: a,b',
        ),
        (
            '{"instances": [{"a": 1, "b": "x", "c": 1}]}',
            TWO_INPUTS,
            "Failed to process element: 0 key: c of 'instances' list. Error: "
            "INVALID_ARGUMENT: JSON object: does not have named input: c",
        ),
        (
            '{"instances": [{"a": 1, "b": "x"}, [1]]}',
            TWO_INPUTS,
            "Expecting object but got list at item 1 of input list",
        ),
        (
            '{"instances": [[1], {"x": [1]}]}',
            ONE_INPUT,
            "Expecting value/list but got object at item 1 of input list",
        ),
        (
            '{"instances": [16777217]}',
            ONE_INPUT,
            "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
            "Cannot convert JSON value: 16777217 to float without loss of precision.",
        ),
        (
            '{"instances": [1.5]}',
            {"x": types_pb2.DT_INT32},
            "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
            "JSON Value: 1.5 Type: Number is not of expected type: int32",
        ),
        (
            '{"instances": [{"b64": "AA=="}]}',
            ONE_INPUT,
            "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
            'JSON Value: {\n    "b64": "AA=="\n} Type: Object is not of expected type: float',
        ),
        (
            '{"instances": [{"b64": "!!"}]}',
            {"x": types_pb2.DT_STRING},
            "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
            "Unable to base64 decode",
        ),
        (
            '{"instances": [[1, [2]]]}',
            ONE_INPUT,
            "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
            "Encountered list at unexpected level: 1 expected < 1",
        ),
        (
            '{"instances": [[[1], 2]]}',
            ONE_INPUT,
            "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
            "JSON Value: 2 found at incorrect level: 2 in the JSON DOM. Expected at level: 2",
        ),
        (
            '{"instances": [true]}',
            ONE_INPUT,
            "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
            "JSON Value: true Type: True is not of expected type: float",
        ),
        (
            '{"instances": []}',
            ONE_INPUT,
            "JSON Value: {\n    \"instances\": []\n} No values in 'instances' array",
        ),
        (
            '{"instances": 1}',
            ONE_INPUT,
            "JSON Value: {\n    \"instances\": 1\n} Excepting 'instances' to be an list/array",
        ),
        ("{}", ONE_INPUT, "Missing 'inputs' or 'instances' key"),
        (
            '{"instances": [1], "inputs": [1]}',
            ONE_INPUT,
            'JSON Value: {\n    "instances": [\n        1\n    ],\n    "inputs": [\n        1\n'
            "    ]\n} Not formatted correctly expecting only one of 'inputs' or 'instances' "
            "keys to exist ",
        ),
    ],
)
def test_row_format_errors(body: str, dtypes: dict[str, int], message: str) -> None:
    assert invalid(inputs, body, dtypes) == message


def test_integer_types_and_bools() -> None:
    _, arrays = inputs('{"instances": [1, -2]}', {"x": types_pb2.DT_INT64})
    assert arrays["x"].dtype == np.int64
    _, arrays = inputs('{"instances": [true, false]}', {"x": types_pb2.DT_BOOL})
    assert arrays["x"].tolist() == [True, False]
    message = invalid(inputs, '{"instances": [-1]}', {"x": types_pb2.DT_UINT32})
    assert message.endswith("JSON Value: -1 Type: Number is not of expected type: uint32")


def test_unsupported_dtype_is_unimplemented() -> None:
    with pytest.raises(ServingError) as info:
        inputs('{"inputs": [1]}', {"x": types_pb2.DT_HALF})
    assert info.value.code == grpc.StatusCode.UNIMPLEMENTED
    assert info.value.message == "Conversion of JSON Value: 1 to type: half"


# -- columnar format -----------------------------------------------------------------------


def test_columnar_single_input_value_and_list() -> None:
    fmt, arrays = inputs('{"inputs": 2.5}', ONE_INPUT)
    assert fmt is JsonFormat.COLUMNAR
    assert arrays["x"].shape == ()
    _, arrays = inputs('{"inputs": [[1, 2]]}', ONE_INPUT)
    assert arrays["x"].shape == (1, 2)


def test_columnar_object_ignores_unknown_keys() -> None:
    _, arrays = inputs('{"inputs": {"a": [1], "b": ["s"], "other": 0}}', TWO_INPUTS)
    assert sorted(arrays) == ["a", "b"]
    _, arrays = inputs('{"inputs": {"b64": "AP8="}}', {"x": types_pb2.DT_STRING})
    assert arrays["x"].tolist() == b"\x00\xff"


@pytest.mark.parametrize(
    ("body", "dtypes", "message"),
    [
        ('{"inputs": {"a": [1]}}', TWO_INPUTS, "Missing named input: b in 'inputs' object."),
        (
            '{"inputs": [1]}',
            TWO_INPUTS,
            "inputs is a plain value/list, but expecting an object as multiple input tensors "
            "required as per tensorinfo_map",
        ),
        (
            '{"inputs": [[1, 2], [3]]}',
            ONE_INPUT,
            "Encountered list at unexpected size: 1 at level: 1 expected size: 2",
        ),
    ],
)
def test_columnar_errors(body: str, dtypes: dict[str, int], message: str) -> None:
    assert invalid(inputs, body, dtypes) == message


def test_empty_input_map_names_the_signature() -> None:
    message = invalid(json_to_inputs, parse('{"inputs": 1}'), {}, "")
    assert message == "Failed to get input map for signature: DEFAULT"


# -- responses ------------------------------------------------------------------------------


def test_row_response_single_output_is_plain_values() -> None:
    text = outputs_to_json({"y": np.array([[0.1, 2.0], [1e-5, 3e6]], np.float32)}, JsonFormat.ROW)
    assert text == '{"predictions": [[0.1, 2.0], [1e-05, 3e+06]]}'
    assert json.loads(text) == {"predictions": [[0.1, 2.0], [1e-05, 3e6]]}


def test_float_text_keeps_float32_precision() -> None:
    value = np.float32(math.pi)
    text = outputs_to_json({"y": np.array([value])}, JsonFormat.ROW)
    assert np.float32(json.loads(text)["predictions"][0]) == value


def test_row_response_several_outputs_are_objects() -> None:
    outputs = {
        "p": np.array([0.5, 1.0], np.float32),
        "flag": np.array([True, False]),
        "id_bytes": np.array([b"\x00", b"z"], dtype=object),
        "name": np.array([b"a", b"b"], dtype=object),
    }
    document = json.loads(outputs_to_json(outputs, JsonFormat.ROW))
    assert document == {
        "predictions": [
            {"flag": True, "id_bytes": {"b64": "AA=="}, "name": "a", "p": 0.5},
            {
                "flag": False,
                "id_bytes": {"b64": base64.b64encode(b"z").decode()},
                "name": "b",
                "p": 1.0,
            },
        ]
    }


def test_columnar_response() -> None:
    single = outputs_to_json({"y": np.array([1, 2], np.int64)}, JsonFormat.COLUMNAR)
    assert json.loads(single) == {"outputs": [1, 2]}
    several = outputs_to_json(
        {"y": np.array(7, np.int32), "z": np.array([math.nan], np.float64)}, JsonFormat.COLUMNAR
    )
    assert several == '{"outputs": {"y": 7, "z": [NaN]}}'


def test_row_response_errors() -> None:
    outputs = {"a": np.zeros(2, np.float32), "b": np.zeros(3, np.float32)}
    assert invalid(outputs_to_json, outputs, JsonFormat.ROW) == (
        "Tensor name: b has inconsistent batch size: 3 expecting: 2"
    )
    scalar = {"a": np.float32(1)}
    assert invalid(outputs_to_json, scalar, JsonFormat.ROW) == (
        "Tensor name: a has no shape information "
    )
