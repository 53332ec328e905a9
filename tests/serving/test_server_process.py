"""``python -m serving`` as a process: startup, shutdown, reloads and file-system polling."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2

from tests.serving.server_process import ServerProcess, launch, port_open, running_server

if TYPE_CHECKING:
    from tests.serving.conftest import ModelStore

pytestmark = pytest.mark.integration

TIMEOUT = 60


def wait_until(condition: object, what: str, timeout: float = 60) -> None:
    """Poll for something the server does in the background (bounded; no fixed sleep)."""
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def versions(server: ServerProcess, name: str) -> dict[str, str]:
    document = httpx.get(f"{server.rest_url}/v1/models/{name}", timeout=10).json()
    return {v["version"]: v["state"] for v in document.get("model_version_status", [])}


# -- startup and shutdown -------------------------------------------------------------


def test_ports_open_only_once_models_are_available(tmp_path: Path, model_store: ModelStore) -> None:
    base = tmp_path / "toy"
    base.mkdir()
    model_store.install(base, 1)
    server = launch([f"--model_base_path={base}", "--model_name=toy"], tmp_path)
    try:
        deadline = time.monotonic() + 120
        while not port_open(server.rest_port):
            assert server.process.poll() is None, server.output()
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.02)
        # The very first answer already finds the model loaded: the ports were
        # closed while it loaded.
        assert versions(server, "toy") == {"1": "AVAILABLE"}
        assert port_open(server.grpc_port)
        output = server.output()
        assert f"Running gRPC ModelServer at 127.0.0.1:{server.grpc_port} ..." in output
        assert f"Exporting HTTP/REST API at:127.0.0.1:{server.rest_port} ..." in output
    finally:
        exit_code = server.stop()
    assert exit_code == 0  # SIGTERM is a clean shutdown


def test_failed_load_exits_1_with_upstreams_message(
    tmp_path: Path, model_store: ModelStore
) -> None:
    base = tmp_path / "broken"
    base.mkdir()
    model_store.install(base, 1, "broken")
    args = [f"--model_base_path={base}", "--model_name=broken", "--max_num_load_retries=0"]
    server = launch(args, tmp_path)
    try:
        assert server.wait_exit() == 1
    finally:
        server.stop()
    assert (
        "Failed to start server. Error: UNKNOWN: 1 servable(s) did not become available"
        in server.output()
    )
    assert not port_open(server.grpc_port)


def test_bad_flags_exit_1(tmp_path: Path) -> None:
    server = launch(["--model_name=x"], tmp_path)  # neither base path nor config file
    try:
        assert server.wait_exit() == 1
    finally:
        server.stop()
    assert "Failed to start server. Error: INVALID_ARGUMENT: " in server.output()


# -- a server whose config the tests change -----------------------------------------------


@pytest.fixture(scope="module")
def model_root(tmp_path_factory: pytest.TempPathFactory, model_store: ModelStore) -> Path:
    root = tmp_path_factory.mktemp("lifecycle")
    for name, kind, numbers in (("toy", "scale", (1,)), ("labeled", "scale", (1, 2, 3))):
        (root / name).mkdir()
        for version in numbers:
            model_store.install(root / name, version, kind)
    (root / "extra").mkdir()
    model_store.install(root / "extra", 5, "scale")
    (root / "broken").mkdir()
    model_store.install(root / "broken", 1, "broken")
    return root


@pytest.fixture(scope="module")
def server(model_root: Path) -> Iterator[ServerProcess]:
    config = model_root / "models.config"
    config.write_text(
        f'model_config_list {{ config {{ name: "toy" base_path: "{model_root / "toy"}" '
        'model_platform: "tensorflow" } }',
        encoding="utf-8",
    )
    args = [
        f"--model_config_file={config}",
        "--file_system_poll_wait_seconds=1",
        "--max_num_load_retries=0",
    ]
    with running_server(args, model_root, ["toy"]) as process:
        yield process


@pytest.fixture(scope="module")
def stubs(
    server: ServerProcess,
) -> Iterator[
    tuple[
        model_service_pb2_grpc.ModelServiceStub, prediction_service_pb2_grpc.PredictionServiceStub
    ]
]:
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield (
            model_service_pb2_grpc.ModelServiceStub(channel),
            prediction_service_pb2_grpc.PredictionServiceStub(channel),
        )


def model_config(
    root: Path, name: str, *, specific: tuple[int, ...] = (), labels: dict[str, int] | None = None
) -> model_server_config_pb2.ModelConfig:
    config = model_server_config_pb2.ModelConfig(
        name=name, base_path=str(root / name), model_platform="tensorflow"
    )
    if specific:
        config.model_version_policy.specific.versions.extend(specific)
    for label, version in (labels or {}).items():
        config.version_labels[label] = version
    return config


def reload(
    stubs: tuple[model_service_pb2_grpc.ModelServiceStub, object],
    *configs: model_server_config_pb2.ModelConfig,
) -> model_management_pb2.ReloadConfigResponse:
    request = model_management_pb2.ReloadConfigRequest()
    request.config.model_config_list.config.extend(configs)
    return stubs[0].HandleReloadConfigRequest(request, timeout=TIMEOUT)


def reload_error(
    stubs: tuple[model_service_pb2_grpc.ModelServiceStub, object],
    *configs: model_server_config_pb2.ModelConfig,
) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        reload(stubs, *configs)
    return info.value


def predict(
    stubs: tuple[object, prediction_service_pb2_grpc.PredictionServiceStub],
    name: str,
    label: str = "",
) -> tuple[int, float]:
    """(version served, y for x = 1)."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if label:
        request.model_spec.version_label = label
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([1.0], np.float32)))
    response = stubs[1].Predict(request, timeout=TIMEOUT)
    return response.model_spec.version.value, float(tf.make_ndarray(response.outputs["y"])[0])


