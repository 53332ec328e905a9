"""Run ``python -m serving`` as a subprocess for integration tests.

Ports are found by binding port 0 on 127.0.0.1. ``start`` returns once both ports
accept connections and every named model reports AVAILABLE over REST (polling, not
sleeping a fixed time); ``stop`` ends the process by its pid: SIGTERM, then SIGKILL.
Output goes to a log file so a chatty server can never block on a full pipe, and
failures quote it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

if TYPE_CHECKING:
    from tests.serving.conftest import ModelStore

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_SECONDS = 120.0  # importing TensorFlow and loading take seconds on 2 cores


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


@dataclass
class ServerProcess:
    """A running ``python -m serving``."""

    process: subprocess.Popen[bytes]
    grpc_port: int
    rest_port: int
    log_path: Path

    @property
    def grpc_target(self) -> str:
        return f"{HOST}:{self.grpc_port}"

    @property
    def rest_url(self) -> str:
        return f"http://{HOST}:{self.rest_port}"

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_ready(self, models: Sequence[str], timeout: float = START_TIMEOUT_SECONDS) -> None:
        """Block until the ports accept and every model in ``models`` is AVAILABLE."""
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.rest_url, timeout=5) as client:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"server exited with {self.process.returncode}:\n{self.output()}"
                    )
                if port_open(self.grpc_port) and port_open(self.rest_port):
                    if all(self._available(client, name) for name in models):
                        return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"server not ready after {timeout} s:\n{self.output()}")
                time.sleep(0.05)

    @staticmethod
    def _available(client: httpx.Client, name: str) -> bool:
        try:
            response = client.get(f"/v1/models/{name}")
        except httpx.HTTPError:
            return False
        if response.status_code != 200:
            return False
        states = [v["state"] for v in response.json()["model_version_status"]]
        return "AVAILABLE" in states

    def wait_exit(self, timeout: float = START_TIMEOUT_SECONDS) -> int:
        return self.process.wait(timeout=timeout)

    def stop(self) -> int:
        """SIGTERM (a clean shutdown), then SIGKILL if it lingers; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        return self.process.returncode


def launch(args: Sequence[str], log_dir: Path, *, rest: bool = True) -> ServerProcess:
    """Start the server on free ports (not waiting for it)."""
    grpc_port = free_port()
    rest_port = free_port() if rest else 0
    log_path = log_dir / f"server-{grpc_port}.log"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    command = [
        sys.executable,
        "-m",
        "serving",
        f"--host={HOST}",
        f"--port={grpc_port}",
        f"--rest_api_port={rest_port}",
        *args,
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    return ServerProcess(process, grpc_port, rest_port, log_path)


@contextlib.contextmanager
def running_server(
    args: Sequence[str], log_dir: Path, models: Sequence[str]
) -> Iterator[ServerProcess]:
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


_SHARED_API_SERVER = pytest.StashKey[ServerProcess]()


@pytest.fixture(scope="session")
def api_server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    model_store: ModelStore,
) -> ServerProcess:
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
