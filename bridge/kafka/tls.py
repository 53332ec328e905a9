"""TLS for the Kafka clients: the one SSL context, and why a TLS session fails.

aiokafka logs a handshake's error and raises only "Unable to bootstrap", so a client
that cannot start over TLS asks again here, once, to say which setting to fix.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import struct
from pathlib import Path

from aiokafka.errors import KafkaConnectionError
from aiokafka.helpers import create_ssl_context

from bridge.settings import KafkaConnection, SettingsError


class KafkaTlsError(SettingsError, KafkaConnectionError):  # type: ignore[misc] # untyped base
    """The TLS settings cannot work: a file OpenSSL refuses, or a handshake that fails.

    A ``SettingsError``, so ``bridge run`` exits 2 with the message; a ``KafkaError``
    as well, so the operator commands report it as they report any Kafka failure.
    """


def ssl_context(kafka: KafkaConnection) -> ssl.SSLContext:
    """The one SSL context of every client built from ``kafka`` (built on first use)."""
    password = kafka.ssl_key_password
    return _ssl_context(
        kafka.ssl_cafile,
        kafka.ssl_certfile,
        kafka.ssl_keyfile,
        None if password is None else password.get_secret_value(),
        kafka.ssl_check_hostname,
    )


@functools.cache
def _ssl_context(
    cafile: Path | None,
    certfile: Path | None,
    keyfile: Path | None,
    password: str | None,
    check_hostname: bool,
) -> ssl.SSLContext:
    try:
        context: ssl.SSLContext = create_ssl_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise KafkaTlsError(
            f"BRIDGE_KAFKA__SSL_CAFILE: {cafile} is not a CA bundle: {exc}"
        ) from None
    if certfile is not None:
        # Loaded apart from the CA so the message can name the setting at fault. A
        # password callable, not None: without one OpenSSL would prompt on the terminal
        # for an encrypted key; an empty one fails as a wrong password does.
        try:
            context.load_cert_chain(certfile, keyfile, password=lambda: password or "")
        except (OSError, ssl.SSLError) as exc:
            raise KafkaTlsError(
                f"BRIDGE_KAFKA__SSL_CERTFILE / SSL_KEYFILE / SSL_KEY_PASSWORD: cannot load the "
                f"client certificate {certfile} with its key {keyfile} (a wrong password, or "
                f"not PEM): {exc}"
            ) from None
    context.check_hostname = check_hostname
    return context


# An ApiVersions v0 request (correlation id 1, client id "tls-check"): any broker
# answers it, so a reply means the TLS session works end to end.
_CLIENT_ID = b"tls-check"
_API_VERSIONS = struct.pack(">ihhih", 10 + len(_CLIENT_ID), 18, 0, 1, len(_CLIENT_ID)) + _CLIENT_ID
CHECK_TIMEOUT_S = 5.0


async def tls_refusal(kafka: KafkaConnection) -> str | None:
    """Why a TLS session with the bootstrap servers fails, naming the setting; None if it works.

    aiokafka logs a handshake's error and raises only "Unable to bootstrap", so a
    client that cannot start over TLS asks again here, once, to say why.
    """
    for server in kafka.bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_S):
                reader, writer = await asyncio.open_connection(
                    host, int(port), ssl=ssl_context(kafka), server_hostname=host
                )
                try:
                    # Under TLS 1.3 the broker judges the client certificate after the
                    # handshake; its refusal arrives with the first read.
                    writer.write(_API_VERSIONS)
                    await writer.drain()
                    answered = len(await reader.read(4)) == 4
                except ssl.SSLError as exc:
                    return _refused(server, kafka, str(exc.reason))
                except OSError as exc:  # reset or closed right after the handshake
                    return _refused(server, kafka, type(exc).__name__)
                finally:
                    writer.close()
            if not answered:
                # A terminator (stunnel with verify = 2) that refuses the certificate, or
                # its absence, may just close the session: nothing but TLS was spoken.
                return _refused(server, kafka, "closed the session without a reply")
        except ssl.SSLCertVerificationError as exc:
            return (
                f"the broker's certificate at {server} is not trusted ({exc.verify_message}): "
                "check BRIDGE_KAFKA__SSL_CAFILE (the CA that signs it) and "
                "BRIDGE_KAFKA__SSL_CHECK_HOSTNAME"
            )
        except ssl.SSLError as exc:
            return _refused(server, kafka, str(exc.reason))
        except (OSError, TimeoutError, ValueError):
            continue  # not a TLS problem (or not this server's): aiokafka's error stands
    return None


def _refused(server: str, kafka: KafkaConnection, why: str) -> str:
    if kafka.ssl_certfile is None:
        return (
            f"the broker at {server} refused the TLS session ({why}): it may want a "
            "client certificate: set BRIDGE_KAFKA__SSL_CERTFILE and SSL_KEYFILE"
        )
    return (
        f"the broker at {server} refused the client certificate "
        f"BRIDGE_KAFKA__SSL_CERTFILE={kafka.ssl_certfile} ({why}): expired, "
        "or not signed by a CA the broker trusts"
    )
