"""Our generated modules and the official ones, side by side.

Test builders take a namespace of modules and use it like ``m.predict_pb2``, so
the same code builds a message with either set; the field names are the same.
"""

from __future__ import annotations

import importlib
from types import ModuleType, SimpleNamespace

import pytest

# bridge.wire module -> the official module of the reference client
# (tensorflow-serving-api 2.21 and the TensorFlow it pulls in).
OFFICIAL_MODULES = {
    "types_pb2": "tensorflow.core.framework.types_pb2",
    "tensor_shape_pb2": "tensorflow.core.framework.tensor_shape_pb2",
    "tensor_pb2": "tensorflow.core.framework.tensor_pb2",
    "meta_graph_pb2": "tensorflow.core.protobuf.meta_graph_pb2",
    "error_codes_pb2": "tensorflow.core.protobuf.error_codes_pb2",
    "model_pb2": "tensorflow_serving.apis.model_pb2",
    "predict_pb2": "tensorflow_serving.apis.predict_pb2",
    "get_model_metadata_pb2": "tensorflow_serving.apis.get_model_metadata_pb2",
    "get_model_status_pb2": "tensorflow_serving.apis.get_model_status_pb2",
    "status_pb2": "tensorflow_serving.apis.status_pb2",
    "model_management_pb2": "tensorflow_serving.apis.model_management_pb2",
    "model_server_config_pb2": "tensorflow_serving.config.model_server_config_pb2",
    "file_system_storage_path_source_pb2": (
        "tensorflow_serving.config.file_system_storage_path_source_pb2"
    ),
    "prediction_service_pb2": "tensorflow_serving.apis.prediction_service_pb2",
    "model_service_pb2": "tensorflow_serving.apis.model_service_pb2",
    "prediction_service_pb2_grpc": "tensorflow_serving.apis.prediction_service_pb2_grpc",
    "model_service_pb2_grpc": "tensorflow_serving.apis.model_service_pb2_grpc",
}


def _namespace(names: dict[str, str]) -> SimpleNamespace:
    modules: dict[str, ModuleType] = {k: importlib.import_module(v) for k, v in names.items()}
    return SimpleNamespace(**modules)


@pytest.fixture(scope="session")
def ours() -> SimpleNamespace:
    return _namespace({name: f"bridge.wire.{name}" for name in OFFICIAL_MODULES})


@pytest.fixture(scope="session")
def official() -> SimpleNamespace:
    return _namespace(OFFICIAL_MODULES)


@pytest.fixture(scope="session")
def official_module_names() -> list[str]:
    """For subprocesses, which must import the official modules themselves."""
    return list(OFFICIAL_MODULES.values())
