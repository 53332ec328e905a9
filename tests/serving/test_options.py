"""tensorflow_model_server flags -> ServerOptions."""

from __future__ import annotations

import grpc
import pytest

from serving.errors import ServingError
from serving.options import ServerOptions, parse_args


def test_defaults_are_upstreams() -> None:
    options = parse_args(["--model_base_path=/models/m"])
    assert options == ServerOptions(model_base_path="/models/m")
    assert options.port == 8500
    assert options.rest_api_port == 0  # REST off unless asked, as upstream
    assert options.rest_api_timeout_in_ms == 30000
    assert options.model_name == "default"
    assert options.model_config_file == ""
    assert options.model_config_file_poll_wait_seconds == 0
    assert options.file_system_poll_wait_seconds == 1
    assert options.enable_batching is False
    assert options.allow_version_labels_for_unavailable_models is False
    assert options.max_num_load_retries == 5
    assert options.load_retry_interval_micros == 60_000_000
    assert options.grpc_max_threads is None
    assert options.resolved_grpc_max_threads() >= 4
    assert options.enable_grpc_healthcheck_service is False
    assert options.host == "127.0.0.1"  # local difference: upstream binds every interface


def test_equals_and_space_separated_values() -> None:
    options = parse_args(
        [
            "--port=9000",
            "--rest_api_port",
            "9001",
            "--model_name=fraud",
            "--model_base_path",
            "/models/fraud",
            "--file_system_poll_wait_seconds=-1",
            "--max_num_load_retries",
            "0",
            "--load_retry_interval_micros=1000",
            "--grpc_max_threads=3",
            "--rest_api_timeout_in_ms=500",
            "--host=0.0.0.0",
        ]
    )
    assert (options.port, options.rest_api_port) == (9000, 9001)
    assert (options.model_name, options.model_base_path) == ("fraud", "/models/fraud")
    assert options.file_system_poll_wait_seconds == -1
    assert (options.max_num_load_retries, options.load_retry_interval_micros) == (0, 1000)
    assert options.grpc_max_threads == 3
    assert options.resolved_grpc_max_threads() == 3
    assert options.rest_api_timeout_in_ms == 500
    assert options.host == "0.0.0.0"


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        ("--enable_batching", True),
        ("--enable_batching=true", True),
        ("--enable_batching=True", True),
        ("--enable_batching=1", True),
        ("--enable_batching=false", False),
        ("--enable_batching=0", False),
    ],
)
def test_boolean_spellings(flag: str, expected: bool) -> None:
    assert parse_args(["--model_base_path=/m", flag]).enable_batching is expected


def test_every_boolean_flag_and_the_config_files() -> None:
    options = parse_args(
        [
            "--model_config_file=/etc/models.config",
            "--model_config_file_poll_wait_seconds=30",
            "--allow_version_labels_for_unavailable_models",
            "--enable_grpc_healthcheck_service=true",
            "--enable_batching",
            "--batching_parameters_file=/etc/batching.config",
            "--monitoring_config_file=/etc/monitoring.config",
        ]
    )
    assert options.model_config_file == "/etc/models.config"
    assert options.model_config_file_poll_wait_seconds == 30
    assert options.allow_version_labels_for_unavailable_models is True
    assert options.enable_grpc_healthcheck_service is True
    assert options.enable_batching is True
    assert options.batching_parameters_file == "/etc/batching.config"
    assert options.monitoring_config_file == "/etc/monitoring.config"


def _error(argv: list[str]) -> ServingError:
    with pytest.raises(ServingError) as caught:
        parse_args(argv)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    return caught.value


def test_a_model_source_is_required() -> None:
    assert _error([]).message == (
        "Both server_options.model_base_path and server_options.model_config_file are empty!"
    )


def test_base_path_and_config_file_are_exclusive() -> None:
    message = _error(["--model_base_path=/m", "--model_config_file=/c"]).message
    assert "--model_base_path and --model_config_file are mutually exclusive" in message


def test_batching_file_needs_batching() -> None:
    assert _error(["--model_base_path=/m", "--batching_parameters_file=/b"]).message == (
        "server_options.batching_parameters_file is set without setting "
        "server_options.enable_batching to true."
    )


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--model_base_path=/m", "--no_such_flag=1"], "--no_such_flag"),
        (["--model_base_path=/m", "--port=abc"], "--port"),
        (["--model_base_path=/m", "--enable_batching=maybe"], "--enable_batching"),
        (["--model_base_path=/m", "--model_base"], "--model_base"),  # no abbreviations
    ],
)
def test_bad_flags_name_the_flag(argv: list[str], fragment: str) -> None:
    assert fragment in _error(argv).message
