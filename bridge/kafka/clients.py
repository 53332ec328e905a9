"""Every aiokafka client the bridge and the operator commands use, built in one place.

Each one gets the whole ``KafkaConnection`` (servers, client id, security
protocol, TLS files, SASL): a setting added there reaches every client through
``_connection``, and nothing under ``bridge/`` constructs an aiokafka client
anywhere else. The clients differ only in what they are for.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import ssl
import struct
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import AIOKafkaClient
from aiokafka.conn import create_conn
from aiokafka.errors import (
    IllegalSaslStateError,
    KafkaConnectionError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from aiokafka.helpers import create_ssl_context

from bridge.settings import KafkaConnection, KafkaSettings, SettingsError

# A round of outputs holds one batch per output partition (bridge.kafka.delivery), so a
# batch may take a whole round; brokers accept 1 MiB batches by default.
PRODUCER_BATCH_BYTES = 512 * 1024


def _connection(kafka: KafkaConnection, request_timeout_ms: int) -> dict[str, Any]:
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers,
        "client_id": kafka.client_id,
        "security_protocol": kafka.security_protocol,
        "request_timeout_ms": request_timeout_ms,
    }
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = ssl_context(kafka)
    if kafka.sasl_mechanism is not None:
        options["sasl_mechanism"] = kafka.sasl_mechanism
        options["sasl_plain_username"] = kafka.sasl_username
        if kafka.sasl_password is not None:
            options["sasl_plain_password"] = kafka.sasl_password.get_secret_value()
    return options


# -- TLS ---------------------------------------------------------------------------------


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
_CHECK_TIMEOUT_S = 5.0


async def tls_refusal(kafka: KafkaConnection) -> str | None:
    """Why a TLS session with the bootstrap servers fails, naming the setting; None if it works.

    aiokafka logs a handshake's error and raises only "Unable to bootstrap", so a
    client that cannot start over TLS asks again here, once, to say why.
    """
    for server in kafka.bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            async with asyncio.timeout(_CHECK_TIMEOUT_S):
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


# -- SASL --------------------------------------------------------------------------------


class KafkaSaslError(SettingsError, KafkaConnectionError):  # type: ignore[misc] # untyped base
    """The broker refused the SASL login: exit 2 for ``bridge run``, a Kafka failure for
    the operator commands (as ``KafkaTlsError``)."""


# The mechanisms whose login is the username and password; OAUTHBEARER's token errors
# are bridge.kafka.oauth's to explain.
_PASSWORD_MECHANISMS = frozenset({"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"})
_SASL_SETTINGS = (
    "check BRIDGE_KAFKA__SASL_USERNAME, BRIDGE_KAFKA__SASL_PASSWORD and "
    "BRIDGE_KAFKA__SASL_MECHANISM"
)
# What one aiokafka connection accepts of a client's options (no bootstrap list, no
# client-only knobs); read from aiokafka so an option added to _connection passes through.
_CONNECTION_OPTIONS = frozenset(inspect.signature(create_conn).parameters) - {"host", "port"}


async def sasl_refusal(kafka: KafkaConnection) -> str | None:
    """Why the SASL login at the bootstrap servers fails, naming the settings; None if it
    works or fails for a reason that is not the login (an unreachable broker).

    aiokafka logs a refused login and raises only "Unable to bootstrap", or lets its SCRAM
    client's KeyError/ValueError out when the server's last message is an error (Tansu
    sends one) - so a client that cannot start asks once more, on one connection, why.
    """
    options = {
        key: value
        for key, value in _connection(kafka, int(_CHECK_TIMEOUT_S * 1000)).items()
        if key in _CONNECTION_OPTIONS
    }
    who = f"BRIDGE_KAFKA__SASL_USERNAME={kafka.sasl_username} with {kafka.sasl_mechanism}"
    for server in kafka.bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            async with asyncio.timeout(_CHECK_TIMEOUT_S):
                connection = await create_conn(host, int(port), **options)
        except (SaslAuthenticationFailed, KeyError, ValueError) as exc:
            if isinstance(exc, SaslAuthenticationFailed):
                detail = str(exc)  # the broker's own words (Apache Kafka sends some)
            elif isinstance(exc, KeyError):
                detail = "its last SCRAM message is an error, not its proof"
            else:
                detail = "its SCRAM proof does not match the password"
            return f"the broker at {server} refused the SASL login of {who} ({detail}): " + (
                _SASL_SETTINGS
            )
        except (UnsupportedSaslMechanismError, IllegalSaslStateError) as exc:
            return (
                f"the broker at {server} does not accept BRIDGE_KAFKA__SASL_MECHANISM="
                f"{kafka.sasl_mechanism} ({exc}): check BRIDGE_KAFKA__SASL_MECHANISM and "
                "BRIDGE_KAFKA__SECURITY_PROTOCOL"
            )
        except KafkaConnectionError:
            # The TCP (and TLS) connection was made: the broker hung up during the login.
            # Tansu does that for a mechanism it does not offer (PLAIN).
            return (
                f"the broker at {server} closed the connection during the SASL login of "
                f"{who}: it may not offer that mechanism, or the listener may not be "
                f"{kafka.security_protocol} (BRIDGE_KAFKA__SECURITY_PROTOCOL); " + _SASL_SETTINGS
            )
        except (OSError, TimeoutError):
            continue  # not reached: not the login's fault, aiokafka's error stands
        connection.close()
    return None


async def _start(start: Any, kafka: KafkaConnection) -> None:
    """Start a client; a TLS failure becomes ``KafkaTlsError`` and a refused SASL login
    ``KafkaSaslError`` instead of "Unable to bootstrap" (or a bare KeyError)."""
    try:
        await start()
    except (KafkaConnectionError, KeyError, ValueError) as exc:
        if isinstance(exc, KafkaTlsError | KafkaSaslError):
            raise
        if not isinstance(exc, KafkaConnectionError) and (
            kafka.sasl_mechanism not in _PASSWORD_MECHANISMS
        ):
            raise  # a KeyError/ValueError that no SASL login explains
        if kafka.security_protocol.endswith("SSL"):
            reason = await tls_refusal(kafka)
            if reason is not None:
                raise KafkaTlsError(reason) from exc
        if kafka.security_protocol.startswith("SASL_") and (
            kafka.sasl_mechanism in _PASSWORD_MECHANISMS
        ):
            reason = await sasl_refusal(kafka)
            if reason is not None:
                raise KafkaSaslError(reason) from exc
        raise


def _explaining(client: Any, kafka: KafkaConnection) -> Any:
    """``client`` with a ``start`` that says why TLS failed (aiokafka's clients are untyped,
    so they are wrapped per instance rather than subclassed)."""
    client.start = functools.partial(_start, client.start, kafka)
    return client


def make_consumer(kafka: KafkaSettings) -> AIOKafkaConsumer:
    return _explaining(
        AIOKafkaConsumer(
            **_connection(kafka, kafka.request_timeout_ms),
            group_id=kafka.group_id,
            # Offsets are committed only after the output record is acknowledged.
            enable_auto_commit=False,
            auto_offset_reset=kafka.auto_offset_reset,
            session_timeout_ms=kafka.session_timeout_ms,
            heartbeat_interval_ms=max(kafka.session_timeout_ms // 3, 100),
            max_poll_interval_ms=kafka.max_poll_interval_ms,
            fetch_max_wait_ms=kafka.fetch_max_wait_ms,
            fetch_max_bytes=kafka.fetch_max_bytes,
            max_partition_fetch_bytes=kafka.max_partition_fetch_bytes,
        ),
        kafka,
    )


def make_producer(kafka: KafkaSettings) -> AIOKafkaProducer:
    return _explaining(
        AIOKafkaProducer(
            **_connection(kafka, kafka.request_timeout_ms),
            acks="all",
            linger_ms=kafka.producer_linger_ms,
            max_batch_size=PRODUCER_BATCH_BYTES,
            compression_type=None
            if kafka.producer_compression == "none"
            else kafka.producer_compression,
            # Idempotence would also need InitProducerId, which the dev broker lacks; aiokafka
            # keeps one request in flight per partition, so order holds without it.
            enable_idempotence=False,
        ),
        kafka,
    )


def make_raw_client(kafka: KafkaSettings) -> AIOKafkaClient:
    """A protocol-level client for the salvage path's raw fetches (``bridge.kafka.salvage``)."""
    return AIOKafkaClient(**_connection(kafka, kafka.request_timeout_ms))


# The control topic's clients. The operator commands pass their own deadline as the
# request timeout; the service passes its KAFKA__REQUEST_TIMEOUT_MS.


def make_reader(kafka: KafkaConnection, request_timeout_ms: int) -> AIOKafkaConsumer:
    """A consumer outside any group, for reading a whole topic (nothing is committed)."""
    return _explaining(
        AIOKafkaConsumer(
            **_connection(kafka, request_timeout_ms),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        ),
        kafka,
    )


def make_writer(kafka: KafkaConnection, request_timeout_ms: int) -> AIOKafkaProducer:
    """A producer for single acknowledged records (``bridge routes set``)."""
    return _explaining(
        AIOKafkaProducer(
            **_connection(kafka, request_timeout_ms),
            acks="all",
            enable_idempotence=False,  # the dev broker lacks InitProducerId; one record anyway
        ),
        kafka,
    )


def make_admin(kafka: KafkaConnection, request_timeout_ms: int) -> AIOKafkaAdminClient:
    """For creating and describing the control topic."""
    return _explaining(AIOKafkaAdminClient(**_connection(kafka, request_timeout_ms)), kafka)
