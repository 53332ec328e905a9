"""TLS to the model server: its settings, and the PEM files read for gRPC and https.

Apart from both clients so neither imports the other's library: gRPC wants the
PEM bytes (``grpc.ssl_channel_credentials``), httpx an ``ssl.SSLContext``.
Setting the CA file is what turns TLS on; a certificate and its key add a client
certificate (mTLS). The files are read when a client is built, so a Secret that
was rotated is picked up by the next start, not half-way through a channel.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, Field, field_validator, model_validator

_PREFIX = "BRIDGE_SERVING__"


@dataclass(frozen=True)
class ServingTls:
    cafile: Path
    certfile: Path | None = None
    keyfile: Path | None = None
    # The name the server's certificate must carry, when it is not the target's host.
    target_name: str | None = None

    def pem(self) -> tuple[bytes, bytes | None, bytes | None]:
        """(CA certificates, client certificate chain, client private key)."""
        chain = self.certfile.read_bytes() if self.certfile else None
        key = self.keyfile.read_bytes() if self.keyfile else None
        return self.cafile.read_bytes(), chain, key

    def ssl_context(self) -> ssl.SSLContext:
        """For https: trusts only the CA file (a private CA is the point of setting it)."""
        context = ssl.create_default_context(cafile=str(self.cafile))
        if self.certfile is not None:
            context.load_cert_chain(self.certfile, self.keyfile)
        return context


class ServingTlsSettings(BaseModel):
    """The ``BRIDGE_SERVING__SSL_*`` settings, mixed into ``ServingSettings`` (which
    ``OpsServing`` extends, so ``bridge serving ...`` checks them the same way).
    """

    ssl_cafile: Path | None = Field(
        None, description="CA bundle (PEM) for TF Serving; setting it turns TLS on"
    )
    ssl_certfile: Path | None = Field(
        None, description="Client certificate (PEM) for mTLS to TF Serving"
    )
    ssl_keyfile: Path | None = Field(None, description="Private key (PEM) of SSL_CERTFILE")
    ssl_target_name: str | None = Field(
        None, description="Name TF Serving's certificate must carry (unset: the target's host)"
    )

    @field_validator("ssl_cafile", "ssl_certfile", "ssl_keyfile")
    @classmethod
    def _pem_file(cls, path: Path | None) -> Path | None:
        # Read now, so a wrong path or a Secret mounted without read access stops the
        # start with the setting's name instead of failing every TLS handshake later.
        if path is None:
            return None
        try:
            head = path.read_bytes()[:65536]
        except OSError as exc:
            raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
        if b"-----BEGIN " not in head:
            raise ValueError(f"{path} holds no PEM block (-----BEGIN ...)")
        return path

    @model_validator(mode="after")
    def _tls_complete(self) -> ServingTlsSettings:
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError(f"{_PREFIX}SSL_CERTFILE and {_PREFIX}SSL_KEYFILE go together")
        unused = [
            _PREFIX + name.upper()
            for name in ("ssl_certfile", "ssl_keyfile", "ssl_target_name")
            if getattr(self, name) is not None
        ]
        if unused and self.ssl_cafile is None:
            # Without the CA the connection is plaintext: these would be ignored.
            raise ValueError(f"{', '.join(unused)} set without {_PREFIX}SSL_CAFILE (turns TLS on)")
        if self.ssl_cafile is not None and getattr(self, "protocol", "grpc") == "rest":
            # The REST client speaks plain HTTP so far: it would ignore the files silently.
            raise ValueError(f"{_PREFIX}SSL_CAFILE is for gRPC only (REST over https is not built)")
        return self

    def tls(self) -> ServingTls | None:
        """The TLS files for a client, or None for plaintext."""
        if self.ssl_cafile is None:
            return None
        return ServingTls(
            self.ssl_cafile, self.ssl_certfile, self.ssl_keyfile, self.ssl_target_name
        )
