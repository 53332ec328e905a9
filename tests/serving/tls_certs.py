"""Throwaway certificates for the TLS tests, made with the ``openssl`` command.

``cryptography`` is not in the virtualenv and the tests should not add it, so the
CA, the server and client certificates (each signed by the CA) and a second,
untrusted CA are made by ``openssl`` in a tmp dir. Keys are P-256 (fast to make);
validity is a day, which outlives any test run.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

# Names the server certificate is valid for; the tests connect to 127.0.0.1.
SERVER_NAMES = "DNS:localhost,IP:127.0.0.1,DNS:model-server.test"


@dataclass(frozen=True)
class Certs:
    """Paths of the PEM files; ``other_ca`` signed nothing here."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path

    def ssl_config(self, *, client_verify: bool) -> str:
        """An ``SSLConfig`` text proto with the PEM contents inline, as upstream reads it."""

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
    # A fixed argv of the test's own paths; check=True so a failure stops the test.
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=30)


def _ca(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return cert, key


def _signed(
    directory: Path, name: str, ca: tuple[Path, Path], extensions: str
) -> tuple[Path, Path]:
    cert, key, csr = (directory / f"{name}{ext}" for ext in (".pem", ".key", ".csr"))
    ext_file = directory / f"{name}.ext"
    ext_file.write_text(extensions, encoding="ascii")
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", key, "-out", csr, "-subj", f"/CN={name}",
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial",
        "-out", cert, "-days", "1", "-extfile", ext_file,
    )  # fmt: skip
    return cert, key


def make_certs(directory: Path) -> Certs:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed (needed to make test certificates)")
    directory.mkdir(parents=True, exist_ok=True)
    ca = _ca(directory, "test-ca")
    server = _signed(
        directory,
        "server",
        ca,
        f"subjectAltName={SERVER_NAMES}\nextendedKeyUsage=serverAuth\n",
    )
    client = _signed(directory, "client", ca, "extendedKeyUsage=clientAuth\n")
    other_ca, _ = _ca(directory, "other-ca")
    return Certs(ca[0], server[0], server[1], client[0], client[1], other_ca)
