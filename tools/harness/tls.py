"""Throwaway certificates for the TLS tests, and a stunnel4 terminator for the dev broker.

The certificates are made by the ``openssl`` command (``cryptography`` is not a
dependency): the Kafka tests use them through stunnel, the TF Serving tests as the
local server's ``--ssl_config_file`` (``Certs.write_ssl_config``).

Tansu's own TLS listener does not work (``../shared/reference/dev-broker.md``), so
stunnel accepts TLS on a loopback port and forwards the plain bytes to the broker,
whose advertised listener is stunnel's port: every connection a client makes after
bootstrapping goes through TLS too. ``verify = 2`` with the CA makes it mTLS.

    certs = make_certs(tmp_dir)
    with DevBroker(advertised_port=port) as broker, Stunnel(certs, port, broker.port, mtls=True):
        ...
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from tools.harness.broker import STOP_TIMEOUT_S
from tools.harness.processes import stop_process

READY_TIMEOUT_S = 10.0
KEY_PASSWORD = "client-key-password"  # noqa: S105 - a throwaway test key's
# Names the server certificate is valid for; tests connect to 127.0.0.1, and the TF
# Serving tests override the name to model-server.test (BRIDGE_SERVING__SSL_TARGET_NAME).
SERVER_NAMES = "DNS:localhost,IP:127.0.0.1,DNS:model-server.test"


def stunnel_binary() -> str | None:
    """stunnel4 from Debian (``stunnel4`` or ``stunnel`` on PATH), or None."""
    return shutil.which("stunnel4") or shutil.which("stunnel")


@dataclass(frozen=True)
class Certs:
    """PEM files: a CA, the server's (127.0.0.1 and localhost), clients signed by the CA,
    an expired one, and a second CA that signed nothing here (the "wrong CA")."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    client_key_encrypted: Path  # the same key, encrypted with KEY_PASSWORD
    expired_cert: Path
    expired_key: Path
    other_ca: Path

    def ssl_config(self, *, client_verify: bool) -> str:
        """An ``SSLConfig`` text proto with the PEM contents inline, as TF Serving reads it."""

        def quoted(path: Path) -> str:
            return '"' + path.read_text(encoding="ascii").replace("\n", "\\n") + '"'

        return (
            f"server_key: {quoted(self.server_key)}\n"
            f"server_cert: {quoted(self.server_cert)}\n"
            f"custom_ca: {quoted(self.ca)}\n"
            f"client_verify: {'true' if client_verify else 'false'}\n"
        )

    def write_ssl_config(self, path: Path, *, client_verify: bool) -> Path:
        path.write_text(self.ssl_config(client_verify=client_verify), encoding="ascii")
        return path


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def _key(path: Path) -> Path:
    # EC keys: generated in milliseconds, unlike RSA.
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path)
    return path


def _ca(directory: Path, name: str) -> tuple[Path, Path]:
    key, cert = _key(directory / f"{name}.key"), directory / f"{name}.pem"
    _openssl(
        "req", "-x509", "-new", "-key", key, "-subj", f"/CN={name}", "-days", "36500", "-out", cert
    )
    return cert, key


def _signed(directory: Path, name: str, ca: tuple[Path, Path], days: int, ext: str) -> Path:
    key, csr, cert = (
        _key(directory / f"{name}.key"),
        directory / f"{name}.csr",
        directory / f"{name}.pem",
    )
    extfile = directory / f"{name}.ext"
    extfile.write_text(ext)
    _openssl("req", "-new", "-key", key, "-subj", f"/CN={name}", "-out", csr)
    _openssl(
        "x509",
        "-req",
        "-in",
        csr,
        "-CA",
        ca[0],
        "-CAkey",
        ca[1],
        "-CAcreateserial",
        "-days",
        str(days),
        "-extfile",
        extfile,
        "-out",
        cert,
    )
    return cert


def make_certs(directory: Path) -> Certs:
    """Generate every file in ``directory`` with the ``openssl`` command."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = _ca(directory, "test-ca")
    other_ca, _ = _ca(directory, "other-ca")
    server = _signed(
        directory,
        "server",
        ca,
        36500,
        f"subjectAltName={SERVER_NAMES}\nextendedKeyUsage=serverAuth\n",
    )
    client_ext = "extendedKeyUsage=clientAuth\n"
    client = _signed(directory, "client", ca, 36500, client_ext)
    # x509 -days -1: valid until a day ago (OpenSSL 3.0 accepts a negative count).
    expired = _signed(directory, "expired", ca, -1, client_ext)
    encrypted = directory / "client-encrypted.key"
    _openssl(
        "pkey",
        "-in",
        directory / "client.key",
        "-aes256",
        "-passout",
        f"pass:{KEY_PASSWORD}",
        "-out",
        encrypted,
    )
    return Certs(
        ca=ca[0],
        server_cert=server,
        server_key=directory / "server.key",
        client_cert=client,
        client_key=directory / "client.key",
        client_key_encrypted=encrypted,
        expired_cert=expired,
        expired_key=directory / "expired.key",
        other_ca=other_ca,
    )


class StunnelStartError(RuntimeError):
    """stunnel did not listen in time; the message holds its output."""


class Stunnel:
    """One stunnel4 process: TLS on ``127.0.0.1:accept_port`` -> plain ``connect_port``."""

    def __init__(self, certs: Certs, accept_port: int, connect_port: int, *, mtls: bool) -> None:
        binary = stunnel_binary()
        if binary is None:
            raise StunnelStartError("stunnel4 is not installed (apt-get install stunnel4)")
        self.binary = binary
        self.accept_port = accept_port
        self._dir = Path(tempfile.mkdtemp(prefix="stunnel-"))
        verify = f"verify = 2\nCAfile = {certs.ca}\n" if mtls else ""
        self.config = self._dir / "stunnel.conf"
        self.config.write_text(
            # foreground: it stays our child, so stop() ends it by its pid.
            f"foreground = yes\npid =\noutput = {self._dir / 'stunnel.log'}\n"
            f"[kafka]\naccept = 127.0.0.1:{accept_port}\nconnect = 127.0.0.1:{connect_port}\n"
            f"cert = {certs.server_cert}\nkey = {certs.server_key}\n{verify}"
        )
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def output(self) -> str:
        log = self._dir / "stunnel.log"
        return log.read_text(errors="replace")[-4000:] if log.exists() else ""

    def start(self) -> Stunnel:
        self._process = subprocess.Popen(
            [self.binary, str(self.config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                message = f"stunnel exited with {self._process.returncode}: {self.output()}"
                self.stop()
                raise StunnelStartError(message)
            try:
                socket.create_connection(("127.0.0.1", self.accept_port), timeout=0.5).close()
            except OSError:
                time.sleep(0.05)
                continue
            return self
        self.stop()
        raise StunnelStartError(f"stunnel did not listen in {READY_TIMEOUT_S} s: {self.output()}")

    def stop(self) -> None:
        process, self._process = self._process, None
        stop_process(process, STOP_TIMEOUT_S)

    def __enter__(self) -> Stunnel:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
