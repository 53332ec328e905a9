"""The real parts as processes: a model server (``python -m serving``) and bridges.

Used by the tests, ``make demo``, ``make bench`` and ``make chaos``. Everything binds
to 127.0.0.1 on free ports, waits for readiness by polling (never a fixed sleep),
writes its output to a log file (a full pipe never blocks a process), and is
stopped by its pid.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tools.harness.broker import free_port

HOST = "127.0.0.1"
# tools/ is never installed, so this file is always in the checkout: tools/harness/ -> root.
REPO = Path(__file__).resolve().parents[2]
DEMO_MODELS = REPO / "serving" / "models"
SERVER_START_TIMEOUT_S = 120.0  # TensorFlow's import and the first load take seconds
BRIDGE_START_TIMEOUT_S = 60.0


def local_models_config(source: Path, destination: Path, models_root: Path = DEMO_MODELS) -> Path:
    """A copy of a sidecar models.config whose ``/models/...`` paths point at ``models_root``."""
    text = source.read_text().replace('"/models/', f'"{models_root}/')
    destination.write_text(text)
    return destination


class ModelServer:
    """``python -m serving`` with TF Serving's flags on free loopback ports.

    ``start`` returns once both ports accept connections and every model in ``models``
    reports a version AVAILABLE over REST; ``launch`` only starts the process (for
    tests of startup and of failing starts). A restart keeps the ports and appends
    to the same log.
    """

    def __init__(
        self,
        flags: Sequence[str],
        log_path: Path,
        models: Sequence[str] = (),
        *,
        grpc_port: int | None = None,
        rest_port: int | None = None,
    ) -> None:
        self.flags = list(flags)
        self.log_path = log_path
        self.models = list(models)
        self.grpc_port = grpc_port or free_port()
        self.rest_port = rest_port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def grpc_target(self) -> str:
        return f"{HOST}:{self.grpc_port}"

    @property
    def rest_url(self) -> str:
        return f"http://{HOST}:{self.rest_port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def launch(self) -> ModelServer:
        """Start (or restart, on the same ports) without waiting for it."""
        command = [
            sys.executable,
            "-m",
            "serving",
            f"--host={HOST}",
            f"--port={self.grpc_port}",
            f"--rest_api_port={self.rest_port}",
            *self.flags,
        ]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def start(self, timeout_s: float = SERVER_START_TIMEOUT_S) -> ModelServer:
        """Start (or restart, on the same ports) and wait until every model is AVAILABLE."""
        self.launch()
        self.wait_ready(timeout_s=timeout_s)
        return self

    def wait_ready(
        self, models: Sequence[str] | None = None, timeout_s: float = SERVER_START_TIMEOUT_S
    ) -> None:
        """Until both ports accept and each of ``models`` (default: the server's) is AVAILABLE."""
        names = self.models if models is None else list(models)
        deadline = time.monotonic() + timeout_s
        with httpx.Client(base_url=self.rest_url, timeout=5) as client:
            while not self._ready(client, names):
                if self.process is None or self.process.poll() is not None:
                    code = None if self.process is None else self.process.returncode
                    raise RuntimeError(f"model server exited with {code}:\n{self.tail()}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"model server not ready in {timeout_s} s:\n{self.tail()}")
                time.sleep(0.05)

    def _ready(self, client: httpx.Client, models: Sequence[str]) -> bool:
        # The server opens its ports only once its models are loaded; checking the ports
        # first keeps the REST polls off a port nobody listens on yet.
        if not (port_open(self.grpc_port) and port_open(self.rest_port)):
            return False
        return all(self._available(client, name) for name in models)

    @staticmethod
    def _available(client: httpx.Client, model: str) -> bool:
        try:
            response = client.get(f"/v1/models/{model}")
        except httpx.HTTPError:
            return False
        if response.status_code != 200:
            return False
        states = [v.get("state") for v in response.json().get("model_version_status", [])]
        return "AVAILABLE" in states

    def wait_exit(self, timeout_s: float = SERVER_START_TIMEOUT_S) -> int:
        """The exit code of a server expected to stop by itself (a failed start)."""
        if self.process is None:
            raise RuntimeError("the model server was not started")
        return self.process.wait(timeout=timeout_s)

    def output(self) -> str:
        """Everything the server printed, across restarts."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def tail(self, chars: int = 5000) -> str:
        return self.output()[-chars:]

    def stop(self) -> int | None:
        """SIGTERM (a clean shutdown), SIGKILL if it lingers; the exit code."""
        return stop_process(self.process)

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def port_open(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


# The bridge runs as shipped: `make` points this at a virtualenv with the runtime
# dependencies only (no TensorFlow, nothing the dev extras pull in, such as rich
# through keras, 3.6 MB), so its memory, start-up and imports are the production
# ones. Without it, this interpreter.
BRIDGE_PYTHON = os.environ.get("BRIDGE_RUNTIME_PYTHON") or sys.executable


class BridgeProcess:
    """``python -m bridge run`` configured by environment variables."""

    def __init__(self, env: Mapping[str, str], log_path: Path, python: str = BRIDGE_PYTHON) -> None:
        """``python``: the interpreter that runs it (another virtualenv's, say)."""
        self.env = dict(env)
        self.log_path = log_path
        self.python = python
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> BridgeProcess:
        env = {**os.environ, "BRIDGE_LOG__FORMAT": "json", "PYTHONUNBUFFERED": "1", **self.env}
        self.started_at = time.monotonic()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [self.python, "-m", "bridge", "run"],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def wait_for_log(self, event: str, timeout_s: float = BRIDGE_START_TIMEOUT_S) -> None:
        """Wait until the bridge logged ``event`` (e.g. "partitions_assigned")."""
        needle = f'"event":"{event}"'
        deadline = time.monotonic() + timeout_s
        while needle not in self.log_path.read_text(errors="replace"):
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"bridge exited waiting for {event}:\n{self.output()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"bridge did not log {event} in {timeout_s} s:\n{self.output()}")
            time.sleep(0.02)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-8000:]

    def stop(self, timeout_s: float = 60.0) -> int | None:
        """SIGTERM: the bridge finishes its work, commits and exits 0."""
        return stop_process(self.process, timeout_s)

    def kill(self) -> None:
        """SIGKILL: a crash; nothing is flushed or committed."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> BridgeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Bridges:
    """Starts bridges with logs in one folder; ``close`` stops whatever is still running."""

    def __init__(self, log_dir: Path) -> None:
        self._log_dir = log_dir
        self.started: list[BridgeProcess] = []

    def start(
        self, env: Mapping[str, str], name: str = "bridge", python: str = BRIDGE_PYTHON
    ) -> BridgeProcess:
        log_path = self._log_dir / f"{name}-{len(self.started)}.log"
        bridge = BridgeProcess(env, log_path, python).start()
        self.started.append(bridge)
        return bridge

    async def start_assigned(
        self,
        env: Mapping[str, str],
        name: str = "bridge",
        timeout_s: float = 60.0,
        python: str = BRIDGE_PYTHON,
    ) -> BridgeProcess:
        """Start a bridge and wait until the group gave it partitions."""
        bridge = self.start(env, name, python)
        await asyncio.to_thread(bridge.wait_for_log, "partitions_assigned", timeout_s)
        return bridge

    def close(self) -> None:
        for bridge in self.started:
            bridge.stop(timeout_s=20)  # SIGTERM, SIGKILL if it lingers


def log_events(bridge: BridgeProcess, event: str | None = None) -> list[dict[str, Any]]:
    """The bridge's JSON log lines (optionally only ``event``), oldest first."""
    found = []
    for line in bridge.log_path.read_bytes().splitlines():
        if not line.startswith(b"{"):
            continue  # what the interpreter itself prints (a crash) shares the file
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue  # a line being written right now
        if event is None or entry.get("event") == event:
            found.append(entry)
    return found


def assigned(bridge: BridgeProcess) -> set[int] | None:
    """The partitions of the bridge's latest assignment (None before the first)."""
    events = log_events(bridge, "partitions_assigned")
    return set(events[-1]["partitions"]) if events else None


def stop_process(process: subprocess.Popen[bytes] | None, timeout_s: float = 30.0) -> int | None:
    """SIGTERM, SIGKILL if it lingers past ``timeout_s``; the exit code (None: never started)."""
    if process is None:
        return None
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def run_bridge(env: Mapping[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    """``python -m bridge ARGV`` to its end with only ``env``'s BRIDGE_* settings, captured."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    return subprocess.run(
        [sys.executable, "-m", "bridge", *argv],
        cwd=REPO,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def bridge_env(
    bootstrap: str,
    topics: tuple[str, str, str],
    server: ModelServer,
    *,
    model: str = "fraud",
    protocol: str = "grpc",
    group: str = "tfs-bridge",
    **settings: str,
) -> dict[str, str]:
    """The environment for one bridge; ``settings`` are extra ``BRIDGE_...`` variables."""
    source, results, failures = topics
    return {
        "BRIDGE_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "BRIDGE_KAFKA__GROUP_ID": group,
        "BRIDGE_TOPICS__INPUT": source,
        "BRIDGE_TOPICS__RESULTS": results,
        "BRIDGE_TOPICS__FAILURES": failures,
        "BRIDGE_SERVING__PROTOCOL": protocol,
        "BRIDGE_SERVING__GRPC_TARGET": server.grpc_target,
        "BRIDGE_SERVING__REST_URL": server.rest_url,
        "BRIDGE_MODEL__NAME": model,
        **settings,
    }


async def create_topics(bootstrap: str, names: Sequence[str], partitions: int = 3) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1) for name in names])
    finally:
        await admin.close()


def create_topics_sync(bootstrap: str, names: Sequence[str], partitions: int = 3) -> None:
    asyncio.run(create_topics(bootstrap, names, partitions))
