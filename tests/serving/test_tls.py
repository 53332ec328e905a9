"""``--ssl_config_file``: TLS and mTLS on the gRPC port, driven with the official stubs.

Two servers per module, one with ``client_verify: false`` (TLS) and one with
``client_verify: true`` (mTLS), both with certificates made for the test. Every
refusal is checked against a client that succeeds on the same server, so a test
cannot pass because the server is simply down.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.errors import ServingError
from serving.ssl_config import SSLConfig, read_ssl_config, server_credentials
from tests.serving.server_process import ServerProcess, launch, running_server
from tests.serving.toy_models import ModelStore
from tools.harness.tls import Certs, make_certs

TIMEOUT = 20


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def _server(
    tmp_path_factory: pytest.TempPathFactory, store: ModelStore, certs: Certs, *, verify: bool
) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("mtls" if verify else "tls")
    (root / "toy").mkdir()
    store.install(root / "toy", 1, "scale")
    config = certs.write_ssl_config(root / "ssl.config", client_verify=verify)
    args = ["--model_name=toy", f"--model_base_path={root / 'toy'}", f"--ssl_config_file={config}"]
    with running_server(args, root, ["toy"]) as server:
        yield server


@pytest.fixture(scope="module")
def tls_server(
    tmp_path_factory: pytest.TempPathFactory, model_store: ModelStore, certs: Certs
) -> Iterator[ServerProcess]:
    yield from _server(tmp_path_factory, model_store, certs, verify=False)


@pytest.fixture(scope="module")
def mtls_server(
    tmp_path_factory: pytest.TempPathFactory, model_store: ModelStore, certs: Certs
) -> Iterator[ServerProcess]:
    yield from _server(tmp_path_factory, model_store, certs, verify=True)


def _credentials(
    ca: Path, cert: Path | None = None, key: Path | None = None
) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=key.read_bytes() if key else None,
        certificate_chain=cert.read_bytes() if cert else None,
    )


def _status(channel: grpc.Channel) -> int:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "toy"
    response = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
        request, timeout=TIMEOUT
    )
    return int(response.model_version_status[0].state)


def _predict(channel: grpc.Channel) -> list[float]:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "toy"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([1.5, 2.0], np.float32)))
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    response = stub.Predict(request, timeout=TIMEOUT)
    return [float(v) for v in tf.make_ndarray(next(iter(response.outputs.values())))]


def _refused(channel: grpc.Channel) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        _status(channel)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    return caught.value


AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE


@pytest.mark.integration
def test_tls_with_the_ca(tls_server: ServerProcess, certs: Certs) -> None:
    with grpc.secure_channel(tls_server.grpc_target, _credentials(certs.ca)) as channel:
        assert _status(channel) == AVAILABLE
        assert _predict(channel) == [1.5, 2.0]


@pytest.mark.integration
def test_tls_refuses_a_client_that_does_not_trust_the_ca(
    tls_server: ServerProcess, certs: Certs
) -> None:
    with grpc.secure_channel(tls_server.grpc_target, _credentials(certs.other_ca)) as channel:
        _refused(channel)


@pytest.mark.integration
def test_tls_refuses_plaintext(tls_server: ServerProcess) -> None:
    with grpc.insecure_channel(tls_server.grpc_target) as channel:
        _refused(channel)


@pytest.mark.integration
def test_tls_checks_the_server_name(tls_server: ServerProcess, certs: Certs) -> None:
    # The certificate names model-server.test but not other.test.
    for name, works in (("model-server.test", True), ("other.test", False)):
        options = [("grpc.ssl_target_name_override", name)]
        with grpc.secure_channel(
            tls_server.grpc_target, _credentials(certs.ca), options=options
        ) as channel:
            if works:
                assert _status(channel) == AVAILABLE
            else:
                _refused(channel)


@pytest.mark.integration
def test_mtls_with_a_client_certificate(mtls_server: ServerProcess, certs: Certs) -> None:
    credentials = _credentials(certs.ca, certs.client_cert, certs.client_key)
    with grpc.secure_channel(mtls_server.grpc_target, credentials) as channel:
        assert _status(channel) == AVAILABLE
        assert _predict(channel) == [1.5, 2.0]


@pytest.mark.integration
def test_mtls_refuses_a_client_without_a_certificate(
    mtls_server: ServerProcess, certs: Certs
) -> None:
    with grpc.secure_channel(mtls_server.grpc_target, _credentials(certs.ca)) as channel:
        _refused(channel)


@pytest.mark.integration
def test_mtls_refuses_a_client_that_does_not_trust_the_ca(
    mtls_server: ServerProcess, certs: Certs
) -> None:
    credentials = _credentials(certs.other_ca, certs.client_cert, certs.client_key)
    with grpc.secure_channel(mtls_server.grpc_target, credentials) as channel:
        _refused(channel)


@pytest.mark.integration
def test_rest_stays_plain_http_as_upstream(mtls_server: ServerProcess) -> None:
    # Upstream builds its HTTP server without the SSL config (server.cc).
    response = httpx.get(f"{mtls_server.rest_url}/v1/models/toy", timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.json()["model_version_status"][0]["state"] == "AVAILABLE"


@pytest.mark.integration
def test_a_missing_ssl_config_file_fails_the_start(tmp_path: Path) -> None:
    server = launch(
        ["--model_name=toy", f"--model_base_path={tmp_path}", "--ssl_config_file=/nonexistent"],
        tmp_path,
    )
    try:
        assert server.wait_exit() == 1
    finally:
        server.stop()
    assert "Failed to start server. Error: NOT_FOUND: /nonexistent" in server.output()


def test_ssl_config_uses_upstreams_field_numbers(tmp_path: Path) -> None:
    # Field 1 server_key, 2 server_cert, 3 custom_ca (strings), 4 client_verify (bool).
    config = SSLConfig(server_key="k", server_cert="c", custom_ca="a", client_verify=True)
    assert config.SerializeToString() == b"\x0a\x01k\x12\x01c\x1a\x01a\x20\x01"
    assert SSLConfig.DESCRIPTOR.full_name == "tensorflow.serving.SSLConfig"
    path = tmp_path / "ssl.config"
    path.write_text('server_key: "k"\nclient_verify: true\n', encoding="ascii")
    assert read_ssl_config(str(path)) == SSLConfig(server_key="k", client_verify=True)


def test_incomplete_ssl_configs_are_refused() -> None:
    with pytest.raises(ServingError, match="server_key and server_cert"):
        server_credentials(SSLConfig(server_cert="c"))
    with pytest.raises(ServingError, match="client_verify needs custom_ca"):
        server_credentials(SSLConfig(server_key="k", server_cert="c", client_verify=True))


def test_a_bad_ssl_config_is_invalid_argument(tmp_path: Path) -> None:
    path = tmp_path / "ssl.config"
    path.write_text("server_key: 3 nonsense", encoding="ascii")
    with pytest.raises(ServingError) as caught:
        read_ssl_config(str(path))
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
