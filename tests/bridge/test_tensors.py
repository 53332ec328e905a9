"""Instances -> request tensors -> response tensors -> per-event outputs, without sockets."""

from __future__ import annotations

from bridge.pipeline.instances import InstanceBuilder
from bridge.serving.tensors import decode_tensor, encode_inputs, split_outputs
from bridge.wire import tensor_pb2, types_pb2

from .signatures import FRAUD, fraud_event


def test_inputs_are_stacked_along_a_new_first_dimension() -> None:
    builder = InstanceBuilder(FRAUD)
    events = [fraud_event(amount=1.5, pca=[0.25] * 28), fraud_event(amount=2.5, pca=[-1] * 28)]
    tensors = encode_inputs(FRAUD, [builder.build(e) for e in events])
    amounts, shape = decode_tensor(tensors["amount"])
    assert (amounts, shape) == ([1.5, 2.5], (2,))
    pca, shape = decode_tensor(tensors["pca"])
    assert shape == (2, 28)
    assert pca == [0.25] * 28 + [-1.0] * 28


def test_one_number_per_instance_is_split_back_in_order() -> None:
    outputs = {"p": ([0.125, 0.5, 0.75], (3,)), "flagged": ([False, True, True], (3,))}
    assert split_outputs(outputs, 3) == [
        {"p": 0.125, "flagged": False},
        {"p": 0.5, "flagged": True},
        {"p": 0.75, "flagged": True},
    ]


def test_inner_dimensions_are_nested_per_instance() -> None:
    outputs = {"scores": ([1, 2, 3, 4, 5, 6, 7, 8], (2, 2, 2))}
    assert split_outputs(outputs, 2) == [
        {"scores": [[1, 2], [3, 4]]},
        {"scores": [[5, 6], [7, 8]]},
    ]


def test_string_outputs_are_text_or_base64() -> None:
    outputs = {"label": ([b"fraud", b"\xff\x00"], (2,))}
    assert split_outputs(outputs, 2) == [{"label": "fraud"}, {"label": {"b64": "/wA="}}]


def test_an_output_without_the_batch_dimension_goes_to_every_instance() -> None:
    outputs = {"threshold": ([0.5], ()), "p": ([0.1, 0.9], (2,))}
    assert split_outputs(outputs, 2) == [
        {"threshold": 0.5, "p": 0.1},
        {"threshold": 0.5, "p": 0.9},
    ]


def test_repeated_trailing_values_are_expanded() -> None:
    # TF Serving may write a run of equal trailing values once in the *_val fields.
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[0.5, 0.25])
    for size in (2, 3):
        tensor.tensor_shape.dim.add(size=size)
    assert decode_tensor(tensor) == ([0.5, 0.25, 0.25, 0.25, 0.25, 0.25], (2, 3))
