"""Every name and number we declare matches the official descriptors.

The ``official`` fixture imports the reference client's modules, which put
upstream's descriptors into protobuf's default pool; ours live in
``bridge.wire.POOL``. Each of our types is looked up in the default pool by its
full name and compared field by field.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from google.protobuf import descriptor_pool
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


@pytest.mark.parametrize("file", OUR_FILES, ids=lambda f: f.name)
def test_packages_are_upstreams(file: FileDescriptor) -> None:
    # The package is part of every full name and of the gRPC paths.
    assert file.package in {"tensorflow", "tensorflow.error", "tensorflow.serving"}
    assert file.pool is POOL


@pytest.mark.parametrize("ours", OUR_MESSAGES, ids=_full_name)
def test_message_matches_upstream(
    ours: Descriptor, upstream: descriptor_pool.DescriptorPool
) -> None:
    theirs = upstream.FindMessageTypeByName(ours.full_name)
    assert theirs.file.name != ours.file.name  # really the official one, not ours
    assert ours.GetOptions().map_entry == theirs.GetOptions().map_entry
    for field in ours.fields:
        assert field.name in theirs.fields_by_name, f"{field.full_name} is not upstream"
        assert _field_facts(field) == _field_facts(theirs.fields_by_name[field.name])


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
