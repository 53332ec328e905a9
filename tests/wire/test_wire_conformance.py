"""Every name and number we declare matches the official descriptors.

The ``official`` fixture imports the reference client's modules, which put
upstream's descriptors into protobuf's default pool; ours live in
``bridge.wire.POOL``. Each of our types is looked up in the default pool by its
full name and compared field by field.

Two upstream files have no module in ``tensorflow-serving-api`` 2.21 (the
local model server reads its config files with them). For their messages the
comparison is with ``TRANSCRIBED``: upstream's declarations written down as
descriptors, apart from ``proto/``, so a slip in one shows up against the other.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    text_format,
    unknown_fields,
    wrappers_pb2,
)
from google.protobuf.descriptor import (
    Descriptor,
    EnumDescriptor,
    FieldDescriptor,
    FileDescriptor,
    ServiceDescriptor,
)

from bridge.wire import POOL

PROTO_DIR = Path(__file__).resolve().parents[2] / "proto" / "bridge" / "wire"
# One generated module per .proto source; importing it adds its file to POOL.
OUR_FILES: list[FileDescriptor] = [
    importlib.import_module(f"bridge.wire.{path.stem}_pb2").DESCRIPTOR
    for path in sorted(PROTO_DIR.glob("*.proto"))
]


def _nested(descriptor: Descriptor) -> Iterator[Descriptor]:
    yield descriptor
    for nested in descriptor.nested_types:
        yield from _nested(nested)


OUR_MESSAGES: list[Descriptor] = [
    message
    for file in OUR_FILES
    for top in file.message_types_by_name.values()
    for message in _nested(top)
]
OUR_ENUMS: list[EnumDescriptor] = [
    *(enum for file in OUR_FILES for enum in file.enum_types_by_name.values()),
    *(enum for message in OUR_MESSAGES for enum in message.enum_types),
]
OUR_SERVICES: list[ServiceDescriptor] = [
    service for file in OUR_FILES for service in file.services_by_name.values()
]


def _full_name(descriptor: Descriptor | EnumDescriptor | ServiceDescriptor) -> str:
    return descriptor.full_name


def _field_facts(field: FieldDescriptor) -> dict[str, Any]:
    """What a field means on the wire and in JSON, whichever pool it lives in."""
    return {
        "number": field.number,
        "type": field.type,
        "repeated": field.is_repeated,
        "required": field.is_required,
        "packed": field.is_packed,
        "presence": field.has_presence,
        "json_name": field.json_name,
        "message_type": field.message_type.full_name if field.message_type else None,
        "enum_type": field.enum_type.full_name if field.enum_type else None,
        "oneof": field.containing_oneof.name if field.containing_oneof else None,
    }


@pytest.fixture(scope="module")
def upstream(official: SimpleNamespace) -> descriptor_pool.DescriptorPool:
    return descriptor_pool.Default()


# From tensorflow/serving's sources: the names, numbers and types of
# tensorflow_serving/servables/tensorflow/session_bundle_config.proto
# (BatchingParameters, the fields 1-7 we declare; SessionBundleConfig left out)
# and of tensorflow_serving/config/monitoring_config.proto. Change it only from
# upstream's files, never to make a test pass.
TRANSCRIBED = [
    """
    name: "tensorflow_serving/servables/tensorflow/session_bundle_config.proto"
    package: "tensorflow.serving"
    syntax: "proto3"
    dependency: "google/protobuf/wrappers.proto"
    message_type {
      name: "BatchingParameters"
      field { name: "max_batch_size" number: 1 label: LABEL_OPTIONAL type: TYPE_MESSAGE
              type_name: ".google.protobuf.Int64Value" }
      field { name: "batch_timeout_micros" number: 2 label: LABEL_OPTIONAL type: TYPE_MESSAGE
              type_name: ".google.protobuf.Int64Value" }
      field { name: "max_enqueued_batches" number: 3 label: LABEL_OPTIONAL type: TYPE_MESSAGE
              type_name: ".google.protobuf.Int64Value" }
      field { name: "num_batch_threads" number: 4 label: LABEL_OPTIONAL type: TYPE_MESSAGE
              type_name: ".google.protobuf.Int64Value" }
      field { name: "thread_pool_name" number: 5 label: LABEL_OPTIONAL type: TYPE_MESSAGE
              type_name: ".google.protobuf.StringValue" }
      field { name: "allowed_batch_sizes" number: 6 label: LABEL_REPEATED type: TYPE_INT64 }
      field { name: "pad_variable_length_inputs" number: 7 label: LABEL_OPTIONAL
              type: TYPE_BOOL }
    }
    """,
    """
    name: "tensorflow_serving/config/monitoring_config.proto"
    package: "tensorflow.serving"
    syntax: "proto3"
    message_type {
      name: "PrometheusConfig"
      field { name: "enable" number: 1 label: LABEL_OPTIONAL type: TYPE_BOOL }
      field { name: "path" number: 2 label: LABEL_OPTIONAL type: TYPE_STRING }
    }
    message_type {
      name: "MonitoringConfig"
      field { name: "prometheus_config" number: 1 label: LABEL_OPTIONAL type: TYPE_MESSAGE
              type_name: ".tensorflow.serving.PrometheusConfig" }
    }
    """,
]
TRANSCRIBED_FILES = [
    text_format.Parse(text, descriptor_pb2.FileDescriptorProto()) for text in TRANSCRIBED
]
TRANSCRIBED_MESSAGES = {
    f"{file.package}.{message.name}" for file in TRANSCRIBED_FILES for message in file.message_type
}


@pytest.fixture(scope="module")
def transcribed() -> descriptor_pool.DescriptorPool:
    """TRANSCRIBED in a pool of its own, so it meets neither ours nor the official one."""
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    for file in TRANSCRIBED_FILES:
        pool.Add(file)
    return pool


def test_the_contract_is_not_empty() -> None:
    # Guards the parametrised tests below against passing over nothing.
    assert len(OUR_FILES) >= 15
    assert {"tensorflow.TensorProto", "tensorflow.serving.PredictRequest"} <= {
        m.full_name for m in OUR_MESSAGES
    }
    assert {e.full_name for e in OUR_ENUMS} == {
        "tensorflow.DataType",
        "tensorflow.error.Code",
        "tensorflow.serving.ModelVersionStatus.State",
    }
    assert [s.full_name for s in OUR_SERVICES] == [
        "tensorflow.serving.ModelService",
        "tensorflow.serving.PredictionService",
    ]
    # Every message of the transcribed files is one we declare, or it checks nothing.
    assert TRANSCRIBED_MESSAGES == {
        "tensorflow.serving.BatchingParameters",
        "tensorflow.serving.MonitoringConfig",
        "tensorflow.serving.PrometheusConfig",
    }
    assert TRANSCRIBED_MESSAGES <= {m.full_name for m in OUR_MESSAGES}


def test_transcribed_messages_are_not_in_the_official_package(
    upstream: descriptor_pool.DescriptorPool,
) -> None:
    # Once tensorflow-serving-api ships them, compare with its modules instead.
    for name in sorted(TRANSCRIBED_MESSAGES):
        with pytest.raises(KeyError):
            upstream.FindMessageTypeByName(name)


@pytest.mark.parametrize("file", OUR_FILES, ids=lambda f: f.name)
def test_packages_are_upstreams(file: FileDescriptor) -> None:
    # The package is part of every full name and of the gRPC paths.
    assert file.package in {"tensorflow", "tensorflow.error", "tensorflow.serving"}
    assert file.pool is POOL


@pytest.mark.parametrize("ours", OUR_MESSAGES, ids=_full_name)
def test_message_matches_upstream(
    ours: Descriptor,
    upstream: descriptor_pool.DescriptorPool,
    transcribed: descriptor_pool.DescriptorPool,
) -> None:
    pool = transcribed if ours.full_name in TRANSCRIBED_MESSAGES else upstream
    theirs = pool.FindMessageTypeByName(ours.full_name)
    assert theirs.file.name != ours.file.name  # really the official one, not ours
    assert ours.GetOptions().map_entry == theirs.GetOptions().map_entry
    for field in ours.fields:
        assert field.name in theirs.fields_by_name, f"{field.full_name} is not upstream"
        assert _field_facts(field) == _field_facts(theirs.fields_by_name[field.name])


def test_transcribed_messages_round_trip(transcribed: descriptor_pool.DescriptorPool) -> None:
    # Every field set on upstream's side, so a number or type we got wrong lands
    # in unknown fields or fails to parse.
    their_params = message_factory.GetMessageClass(
        transcribed.FindMessageTypeByName("tensorflow.serving.BatchingParameters")
    )()
    their_params.max_batch_size.value = 256
    their_params.batch_timeout_micros.value = 2000
    their_params.max_enqueued_batches.value = 8
    their_params.num_batch_threads.value = 2
    their_params.thread_pool_name.value = "batch"
    their_params.allowed_batch_sizes.extend([64, 256])
    their_params.pad_variable_length_inputs = True
    their_monitoring = message_factory.GetMessageClass(
        transcribed.FindMessageTypeByName("tensorflow.serving.MonitoringConfig")
    )()
    their_monitoring.prometheus_config.enable = True
    their_monitoring.prometheus_config.path = "/metrics"
    for theirs in (their_params, their_monitoring):
        data = theirs.SerializeToString()
        ours_class = message_factory.GetMessageClass(
            POOL.FindMessageTypeByName(theirs.DESCRIPTOR.full_name)
        )
        ours = ours_class.FromString(data)
        assert len(unknown_fields.UnknownFieldSet(ours)) == 0
        assert ours.SerializeToString() == data
        assert text_format.MessageToString(ours) == text_format.MessageToString(theirs)


@pytest.mark.parametrize("ours", OUR_ENUMS, ids=_full_name)
def test_enum_matches_upstream(
    ours: EnumDescriptor, upstream: descriptor_pool.DescriptorPool
) -> None:
    theirs = upstream.FindEnumTypeByName(ours.full_name)
    our_values = {v.name: v.number for v in ours.values}
    their_values = {v.name: v.number for v in theirs.values}
    # Complete, not just a subset: every value TF Serving 2.21 may send has a name here.
    assert our_values == their_values


@pytest.mark.parametrize("ours", OUR_SERVICES, ids=_full_name)
def test_service_methods_match_upstream(
    ours: ServiceDescriptor, upstream: descriptor_pool.DescriptorPool
) -> None:
    theirs = upstream.FindServiceByName(ours.full_name)
    assert ours.methods
    for method in ours.methods:
        their_method = theirs.methods_by_name[method.name]
        assert method.input_type.full_name == their_method.input_type.full_name
        assert method.output_type.full_name == their_method.output_type.full_name
        assert not method.client_streaming and not their_method.client_streaming
        assert not method.server_streaming and not their_method.server_streaming


class _RecordingChannel:
    """Stands in for grpc.Channel: records the paths a generated stub registers.

    The request serializer is the generic Message.SerializeToString, so only the
    response side names a type; the service descriptors are compared above.
    """

    def __init__(self) -> None:
        self.responses: dict[str, str] = {}

    def unary_unary(
        self, path: str, request_serializer: Any, response_deserializer: Any, **_: Any
    ) -> None:
        self.responses[path] = response_deserializer.__self__.DESCRIPTOR.full_name


EXPECTED_PATHS = {
    "PredictionServiceStub": {
        "/tensorflow.serving.PredictionService/Predict",
        "/tensorflow.serving.PredictionService/GetModelMetadata",
    },
    "ModelServiceStub": {
        "/tensorflow.serving.ModelService/GetModelStatus",
        "/tensorflow.serving.ModelService/HandleReloadConfigRequest",
    },
}


@pytest.mark.parametrize(
    ("module", "stub"),
    [
        ("prediction_service_pb2_grpc", "PredictionServiceStub"),
        ("model_service_pb2_grpc", "ModelServiceStub"),
    ],
)
def test_stub_paths_match_the_official_stub(
    module: str, stub: str, ours: SimpleNamespace, official: SimpleNamespace
) -> None:
    our_channel, their_channel = _RecordingChannel(), _RecordingChannel()
    getattr(getattr(ours, module), stub)(our_channel)
    getattr(getattr(official, module), stub)(their_channel)
    assert set(our_channel.responses) == EXPECTED_PATHS[stub]
    for path, response in our_channel.responses.items():
        assert their_channel.responses[path] == response
