"""serving/predict.py: the validation both front ends share, and the run."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest
from tensorflow.core.framework import types_pb2

from serving import predict
from serving.errors import ServingError
from tests.serving.fake_version import FakeVersion, signature

SIG = signature(
    {"a": types_pb2.DT_FLOAT, "b": types_pb2.DT_FLOAT}, {"y": types_pb2.DT_FLOAT, "z": 1}
)


def error_of(function: object, *args: object, **kwargs: object) -> ServingError:
    with pytest.raises(ServingError) as info:
        function(*args, **kwargs)  # type: ignore[operator]
    return info.value


def test_signature_lookup_differs_between_grpc_and_rest() -> None:
    version = FakeVersion()
    assert predict.find_signature(version, "") is version.signature_defs["serving_default"]
    grpc_error = error_of(predict.find_signature, version, "other")
    assert grpc_error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert grpc_error.message == 'Serving signature key "other" not found.'
    rest_error = error_of(predict.find_signature, version, "other", rest=True)
    assert rest_error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert rest_error.message == 'Serving signature name: "other" not found in signature def'


def test_input_set_mismatch_message() -> None:
    error = error_of(predict.check_inputs, SIG, ["a", "c", "d"])
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.message == (
        "input size does not match signature: 3!=2 len({a,c,d}) != len({a,b}). "
        "Sent extra: {c,d}. Missing but required: {b}."
    )
    assert error_of(predict.check_inputs, SIG, ["a"]).message.endswith(
        "Sent extra: {}. Missing but required: {b}."
    )
    predict.check_inputs(SIG, ["b", "a"])


def test_missing_inputs_with_defaults_pass() -> None:
    with_default = signature(
        {"a": types_pb2.DT_FLOAT, "b": types_pb2.DT_FLOAT}, {"y": 1}, defaults=["b"]
    )
    predict.check_inputs(with_default, ["a"])


def test_output_filter() -> None:
    assert predict.check_output_filter(SIG, []) == ("y", "z")
    assert predict.check_output_filter(SIG, ["z"]) == ("z",)
    assert error_of(predict.check_output_filter, SIG, ["w"]).message == (
        "output tensor alias not found in signature: w Outputs expected to be in the set {y,z}."
    )
    assert error_of(predict.check_output_filter, SIG, ["y", "y"]).message == (
        "duplicate output tensor alias: y"
    )


async def test_run_goes_to_a_worker_thread() -> None:
    version = FakeVersion()
    call = predict.Call("serving_default", {"x": np.array([1.0, 2.0], np.float32)}, ("y",))
    result = await predict.run(version, call)
    assert result.outputs["y"].tolist() == [2.0, 4.0]
    assert result.runtime_micros >= 0


async def test_run_timeout_is_deadline_exceeded_and_keeps_the_version_held() -> None:
    version = FakeVersion()
    version.gate.clear()
    call = predict.Call("serving_default", {"x": np.array([1.0], np.float32)}, ("y",))
    with version.in_flight():
        with pytest.raises(ServingError) as info:
            await predict.run(version, call, run_timeout=0.05)
    assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    # TensorFlow is still running: the version must not be unloaded under it.
    assert version.holds == 1
    version.gate.set()
    for _ in range(3000):
        if version.holds == 0:
            break
        await asyncio.sleep(0.001)
    assert version.holds == 0