def test_reload_adds_a_model(stubs: tuple, model_root: Path) -> None:  # type: ignore[type-arg]
    response = reload(stubs, model_config(model_root, "toy"), model_config(model_root, "extra"))
    assert response.status.error_code == 0
    assert predict(stubs, "extra") == (5, 5.0)
    assert predict(stubs, "toy") == (1, 1.0)


def test_moving_a_label_the_documented_two_step_way(stubs: tuple, model_root: Path) -> None:  # type: ignore[type-arg]
    toy = model_config(model_root, "toy")
    # A label can only name a loaded version: load version 1, then label it.
    reload(stubs, toy, model_config(model_root, "labeled", specific=(1,)))
    reload(stubs, toy, model_config(model_root, "labeled", specific=(1,), labels={"stable": 1}))
    assert predict(stubs, "labeled", "stable") == (1, 1.0)
    # Moving it: first a config that loads N and N+1 (label still on N)...
    reload(stubs, toy, model_config(model_root, "labeled", specific=(1, 2), labels={"stable": 1}))
    assert predict(stubs, "labeled", "stable") == (1, 1.0)
    # ...then one that points it at N+1.
    reload(stubs, toy, model_config(model_root, "labeled", specific=(1, 2), labels={"stable": 2}))
    assert predict(stubs, "labeled", "stable") == (2, 2.0)
    # A label may not point at a version that is not loaded.
    error = reload_error(
        stubs, toy, model_config(model_root, "labeled", specific=(1, 2), labels={"stable": 3})
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == (
        "Request to assign label to version 3 of model labeled, which is not currently "
        "available for inference"
    )


def test_reload_errors(stubs: tuple, model_root: Path) -> None:  # type: ignore[type-arg]
    request = model_management_pb2.ReloadConfigRequest()
    request.config.custom_model_config.type_url = "type.googleapis.com/x"
    with pytest.raises(grpc.RpcError) as info:
        stubs[0].HandleReloadConfigRequest(request, timeout=TIMEOUT)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == (
        "ServerModelConfig type not supported by HandleReloadConfigRequest. "
        "Only ModelConfigList is currently supported"
    )
    toy = model_config(model_root, "toy")
    duplicate = reload_error(stubs, toy, toy)
    assert duplicate.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert duplicate.details() == "Illegal to list model toy multiple times in config list"
    failing = reload_error(stubs, toy, model_config(model_root, "broken"))
    assert failing.code() == grpc.StatusCode.UNKNOWN
    assert (failing.details() or "").startswith("1 model(s) did not become available")


def test_file_system_polling_serves_a_new_version(
    server: ServerProcess,
    stubs: tuple,  # type: ignore[type-arg]
    model_root: Path,
    model_store: ModelStore,
) -> None:
    reload(stubs, model_config(model_root, "toy"))
    assert versions(server, "toy")["1"] == "AVAILABLE"
    model_store.install(model_root / "toy", 2)  # copied in, then renamed into place
    wait_until(lambda: versions(server, "toy") == {"2": "AVAILABLE", "1": "END"}, "version 2")
    assert predict(stubs, "toy") == (2, 2.0)
    shutil.rmtree(model_root / "toy" / "1")
