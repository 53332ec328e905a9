"""Text-format config files -> protos, and upstream's checks on a config list.

``ModelServerConfig`` comes from the official ``tensorflow-serving-api`` package,
like every message the front ends use. That package ships neither
``BatchingParameters`` nor ``MonitoringConfig``, so those two come from
``bridge.wire`` (generated from ``proto/``, upstream's package, names and field
numbers): a file written for a real ``tensorflow/serving`` parses the same here.
Their private descriptor pool keeps them apart from the official modules.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TypeVar

import grpc
from google.protobuf import message, text_format
from tensorflow_serving.config import model_server_config_pb2

from bridge.wire.monitoring_config_pb2 import MonitoringConfig
from bridge.wire.session_bundle_config_pb2 import BatchingParameters
from serving.errors import ServingError

TENSORFLOW_PLATFORM = "tensorflow"

_Message = TypeVar("_Message", bound=message.Message)


def _read_text_proto(path: str, proto: _Message) -> _Message:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ServingError(
            grpc.StatusCode.NOT_FOUND, f"{path}; No such file or directory"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"Cannot read {path}: {exc}") from exc
    try:
        text_format.Parse(text, proto)
    except text_format.ParseError as exc:
        # Upstream says only "Invalid protobuf file: '<path>'"; the parser's line and
        # column are kept because they are what one needs to fix the file.
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT, f"Invalid protobuf file: '{path}': {exc}"
        ) from exc
    return proto


def read_model_server_config(path: str) -> model_server_config_pb2.ModelServerConfig:
    """Read a ``--model_config_file`` (text-format ``ModelServerConfig``)."""
    return _read_text_proto(path, model_server_config_pb2.ModelServerConfig())


def read_batching_parameters(path: str) -> BatchingParameters:
    """Read a ``--batching_parameters_file`` (text-format ``BatchingParameters``)."""
    return _read_text_proto(path, BatchingParameters())


def read_monitoring_config(path: str) -> MonitoringConfig:
    """Read a ``--monitoring_config_file`` (text-format ``MonitoringConfig``)."""
    return _read_text_proto(path, MonitoringConfig())


def single_model_config(name: str, base_path: str) -> model_server_config_pb2.ModelServerConfig:
    """The config upstream builds from ``--model_name`` and ``--model_base_path``."""
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name = name
    model.base_path = base_path
    model.model_platform = TENSORFLOW_PLATFORM
    model.model_version_policy.latest.num_versions = 1
    return config


# io::ParseURI: a scheme is a letter then letters, digits or dots, before "://".
_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9.]*://")


def _is_relative_path(uri: str) -> bool:
    """Upstream's UriIsRelativePath: no scheme, no host, and no leading slash."""
    return _URI_SCHEME.match(uri) is None and not uri.startswith("/")


def _platform(model: model_server_config_pb2.ModelConfig) -> str:
    """Upstream's GetPlatform: the deprecated model_type or model_platform, not both."""
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    if model.model_type != model_server_config_pb2.MODEL_TYPE_UNSPECIFIED:
        if model.model_platform:
            raise ServingError(
                invalid,
                "Illegal setting both ModelServerConfig::model_type (deprecated) "
                "and ModelServerConfig::model_platform.",
            )
        if model.model_type != model_server_config_pb2.TENSORFLOW:
            raise ServingError(
                invalid, f"ModelServerConfig::model_type choice {model.model_type} not supported."
            )
        return TENSORFLOW_PLATFORM
    if not model.model_platform:
        raise ServingError(
            invalid,
            "Illegal setting neither ModelServerConfig::model_type (deprecated) "
            "nor ModelServerConfig::model_platform.",
        )
    return str(model.model_platform)


def validate_model_config_list(config_list: model_server_config_pb2.ModelConfigList) -> None:
    """Upstream's checks on a config list (server_core.cc), with its messages."""
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    seen: set[str] = set()
    for model in config_list.config:
        if model.name in seen:
            raise ServingError(
                invalid, f"Illegal to list model {model.name} multiple times in config list"
            )
        seen.add(model.name)
    for model in config_list.config:
        if _is_relative_path(model.base_path):
            raise ServingError(
                invalid,
                f"Expected model {model.name} to have an absolute path or URI; "
                f"got base_path()={model.base_path}",
            )
    for model in config_list.config:
        platform = _platform(model)
        if platform != TENSORFLOW_PLATFORM:
            raise ServingError(
                invalid, f"Model {model.name} requests unsupported platform {platform}"
            )
