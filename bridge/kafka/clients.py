"""Every aiokafka client the bridge and the operator commands use, built in one place.

Each one gets the whole ``KafkaConnection`` (servers, client id, security
protocol, TLS files, SASL): a setting added there reaches every client through
``_connection``, and nothing under ``bridge/`` constructs an aiokafka client
anywhere else. The clients differ only in what they are for. A client that cannot
start says why when TLS or SASL is the reason (``bridge.kafka.tls``, ``.sasl``).
"""

from __future__ import annotations

import functools
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaConnectionError

from bridge.kafka.sasl import PASSWORD_MECHANISMS, KafkaSaslError, sasl_refusal, token_provider
from bridge.kafka.tls import CHECK_TIMEOUT_S, KafkaTlsError, ssl_context, tls_refusal
from bridge.settings import KafkaConnection, KafkaSettings

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
    if kafka.sasl_mechanism == "OAUTHBEARER":
        options["sasl_mechanism"] = kafka.sasl_mechanism
        options["sasl_oauth_token_provider"] = token_provider(kafka)
    elif kafka.sasl_mechanism is not None:
        options["sasl_mechanism"] = kafka.sasl_mechanism
        options["sasl_plain_username"] = kafka.sasl_username
        if kafka.sasl_password is not None:
            options["sasl_plain_password"] = kafka.sasl_password.get_secret_value()
    return options


async def _start(start: Any, kafka: KafkaConnection) -> None:
    """Start a client; a TLS failure becomes ``KafkaTlsError`` and a refused SASL login
    ``KafkaSaslError`` instead of "Unable to bootstrap" (or a bare KeyError)."""
    try:
        await start()
    except (KafkaConnectionError, KeyError, ValueError) as exc:
        if isinstance(exc, KafkaTlsError | KafkaSaslError):
            raise
        if not isinstance(exc, KafkaConnectionError) and (
            kafka.sasl_mechanism not in PASSWORD_MECHANISMS
        ):
            raise  # a KeyError/ValueError that no SASL login explains
        if kafka.security_protocol.endswith("SSL"):
            reason = await tls_refusal(kafka)
            if reason is not None:
                raise KafkaTlsError(reason) from exc
        if kafka.security_protocol.startswith("SASL_"):
            check_options = _connection(kafka, int(CHECK_TIMEOUT_S * 1000))
            reason = await sasl_refusal(kafka, check_options)
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
            isolation_level=kafka.isolation_level,
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


def make_group_reader(
    kafka: KafkaConnection, group_id: str, request_timeout_ms: int
) -> AIOKafkaConsumer:
    """A consumer that commits to ``group_id`` for the partitions it assigns itself.

    For ``bridge failures replay``: a batch command over every partition, so it joins
    no group (no rebalance to wait for) and commits only what it wrote and Kafka
    acknowledged.
    """
    return _explaining(
        AIOKafkaConsumer(
            **_connection(kafka, request_timeout_ms),
            group_id=group_id,
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
