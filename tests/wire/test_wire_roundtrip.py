"""Bytes from the official stubs parse with ours and the reverse, losslessly.

Each builder takes a module namespace (``ours`` or ``official``) and builds the
same message with it. A round trip is checked both ways: the parsed message
must equal the one built directly with the receiving set (upb's equality also
compares unknown fields, so a field we failed to declare shows up here), and
both sets must serialise it to the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from google.protobuf import wrappers_pb2
from google.protobuf.message import Message
from tensorflow import make_ndarray
from tensorflow.core.framework import tensor_pb2 as official_tensor_pb2

Builder = Callable[[SimpleNamespace], Message]

# dtype -> (typed field, values, numpy dtype for tensor_content). Values are
# chosen to hit each type's edges; floats are exact in float32 where needed.
TYPED_VALUES: dict[str, tuple[str, list[Any], str]] = {
    "DT_FLOAT": ("float_val", [1.5, -0.0, 3.4028234663852886e38, float("inf")], "<f4"),
    "DT_DOUBLE": ("double_val", [0.1, -1e308, 5e-324, float("-inf")], "<f8"),
    "DT_INT32": ("int_val", [-(2**31), 0, 2**31 - 1, 7], "<i4"),
    "DT_INT64": ("int64_val", [-(2**63), 0, 2**63 - 1, 1], "<i8"),
    "DT_BOOL": ("bool_val", [True, False, False, True], "?"),
    "DT_UINT32": ("uint32_val", [0, 1, 2**31, 2**32 - 1], "<u4"),
    "DT_UINT64": ("uint64_val", [0, 1, 2**63, 2**64 - 1], "<u8"),
    # half_val holds the IEEE binary16 bit patterns: 1.0, -2.0, +inf, -0.0.
    "DT_HALF": ("half_val", [0x3C00, 0xC000, 0x7C00, 0x8000], "<f2"),
}
# Not UTF-8 on purpose: DT_STRING carries arbitrary bytes.
STRINGS = [b"", "h\u00e9llo".encode(), b"\xff\xfe\x00\x80", b"x" * 300]


def _expected_array(dtype: str) -> np.ndarray:
    field, values, np_dtype = TYPED_VALUES[dtype]
    if field == "half_val":
        return np.array(values, dtype="<u2").view("<f2")
    return np.array(values, dtype=np_dtype)


def typed_tensor(m: SimpleNamespace, dtype: str) -> Message:
    field, values, _ = TYPED_VALUES[dtype]
    tensor = m.tensor_pb2.TensorProto(dtype=m.types_pb2.DataType.Value(dtype))
    tensor.tensor_shape.dim.add(size=2, name="batch")
    tensor.tensor_shape.dim.add(size=2)
    getattr(tensor, field).extend(values)
    return tensor


def content_tensor(m: SimpleNamespace, dtype: str) -> Message:
    array = _expected_array(dtype).reshape(2, 2)
    if dtype in {"DT_FLOAT", "DT_DOUBLE"}:
        array[1, 0] = np.nan  # only in tensor_content: NaN != NaN would fail equality
    tensor = m.tensor_pb2.TensorProto(
        dtype=m.types_pb2.DataType.Value(dtype), tensor_content=array.tobytes()
    )
    tensor.tensor_shape.dim.add(size=2)
    tensor.tensor_shape.dim.add(size=2)
    return tensor


def string_tensor(m: SimpleNamespace) -> Message:
    tensor = m.tensor_pb2.TensorProto(dtype=m.types_pb2.DT_STRING, string_val=STRINGS)
    tensor.tensor_shape.dim.add(size=len(STRINGS))
    return tensor


def predict_request(m: SimpleNamespace) -> Message:
    request = m.predict_pb2.PredictRequest(output_filter=["probability", "label"])
    request.model_spec.name = "fraud"
    # Set through the field: our Int64Value is the private pool's class.
    request.model_spec.version.value = 2
    request.model_spec.signature_name = "serving_default"
    for dtype in TYPED_VALUES:
        request.inputs[dtype.lower()].CopyFrom(typed_tensor(m, dtype))
        request.inputs[dtype.lower() + "_content"].CopyFrom(content_tensor(m, dtype))
    request.inputs["dt_string"].CopyFrom(string_tensor(m))
    scalar = request.inputs["scalar"]
    scalar.dtype = m.types_pb2.DT_FLOAT
    scalar.float_val.append(0.25)
    unknown_rank = request.inputs["unknown_rank"]
    unknown_rank.dtype = m.types_pb2.DT_INT64
    unknown_rank.tensor_shape.unknown_rank = True
    return request


def predict_request_by_label(m: SimpleNamespace) -> Message:
    spec = m.model_pb2.ModelSpec(name="fraud", version_label="canary")
    request = m.predict_pb2.PredictRequest(model_spec=spec)
    request.inputs["x"].CopyFrom(typed_tensor(m, "DT_FLOAT"))
    return request


def predict_response(m: SimpleNamespace) -> Message:
    response = m.predict_pb2.PredictResponse()
    response.model_spec.name = "fraud"
    response.model_spec.version.value = 2
    response.model_spec.signature_name = "serving_default"
    response.outputs["probability"].CopyFrom(typed_tensor(m, "DT_FLOAT"))
    response.outputs["label_bytes"].CopyFrom(string_tensor(m))
    response.outputs["half"].CopyFrom(typed_tensor(m, "DT_HALF"))
    return response


def signature_def_map(m: SimpleNamespace) -> Message:
    signatures = m.get_model_metadata_pb2.SignatureDefMap()
    signature = signatures.signature_def["serving_default"]
    signature.method_name = "tensorflow/serving/predict"
    x = signature.inputs["x"]
    x.name = "serving_default_x:0"
    x.dtype = m.types_pb2.DT_FLOAT
    x.tensor_shape.dim.add(size=-1)
    x.tensor_shape.dim.add(size=4)
    y = signature.outputs["probability"]
    y.name = "StatefulPartitionedCall:0"
    y.dtype = m.types_pb2.DT_FLOAT
    y.tensor_shape.unknown_rank = True
    signature.defaults["threshold"].CopyFrom(
        m.tensor_pb2.TensorProto(dtype=m.types_pb2.DT_FLOAT, float_val=[0.5])
    )
    signatures.signature_def["other"].method_name = "tensorflow/serving/classify"
    return signatures


def metadata_request(m: SimpleNamespace) -> Message:
    request = m.get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "fraud"
    return request


def metadata_response(m: SimpleNamespace) -> Message:
    response = m.get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = "fraud"
    response.model_spec.version.value = 2
    response.metadata["signature_def"].Pack(signature_def_map(m))
    return response


def status_request(m: SimpleNamespace) -> Message:
    request = m.get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "fraud"
    request.model_spec.version.value = 1
    return request


def status_response(m: SimpleNamespace) -> Message:
    state = m.get_model_status_pb2.ModelVersionStatus.State
    response = m.get_model_status_pb2.GetModelStatusResponse()
    response.model_version_status.add(version=2, state=state.Value("AVAILABLE"))
    failed = response.model_version_status.add(version=1, state=state.Value("END"))
    failed.status.error_code = m.error_codes_pb2.Code.Value("NOT_FOUND")
    failed.status.error_message = "Could not find version 1 of model fraud"
    response.model_version_status.add(version=3, state=state.Value("LOADING"))
    return response


def reload_request(m: SimpleNamespace) -> Message:
    policy_type = m.file_system_storage_path_source_pb2.FileSystemStoragePathSourceConfig
    policy = policy_type.ServableVersionPolicy
    config_list = m.model_server_config_pb2.ModelConfigList()
    config_list.config.add(
        name="fraud",
        base_path="/models/fraud",
        model_platform="tensorflow",
        model_version_policy=policy(specific=policy.Specific(versions=[1, 2])),
        version_labels={"stable": 1, "canary": 2},
    )
    config_list.config.add(
        name="latest",
        base_path="/models/latest",
        model_platform="tensorflow",
        model_version_policy=policy(latest=policy.Latest(num_versions=2)),
    )
    config_list.config.add(
        name="all",
        base_path="/models/all",
        model_platform="tensorflow",
        model_version_policy=policy(all=policy.All()),
    )
    config_list.config.add(name="default_policy", base_path="/models/default")
    request = m.model_management_pb2.ReloadConfigRequest()
    request.config.model_config_list.CopyFrom(config_list)
    return request


def reload_response(m: SimpleNamespace) -> Message:
    response = m.model_management_pb2.ReloadConfigResponse()
    response.status.error_code = m.error_codes_pb2.Code.Value("INVALID_ARGUMENT")
    response.status.error_message = "Illegal to list model fraud multiple times in config list"
    return response


BUILDERS: list[Builder] = [
    predict_request,
    predict_request_by_label,
    predict_response,
    signature_def_map,
    metadata_request,
    metadata_response,
    status_request,
    status_response,
    reload_request,
    reload_response,
]


def _both(build: Builder, ours: SimpleNamespace, official: SimpleNamespace) -> tuple[Any, Any]:
    our_message, their_message = build(ours), build(official)
    assert our_message.DESCRIPTOR.full_name == their_message.DESCRIPTOR.full_name
    assert our_message.ByteSize() > 0
    return our_message, their_message


@pytest.mark.parametrize("build", BUILDERS, ids=lambda b: b.__name__)
def test_official_to_ours(build: Builder, ours: SimpleNamespace, official: SimpleNamespace) -> None:
    our_message, their_message = _both(build, ours, official)
    parsed = type(our_message).FromString(their_message.SerializeToString())
    assert parsed == our_message
    assert parsed.SerializeToString(deterministic=True) == their_message.SerializeToString(
        deterministic=True
    )


@pytest.mark.parametrize("build", BUILDERS, ids=lambda b: b.__name__)
def test_ours_to_official(build: Builder, ours: SimpleNamespace, official: SimpleNamespace) -> None:
    our_message, their_message = _both(build, ours, official)
    parsed = type(their_message).FromString(our_message.SerializeToString())
    assert parsed == their_message
    assert parsed.SerializeToString(deterministic=True) == our_message.SerializeToString(
        deterministic=True
    )


# DT_STRING only in string_val: the bridge never puts strings in tensor_content.
ENCODINGS = [
    *((dtype, "typed") for dtype in TYPED_VALUES),
    *((dtype, "content") for dtype in TYPED_VALUES),
    ("DT_STRING", "typed"),
]


@pytest.mark.parametrize(("dtype", "encoding"), ENCODINGS)
def test_tensorflow_reads_our_tensors(dtype: str, encoding: str, ours: SimpleNamespace) -> None:
    """The values mean to TensorFlow what we meant, not just the same bytes."""
    if dtype == "DT_STRING":
        tensor, expected = string_tensor(ours), np.array(STRINGS, dtype=object)
    elif encoding == "typed":
        tensor, expected = typed_tensor(ours, dtype), _expected_array(dtype).reshape(2, 2)
    else:
        tensor = content_tensor(ours, dtype)
        expected = np.frombuffer(tensor.tensor_content, dtype=TYPED_VALUES[dtype][2]).reshape(2, 2)
    array = make_ndarray(official_tensor_pb2.TensorProto.FromString(tensor.SerializeToString()))
    assert array.shape == expected.shape
    assert array.dtype == expected.dtype
    np.testing.assert_array_equal(array, expected)


def test_any_packed_by_official_unpacks_with_ours(
    ours: SimpleNamespace, official: SimpleNamespace
) -> None:
    theirs = metadata_response(official)
    parsed = ours.get_model_metadata_pb2.GetModelMetadataResponse.FromString(
        theirs.SerializeToString()
    )
    packed = parsed.metadata["signature_def"]
    assert packed.Is(ours.get_model_metadata_pb2.SignatureDefMap.DESCRIPTOR)
    assert not packed.Is(ours.tensor_pb2.TensorProto.DESCRIPTOR)
    signatures = ours.get_model_metadata_pb2.SignatureDefMap()
    assert packed.Unpack(signatures)
    assert signatures == signature_def_map(ours)
    x = signatures.signature_def["serving_default"].inputs["x"]
    assert [d.size for d in x.tensor_shape.dim] == [-1, 4]


def test_any_packed_by_ours_unpacks_with_official(
    ours: SimpleNamespace, official: SimpleNamespace
) -> None:
    mine = metadata_response(ours)
    assert mine.metadata["signature_def"].type_url == (
        "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    )
    parsed = official.get_model_metadata_pb2.GetModelMetadataResponse.FromString(
        mine.SerializeToString()
    )
    signatures = official.get_model_metadata_pb2.SignatureDefMap()
    assert parsed.metadata["signature_def"].Unpack(signatures)
    assert signatures == signature_def_map(official)


def test_our_any_packs_messages_of_any_pool(ours: SimpleNamespace) -> None:
    response = ours.get_model_metadata_pb2.GetModelMetadataResponse()
    response.metadata["wrapped"].Pack(wrappers_pb2.Int64Value(value=7))
    unpacked = wrappers_pb2.Int64Value()
    assert response.metadata["wrapped"].Unpack(unpacked)
    assert unpacked.value == 7


def test_well_known_types_of_the_default_pool_are_rejected(ours: SimpleNamespace) -> None:
    # Documented in bridge.wire: the stubs allow this, the runtime does not.
    with pytest.raises(TypeError, match=r"bridge\.wire\._pool\.Int64Value"):
        ours.model_pb2.ModelSpec(name="fraud", version=wrappers_pb2.Int64Value(value=1))
    spec = ours.model_pb2.ModelSpec(name="fraud")
    spec.version.value = 1
    assert spec.WhichOneof("version_choice") == "version"


def test_version_policy_oneof(ours: SimpleNamespace) -> None:
    configs = reload_request(ours).config.model_config_list.config
    chosen = [c.model_version_policy.WhichOneof("policy_choice") for c in configs]
    assert chosen == ["specific", "latest", "all", None]
    assert dict(configs[0].version_labels) == {"stable": 1, "canary": 2}
