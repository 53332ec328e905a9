"""TLS to the model server: its settings, and the PEM files read for gRPC and https.

Apart from both clients so neither imports the other's library: gRPC wants the
PEM bytes (``grpc.ssl_channel_credentials``), httpx an ``ssl.SSLContext``.
Setting the CA file is what turns TLS on; a certificate and its key add a client
certificate (mTLS). The files are read when a client is built, so a Secret that
was rotated is picked up by the next start, not half-way through a channel.

For REST the CA file needs an ``https://`` ``BRIDGE_SERVING__REST_URL`` (TF
Serving's REST port has no TLS of its own: the https end is a terminator in front
of it). An https URL without the CA file is fine too: httpx's default trust store.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, Field, field_validator, model_validator

_PREFIX = "BRIDGE_SERVING__"
CAFILE, CERTFILE, KEYFILE, TARGET_NAME, REST_URL = (
    _PREFIX + name
    for name in ("SSL_CAFILE", "SSL_CERTFILE", "SSL_KEYFILE", "SSL_TARGET_NAME", "REST_URL")
)


class ServingTlsError(ValueError):
    """TLS settings that cannot work; the message names the setting to fix.

    A ValueError so that raised in a settings validator it becomes a settings error
    (``bridge run`` exits 2) like every other bad setting.
    """


def _no_password() -> bytes:
    # There is no key-password setting for TF Serving (gRPC cannot use an encrypted
    # key either). Without a callback OpenSSL would prompt on the terminal and hang
    # a service; an empty password makes an encrypted key fail to load instead.
    return b""


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
        """For https: trusts only the CA file (a private CA is the point of setting it).

        Raises ``ServingTlsError`` naming the setting when OpenSSL refuses a file.
        """
        try:
            context = ssl.create_default_context(cafile=str(self.cafile))
        except (ssl.SSLError, OSError) as exc:
            raise ServingTlsError(
                f"{CAFILE}: OpenSSL cannot load {self.cafile} as CA certificates ({_reason(exc)})"
            ) from None
        if self.certfile is not None:
            try:
                context.load_cert_chain(self.certfile, self.keyfile, password=_no_password)
            except (ssl.SSLError, OSError) as exc:
                raise ServingTlsError(
                    f"{CERTFILE}, {KEYFILE}: OpenSSL refuses {self.certfile} with {self.keyfile} "
                    f"({_reason(exc)}): the key must be the certificate's, unencrypted PEM"
                ) from None
        return context


def _reason(exc: ssl.SSLError | OSError) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)  # e.g. KEY_VALUES_MISMATCH, NO_CERTIFICATE_OR_CRL_FOUND
    # "[SSL] PEM lib (_ssl.c:3926)": the C source line helps nobody.
    return str(exc.strerror or exc).split(" (_ssl.c:")[0]


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
        tls = self.tls()
        if tls is None:
            return self
        if getattr(self, "protocol", "grpc") == "rest":
            # Set on the mixing-in ServingSettings; a gRPC bridge does not use the URL.
            check_rest_url(str(getattr(self, "rest_url", "")), tls)
        # Built once now for either protocol (the files are the same): a key that is not
        # the certificate's, an encrypted one, or a CA file OpenSSL cannot parse stops
        # the start with the setting's name, not at a connection attempt later.
        tls.ssl_context()
        return self

    def tls(self) -> ServingTls | None:
        """The TLS files for a client, or None for plaintext."""
        if self.ssl_cafile is None:
            return None
        return ServingTls(
            self.ssl_cafile, self.ssl_certfile, self.ssl_keyfile, self.ssl_target_name
        )


def check_rest_url(url: str, tls: ServingTls | None) -> None:
    """Refuse the CA file with a plain ``http://`` URL: the files would be ignored and
    requests, results included, would cross the network in the clear."""
    if tls is not None and not url.lower().startswith("https://"):
        raise ServingTlsError(
            f"{CAFILE} is set but {REST_URL} ({url}) is not https://: "
            "use the https URL of the TLS terminator in front of TF Serving's REST port, "
            f"or unset {CAFILE}"
        )
