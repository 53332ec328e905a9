"""Every aiokafka client the bridge and the operator commands use, built in one place.

Each one gets the whole ``KafkaConnection`` (servers, client id, security
protocol, SASL): a setting added there reaches every client through
``_connection``, and nothing under ``bridge/`` constructs an aiokafka client
anywhere else. The clients differ only in what they are for.
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import AIOKafkaClient
from aiokafka.helpers import create_ssl_context

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
        options["ssl_context"] = create_ssl_context()
    if kafka.sasl_mechanism is not None:
        options["sasl_mechanism"] = kafka.sasl_mechanism
        options["sasl_plain_username"] = kafka.sasl_username
        if kafka.sasl_password is not None:
            options["sasl_plain_password"] = kafka.sasl_password.get_secret_value()
    return options


def make_consumer(kafka: KafkaSettings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
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
    )


def make_producer(kafka: KafkaSettings) -> AIOKafkaProducer:
    return AIOKafkaProducer(
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
    )


def make_raw_client(kafka: KafkaSettings) -> AIOKafkaClient:
    """A protocol-level client for the salvage path's raw fetches (``bridge.kafka.salvage``)."""
    return AIOKafkaClient(**_connection(kafka, kafka.request_timeout_ms))


# The control topic's clients. The operator commands pass their own deadline as the
# request timeout; the service passes its KAFKA__REQUEST_TIMEOUT_MS.


def make_reader(kafka: KafkaConnection, request_timeout_ms: int) -> AIOKafkaConsumer:
    """A consumer outside any group, for reading a whole topic (nothing is committed)."""
    return AIOKafkaConsumer(
        **_connection(kafka, request_timeout_ms),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )


def make_writer(kafka: KafkaConnection, request_timeout_ms: int) -> AIOKafkaProducer:
    """A producer for single acknowledged records (``bridge routes set``)."""
    return AIOKafkaProducer(
        **_connection(kafka, request_timeout_ms),
        acks="all",
        enable_idempotence=False,  # the dev broker lacks InitProducerId; one record anyway
    )


def make_admin(kafka: KafkaConnection, request_timeout_ms: int) -> AIOKafkaAdminClient:
    """For creating and describing the control topic."""
    return AIOKafkaAdminClient(**_connection(kafka, request_timeout_ms))
