"""The gRPC API of ``python -m serving``, driven with the official stubs.

One server per session (``api_server``): ``toy`` (y = x * version; versions 1 and 2,
labels stable=1 and canary=2) and ``multi`` (three inputs of different dtypes).
Covers the rows of the reference's gRPC error table that a client can provoke, and
the model_spec echo rules.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from tests.serving.server_process import ServerProcess, api_server  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration

TIMEOUT = 30


@pytest.fixture(scope="module")
def channel(api_server: ServerProcess) -> Iterator[grpc.Channel]:  # noqa: F811
    # The client's receive limit is 4 MB by default; the large-message test needs more.
    options = [("grpc.max_receive_message_length", 64 * 2**20)]
    with grpc.insecure_channel(api_server.grpc_target, options=options) as channel:
        yield channel


@pytest.fixture(scope="module")
def predictions(channel: grpc.Channel) -> prediction_service_pb2_grpc.PredictionServiceStub:
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def models(channel: grpc.Channel) -> model_service_pb2_grpc.ModelServiceStub:
    return model_service_pb2_grpc.ModelServiceStub(channel)


def toy_request(*values: float, **spec: object) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "toy"
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = value  # type: ignore[assignment]
        else:
            setattr(request.model_spec, key, value)
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array(values, np.float32)))
    return request


def rpc_error(call: Callable[..., object], request: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=TIMEOUT)
    return info.value


# -- Predict --------------------------------------------------------------------------


def test_predict_serves_the_latest_version_and_echoes_it(
    predictions: prediction_service_pb2_grpc.PredictionServiceStub,
) -> None:
    response = predictions.Predict(toy_request(1.5, -2), timeout=TIMEOUT)
    assert tf.make_ndarray(response.outputs["y"]).tolist() == [3.0, -4.0]
    assert response.model_spec.name == "toy"
    assert response.model_spec.version.value == 2
    assert response.model_spec.signature_name == "serving_default"  # "" replaced
    # TF Serving's own encoding: typed fields, not tensor_content
    assert list(response.outputs["y"].float_val) == [3.0, -4.0]


def test_predict_by_version_and_label_never_echoes_the_label(
    predictions: prediction_service_pb2_grpc.PredictionServiceStub,
) -> None:
    by_version = predictions.Predict(toy_request(1, version=1), timeout=TIMEOUT)
    assert tf.make_ndarray(by_version.outputs["y"]).tolist() == [1.0]
    by_label = predictions.Predict(toy_request(1, version_label="stable"), timeout=TIMEOUT)
    assert by_label.model_spec.version.value == 1
    assert by_label.model_spec.WhichOneof("version_choice") == "version"
    canary = predictions.Predict(toy_request(1, version_label="canary"), timeout=TIMEOUT)
    assert tf.make_ndarray(canary.outputs["y"]).tolist() == [2.0]


def test_predict_other_signature(
    predictions: prediction_service_pb2_grpc.PredictionServiceStub,
) -> None:
    response = predictions.Predict(toy_request(3, signature_name="negate"), timeout=TIMEOUT)
    assert tf.make_ndarray(response.outputs["y"]).tolist() == [-6.0]
    assert response.model_spec.signature_name == "negate"


def test_predict_several_dtypes_and_output_filter(
    predictions: prediction_service_pb2_grpc.PredictionServiceStub,
) -> None:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "multi"
    request.inputs["a"].CopyFrom(tf.make_tensor_proto(np.array([[1, 1]], np.float32)))
    request.inputs["n"].CopyFrom(tf.make_tensor_proto(np.array([5], np.int64)))
    request.inputs["s"].CopyFrom(tf.make_tensor_proto(np.array([b"abc"])))
    response = predictions.Predict(request, timeout=TIMEOUT)
    assert sorted(response.outputs) == ["n_plus_version", "score", "shout"]
    assert tf.make_ndarray(response.outputs["score"]).tolist() == [3.0]
    assert tf.make_ndarray(response.outputs["n_plus_version"]).tolist() == [6]
    assert list(response.outputs["shout"].string_val) == [b"ABC"]
    request.output_filter.append("shout")
    filtered = predictions.Predict(request, timeout=TIMEOUT)
    assert list(filtered.outputs) == ["shout"]


def test_large_request_is_accepted(
    predictions: prediction_service_pb2_grpc.PredictionServiceStub,
) -> None:
    values = np.arange(2_000_000, dtype=np.float32)  # 8 MB on the wire, twice gRPC's 4 MB
    request = toy_request(version=1)
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(values))
    assert request.ByteSize() > 4 * 2**20
    response = predictions.Predict(request, timeout=120)
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs["y"]), values)


def _without_spec(request: predict_pb2.PredictRequest) -> None:
    request.ClearField("model_spec")


def _extra_input(request: predict_pb2.PredictRequest) -> None:
    request.inputs["extra"].CopyFrom(request.inputs["x"])


def _bad_tensor(request: predict_pb2.PredictRequest) -> None:
    request.inputs["x"].tensor_content = b"\x00" * 3


def _string_input(request: predict_pb2.PredictRequest) -> None:
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([b"a"])))


@pytest.mark.parametrize(
    ("change", "code", "message"),
    [
        (_without_spec, grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec"),
        ({"name": ""}, grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name specified."),
        (
            {"name": "nope"},
            grpc.StatusCode.NOT_FOUND,
            "Servable not found for request: Latest(nope)",
        ),
        (
            {"version": 3},
            grpc.StatusCode.NOT_FOUND,
            "Servable not found for request: Specific(toy, 3)",
        ),
        (
            {"version_label": "beta"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "Unrecognized servable version label: beta",
        ),
        (
            {"signature_name": "nope"},
            grpc.StatusCode.FAILED_PRECONDITION,
            'Serving signature key "nope" not found.',
        ),
        (
            _extra_input,
            grpc.StatusCode.INVALID_ARGUMENT,
            "input size does not match signature: 2!=1 len({extra,x}) != len({x}). "
            "Sent extra: {extra}. Missing but required: {}.",
        ),
        (_bad_tensor, grpc.StatusCode.INVALID_ARGUMENT, "tensor parsing error: x"),
        (
            _string_input,
            grpc.StatusCode.INVALID_ARGUMENT,
            "Expects arg[0] to be float but string is provided",
        ),
        (
            lambda request: request.output_filter.append("w"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "output tensor alias not found in signature: w Outputs expected to be in the set {y}.",
        ),
    ],
)
def test_predict_errors(
    predictions: prediction_service_pb2_grpc.PredictionServiceStub,
    change: object,
    code: grpc.StatusCode,
    message: str,
) -> None:
    request = toy_request(1.0)
    if isinstance(change, dict):
        for key, value in change.items():
            if key == "version":
                request.model_spec.version.value = value
            else:
                setattr(request.model_spec, key, value)
    else:
        change(request)  # type: ignore[operator]
    error = rpc_error(predictions.Predict, request)
    assert (error.code(), error.details()) == (code, message)


def test_runtime_errors_come_from_tensorflow(
    predictions: prediction_service_pb2_grpc.PredictionServiceStub,
) -> None:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "multi"
    request.inputs["a"].CopyFrom(tf.make_tensor_proto(np.ones((1, 3), np.float32)))  # not 2
    request.inputs["n"].CopyFrom(tf.make_tensor_proto(np.array([5], np.int64)))
    request.inputs["s"].CopyFrom(tf.make_tensor_proto(np.array([b"x"])))
    error = rpc_error(predictions.Predict, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Matrix size-incompatible" in (error.details() or "")


def test_classify_regress_and_multi_inference_are_unimplemented(
    predictions: prediction_service_pb2_grpc.PredictionServiceStub,
) -> None:
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "toy"
    assert rpc_error(predictions.Classify, request).code() == grpc.StatusCode.UNIMPLEMENTED
    request.model_spec.signature_name = "nope"
    error = rpc_error(predictions.Regress, request)
    assert (error.code(), error.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "No signature was found with the name: nope",
    )
    request.model_spec.name = "nope"
    assert rpc_error(predictions.Classify, request).code() == grpc.StatusCode.NOT_FOUND


# -- GetModelMetadata -------------------------------------------------------------------


def metadata_request(
    *fields: str, **spec: object
) -> get_model_metadata_pb2.GetModelMetadataRequest:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=list(fields))
    request.model_spec.name = "toy"
    for key, value in spec.items():
        setattr(request.model_spec, key, value)
    return request


def test_metadata_has_name_and_version_only_and_the_signature_map(
    predictions: prediction_service_pb2_grpc.PredictionServiceStub,
) -> None:
    request = metadata_request("signature_def", version_label="stable", signature_name="negate")
    response = predictions.GetModelMetadata(request, timeout=TIMEOUT)
    assert response.model_spec.name == "toy"
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == ""
    assert list(response.metadata) == ["signature_def"]
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    assert {"serving_default", "negate"} <= set(signatures.signature_def)
    x = signatures.signature_def["serving_default"].inputs["x"]
    assert x.dtype == tf.float32.as_datatype_enum
    assert [d.size for d in x.tensor_shape.dim] == [-1]


@pytest.mark.parametrize(
    ("request_", "code", "message"),
    [
        (
            get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Missing ModelSpec",
        ),
        (
            metadata_request(),
            grpc.StatusCode.INVALID_ARGUMENT,
            "GetModelMetadataRequest must specify at least one metadata_field",
        ),
        (
            metadata_request("signature_def", "labels"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Metadata field labels is not supported",
        ),
        (
            metadata_request("signature_def", name="nope"),
            grpc.StatusCode.NOT_FOUND,
            "Servable not found for request: Latest(nope)",
        ),
    ],
)
def test_metadata_errors(
    predictions: prediction_service_pb2_grpc.PredictionServiceStub,
    request_: get_model_metadata_pb2.GetModelMetadataRequest,
    code: grpc.StatusCode,
    message: str,
) -> None:
    error = rpc_error(predictions.GetModelMetadata, request_)
    assert (error.code(), error.details()) == (code, message)


# -- GetModelStatus ----------------------------------------------------------------------


def status_request(name: str, version: int | None = None, label: str = "") -> object:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    if label:
        request.model_spec.version_label = label
    return request


def test_status_lists_versions_highest_first_and_ignores_labels(
    models: model_service_pb2_grpc.ModelServiceStub,
) -> None:
    for request in (status_request("toy"), status_request("toy", label="stable")):
        response = models.GetModelStatus(request, timeout=TIMEOUT)
        assert [(s.version, s.state) for s in response.model_version_status] == [
            (2, get_model_status_pb2.ModelVersionStatus.AVAILABLE),
            (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE),
        ]
        assert all(s.status.error_code == 0 for s in response.model_version_status)
    one = models.GetModelStatus(status_request("toy", 1), timeout=TIMEOUT)
    assert [s.version for s in one.model_version_status] == [1]


@pytest.mark.parametrize(
    ("request_", "code", "message"),
    [
        (
            get_model_status_pb2.GetModelStatusRequest(),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Missing ModelSpec",
        ),
        (
            status_request("nope"),
            grpc.StatusCode.NOT_FOUND,
            "Could not find any versions of model nope",
        ),
        (
            status_request("toy", 3),
            grpc.StatusCode.NOT_FOUND,
            "Could not find version 3 of model toy",
        ),
    ],
)
def test_status_errors(
    models: model_service_pb2_grpc.ModelServiceStub,
    request_: object,
    code: grpc.StatusCode,
    message: str,
) -> None:
    error = rpc_error(models.GetModelStatus, request_)
    assert (error.code(), error.details()) == (code, message)


# -- health ----------------------------------------------------------------------------------


@pytest.mark.parametrize("service", ["", "ModelService", "PredictionService"])
def test_health_service_reports_serving(channel: grpc.Channel, service: str) -> None:
    health_pb2 = pytest.importorskip("grpc_health.v1.health_pb2")
    health_pb2_grpc = pytest.importorskip("grpc_health.v1.health_pb2_grpc")
    stub = health_pb2_grpc.HealthStub(channel)
    response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT)
    assert response.status == health_pb2.HealthCheckResponse.SERVING
