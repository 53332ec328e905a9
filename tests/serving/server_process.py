"""``python -m serving`` as a subprocess for the serving tests: the harness's
``ModelServer`` (``tools.harness.processes``), started the ways these tests need.

Ports are found by binding port 0 on 127.0.0.1. ``running_server`` returns once both
ports accept connections and every named model reports AVAILABLE over REST (polling,
not sleeping a fixed time); ``stop`` ends the process by its pid: SIGTERM, then
SIGKILL. Output goes to a log file so a chatty server can never block on a full pipe,
and failures quote it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tools.harness.broker import free_port
from tools.harness.processes import ModelServer, port_open

if TYPE_CHECKING:
    from tests.serving.conftest import ModelStore

# The serving tests' name for it; one class for the tests, the demo and the bench.
ServerProcess = ModelServer
__all__ = ["ServerProcess", "api_server", "launch", "port_open", "running_server"]


def launch(args: Sequence[str], log_dir: Path) -> ModelServer:
    """Start the server on free ports (not waiting for it); its log names its gRPC port."""
    grpc_port = free_port()
    log_path = log_dir / f"server-{grpc_port}.log"
    return ModelServer(args, log_path, grpc_port=grpc_port).launch()


@contextlib.contextmanager
def running_server(
    args: Sequence[str], log_dir: Path, models: Sequence[str]
) -> Iterator[ModelServer]:
    """A server that is ready for ``models``, stopped by pid on exit."""
    server = launch(args, log_dir)
    try:
        server.wait_ready(models)
        yield server
    finally:
        server.stop()


# -- a shared server for the API tests ------------------------------------------------

API_MODELS_CONFIG = """
model_config_list {{
  config {{
    name: "toy"
    base_path: "{toy}"
    model_platform: "tensorflow"
    model_version_policy {{ specific {{ versions: 1 versions: 2 }} }}
    version_labels {{ key: "stable" value: 1 }}
    version_labels {{ key: "canary" value: 2 }}
  }}
  config {{
    name: "multi"
    base_path: "{multi}"
    model_platform: "tensorflow"
  }}
}}
"""
METRICS_PATH = "/monitoring/prometheus/metrics"


_SHARED_API_SERVER = pytest.StashKey[ModelServer]()


@pytest.fixture(scope="session")
def api_server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    model_store: ModelStore,
) -> ModelServer:
    """One server for the read-only API tests: ``toy`` (scale, versions 1 and 2,
    labels stable=1 and canary=2) and ``multi`` (version 1), with metrics and the
    gRPC health service on.

    Test modules import this fixture, which makes one fixture per module; the
    session stash makes them share a single process, stopped when the session ends.
    """
    stash = request.config.stash
    if _SHARED_API_SERVER in stash:
        return stash[_SHARED_API_SERVER]
    root = tmp_path_factory.mktemp("api-server")
    toy, multi = root / "toy", root / "multi"
    toy.mkdir()
    multi.mkdir()
    for version in (1, 2):
        model_store.install(toy, version, "scale")
    model_store.install(multi, 1, "multi")
    config = root / "models.config"
    config.write_text(API_MODELS_CONFIG.format(toy=toy, multi=multi), encoding="utf-8")
    monitoring = root / "monitoring.config"
    monitoring.write_text(
        f'prometheus_config {{ enable: true path: "{METRICS_PATH}" }}', encoding="utf-8"
    )
    args = [
        f"--model_config_file={config}",
        "--allow_version_labels_for_unavailable_models",
        f"--monitoring_config_file={monitoring}",
        "--enable_grpc_healthcheck_service",
    ]
    server = launch(args, root)
    request.config.add_cleanup(server.stop)
    server.wait_ready(["toy", "multi"])
    stash[_SHARED_API_SERVER] = server
    return server
