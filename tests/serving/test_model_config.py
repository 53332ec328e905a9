"""Config files -> protos; upstream's checks on a config list, with its messages."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from serving.errors import ServingError
from serving.model_config import (
    read_batching_parameters,
    read_model_server_config,
    read_monitoring_config,
    single_model_config,
    validate_model_config_list,
)

MODELS_CONFIG = """
model_config_list {
  config {
    name: "fraud"
    base_path: "/models/fraud"
    model_platform: "tensorflow"
    model_version_policy { specific { versions: 1 versions: 2 } }
    version_labels { key: "stable" value: 1 }
    version_labels { key: "canary" value: 2 }
  }
  config {
    name: "other"
    base_path: "gs://bucket/other"
    model_platform: "tensorflow"
    model_version_policy { all {} }
  }
}
"""


def _write(tmp_path: Path, text: str, name: str = "file.config") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_reads_a_model_server_config(tmp_path: Path) -> None:
    config = read_model_server_config(_write(tmp_path, MODELS_CONFIG))
    fraud, other = config.model_config_list.config
    assert (fraud.name, fraud.base_path) == ("fraud", "/models/fraud")
    assert list(fraud.model_version_policy.specific.versions) == [1, 2]
    assert dict(fraud.version_labels) == {"stable": 1, "canary": 2}
    assert other.model_version_policy.WhichOneof("policy_choice") == "all"
    validate_model_config_list(config.model_config_list)  # a valid list passes


def test_a_bad_file_names_the_file_and_the_place(tmp_path: Path) -> None:
    path = _write(tmp_path, "model_config_list { config { nme: 'x' } }")
    with pytest.raises(ServingError) as caught:
        read_model_server_config(path)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.message.startswith(f"Invalid protobuf file: '{path}': 1:")
    assert '"nme"' in caught.value.message


def test_a_missing_file_is_not_found(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.config")
    for reader in (read_model_server_config, read_batching_parameters, read_monitoring_config):
        with pytest.raises(ServingError) as caught:
            reader(path)
        assert caught.value.code == grpc.StatusCode.NOT_FOUND
        assert caught.value.message == f"{path}; No such file or directory"


def test_reads_batching_parameters(tmp_path: Path) -> None:
    params = read_batching_parameters(
        _write(
            tmp_path,
            """
            max_batch_size { value: 128 }
            batch_timeout_micros { value: 2000 }
            max_enqueued_batches { value: 4 }
            num_batch_threads { value: 2 }
            thread_pool_name { value: "batch" }
            allowed_batch_sizes: [32, 128]
            pad_variable_length_inputs: true
            """,
        )
    )
    assert params.DESCRIPTOR.full_name == "tensorflow.serving.BatchingParameters"
    assert params.max_batch_size.value == 128
    assert params.batch_timeout_micros.value == 2000
    assert params.max_enqueued_batches.value == 4
    assert params.num_batch_threads.value == 2
    assert params.thread_pool_name.value == "batch"
    assert list(params.allowed_batch_sizes) == [32, 128]
    assert params.pad_variable_length_inputs is True
    unset = read_batching_parameters(_write(tmp_path, "", "empty.config"))
    assert not unset.HasField("max_batch_size")  # unset wrappers fall back to defaults


def test_batching_parameters_reject_unknown_fields(tmp_path: Path) -> None:
    path = _write(tmp_path, "max_batch_sizes { value: 1 }")
    with pytest.raises(ServingError) as caught:
        read_batching_parameters(path)
    assert caught.value.message.startswith(f"Invalid protobuf file: '{path}'")


def test_reads_monitoring_config(tmp_path: Path) -> None:
    config = read_monitoring_config(
        _write(
            tmp_path,
            'prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }',
        )
    )
    assert config.DESCRIPTOR.full_name == "tensorflow.serving.MonitoringConfig"
    assert config.prometheus_config.enable is True
    assert config.prometheus_config.path == "/monitoring/prometheus/metrics"


def test_single_model_config_is_upstreams() -> None:
    config = single_model_config("fraud", "/models/fraud")
    (model,) = config.model_config_list.config
    assert (model.name, model.base_path, model.model_platform) == (
        "fraud",
        "/models/fraud",
        "tensorflow",
    )
    assert model.model_version_policy.WhichOneof("policy_choice") == "latest"
    assert model.model_version_policy.latest.num_versions == 1


def _config_list(text: str) -> model_server_config_pb2.ModelConfigList:
    return text_format.Parse(text, model_server_config_pb2.ModelConfigList())


def _invalid(text: str) -> str:
    with pytest.raises(ServingError) as caught:
        validate_model_config_list(_config_list(text))
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    return caught.value.message


def test_duplicate_names_are_refused() -> None:
    text = """
      config { name: "m" base_path: "/a" model_platform: "tensorflow" }
      config { name: "m" base_path: "/b" model_platform: "tensorflow" }
    """
    assert _invalid(text) == "Illegal to list model m multiple times in config list"


@pytest.mark.parametrize("base_path", ["models/m", "", "./m", "file:/x"])
def test_relative_base_paths_are_refused(base_path: str) -> None:
    text = f'config {{ name: "m" base_path: "{base_path}" model_platform: "tensorflow" }}'
    assert _invalid(text) == (
        f"Expected model m to have an absolute path or URI; got base_path()={base_path}"
    )


@pytest.mark.parametrize("base_path", ["/abs", "gs://bucket/m", "s3://b/m", "hdfs://h:1/m"])
def test_absolute_paths_and_uris_pass(base_path: str) -> None:
    text = f'config {{ name: "m" base_path: "{base_path}" model_platform: "tensorflow" }}'
    validate_model_config_list(_config_list(text))


def test_platform_rules() -> None:
    assert _invalid('config { name: "m" base_path: "/a" }') == (
        "Illegal setting neither ModelServerConfig::model_type (deprecated) "
        "nor ModelServerConfig::model_platform."
    )
    assert _invalid('config { name: "m" base_path: "/a" model_platform: "onnx" }') == (
        "Model m requests unsupported platform onnx"
    )
    # The deprecated model_type still works alone.
    validate_model_config_list(_config_list('config { name: "m" base_path: "/a" model_type: 1 }'))
