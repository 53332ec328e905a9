"""Every Kafka client, the service's and the operator commands', gets the whole connection.

The clients are built, inspected and closed without ever connecting.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import AIOKafkaClient

from bridge.kafka import clients
from bridge.settings import KafkaConnection, KafkaSettings, OpsKafka

SECURE = {
    "bootstrap_servers": "broker-1:9093,broker-2:9093",
    "client_id": "scorer-7",
    "security_protocol": "SASL_SSL",
    "sasl_mechanism": "SCRAM-SHA-512",
    "sasl_username": "bridge",
    "sasl_password": "s3cret",
}


def _built(kafka: KafkaSettings) -> dict[str, Callable[[], Any]]:
    return {
        "consumer": lambda: clients.make_consumer(kafka),
        "producer": lambda: clients.make_producer(kafka),
        "salvage": lambda: clients.make_raw_client(kafka),
        "reader": lambda: clients.make_reader(kafka, 4321),
        "writer": lambda: clients.make_writer(kafka, 4321),
        "admin": lambda: clients.make_admin(kafka, 4321),
    }


def _network_client(built: Any) -> AIOKafkaClient:
    """The protocol client each kind wraps: that is where the connection settings live."""
    if isinstance(built, AIOKafkaClient):
        return built
    if isinstance(built, AIOKafkaProducer):
        inner: AIOKafkaClient = built.client
        return inner
    assert isinstance(built, AIOKafkaConsumer | AIOKafkaAdminClient)
    wrapped: AIOKafkaClient = built._client
    return wrapped


def _closer(built: Any) -> Callable[[], Awaitable[None]]:
    if isinstance(built, AIOKafkaConsumer | AIOKafkaProducer):
        return built.stop  # type: ignore[no-any-return]
    return built.close  # type: ignore[no-any-return]


@asynccontextmanager
async def _client(make: Callable[[], Any]) -> AsyncIterator[AIOKafkaClient]:
    built = make()
    try:
        yield _network_client(built)
    finally:
        await _closer(built)()


@pytest.mark.parametrize("kind", list(_built(KafkaSettings(bootstrap_servers="x:1"))))
async def test_every_kind_of_client_gets_the_security_settings(kind: str) -> None:
    make = _built(KafkaSettings(**SECURE))[kind]
    async with _client(make) as client:
        assert client._bootstrap_servers == SECURE["bootstrap_servers"]
        assert client._client_id == "scorer-7"
        assert client._security_protocol == "SASL_SSL"
        assert isinstance(client._ssl_context, ssl.SSLContext)
        assert client._sasl_mechanism == "SCRAM-SHA-512"
        assert client._sasl_plain_username == "bridge"
        assert client._sasl_plain_password == SECURE["sasl_password"]


@pytest.mark.parametrize("kind", list(_built(KafkaSettings(bootstrap_servers="x:1"))))
async def test_plaintext_gets_no_tls_context(kind: str) -> None:
    async with _client(_built(KafkaSettings(bootstrap_servers="x:1"))[kind]) as client:
        assert client._security_protocol == "PLAINTEXT"
        assert client._ssl_context is None


async def test_the_commands_request_deadline_is_their_own_the_services_is_the_setting() -> None:
    kafka = KafkaSettings(bootstrap_servers="x:1", request_timeout_ms=45_000)
    for kind, make in _built(kafka).items():
        async with _client(make) as client:
            wanted = 4321 if kind in ("reader", "writer", "admin") else 45_000
            assert client._request_timeout_ms == wanted, kind


def test_every_connection_setting_is_one_the_commands_read() -> None:
    # A setting added to KafkaConnection (TLS files, OAUTHBEARER) reaches the commands too.
    assert set(KafkaConnection.model_fields) <= set(OpsKafka.model_fields)
    assert set(KafkaConnection.model_fields) <= set(KafkaSettings.model_fields)
