"""Every Kafka client, the service's and the operator commands', gets the whole connection.

The clients are built, inspected and closed without ever connecting.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import (
    KafkaConnectionError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)

from bridge.kafka import clients, sasl
from bridge.kafka.oauth import ClientCredentialsTokenProvider, FileTokenProvider
from bridge.settings import KafkaConnection, KafkaSettings, OpsKafka, SettingsError

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
async def test_every_kind_of_client_shares_one_oauthbearer_token_source(
    kind: str, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("opaque-token")
    kafka = KafkaSettings(
        bootstrap_servers="x:1",
        security_protocol="SASL_SSL",
        sasl_mechanism="OAUTHBEARER",
        sasl_oauth_token_file=token,
    )
    async with _client(_built(kafka)[kind]) as client:
        assert client._sasl_mechanism == "OAUTHBEARER"
        provider = client._sasl_oauth_token_provider
        assert isinstance(provider, FileTokenProvider)
        assert provider is sasl.token_provider(kafka)  # one cache for every client
        assert await provider.token() == "opaque-token"


async def test_the_token_endpoint_source_gets_the_client_and_scope() -> None:
    kafka = KafkaSettings.model_validate(
        {
            "bootstrap_servers": "x:1",
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "OAUTHBEARER",
            "sasl_oauth_token_endpoint_url": "https://idp.example/token",
            "sasl_oauth_client_id": "bridge",
            "sasl_oauth_client_secret": "s3cret",
            "sasl_oauth_scope": "kafka",
        }
    )
    async with _client(lambda: clients.make_consumer(kafka)) as client:
        assert isinstance(client._sasl_oauth_token_provider, ClientCredentialsTokenProvider)


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


# -- a refused SASL login, explained at start (bridge.kafka.clients._start) ----------------
# aiokafka says only "Unable to bootstrap" (or lets a KeyError out of its SCRAM client);
# the start asks once more on one connection. Here that connection is a stand-in.

LOGIN = {
    "bootstrap_servers": "127.0.0.1:1",
    "security_protocol": "SASL_PLAINTEXT",
    "sasl_mechanism": "SCRAM-SHA-256",
    "sasl_username": "bridge",
    "sasl_password": "s3cret",
}
SASL_SETTINGS = ("SASL_USERNAME", "SASL_PASSWORD", "SASL_MECHANISM")


def _failing(exc: BaseException) -> Callable[[], Awaitable[None]]:
    async def start() -> None:
        raise exc

    return start


class Probe:
    """Stands in for aiokafka's create_conn: records each call's options, then fails
    with ``outcome`` or returns a connection whose close it records."""

    def __init__(self, outcome: BaseException | None) -> None:
        self.outcome = outcome
        self.calls: list[dict[str, Any]] = []
        self.closed = False

    async def __call__(self, host: str, port: int, **options: Any) -> Probe:
        self.calls.append(options)
        if self.outcome is not None:
            raise self.outcome
        return self

    def close(self) -> None:
        self.closed = True


def _probe(monkeypatch: pytest.MonkeyPatch, outcome: BaseException | None) -> Probe:
    probe = Probe(outcome)
    monkeypatch.setattr(sasl, "create_conn", probe)
    return probe


@pytest.mark.parametrize(
    ("refusal", "said"),
    [
        (
            SaslAuthenticationFailed("invalid credentials with SASL mechanism"),
            "invalid credentials",
        ),
        (KeyError("v"), "an error, not its proof"),  # Tansu's SCRAM answer to a wrong login
        (ValueError("Server sent wrong signature!"), "does not match the password"),
    ],
)
async def test_a_refused_login_is_a_settings_error_naming_the_sasl_settings(
    monkeypatch: pytest.MonkeyPatch, refusal: BaseException, said: str
) -> None:
    probe = _probe(monkeypatch, refusal)
    with pytest.raises(clients.KafkaSaslError) as caught:
        await clients._start(
            _failing(KafkaConnectionError("Unable to bootstrap")), KafkaSettings(**LOGIN)
        )
    assert isinstance(caught.value, SettingsError)  # so `bridge run` exits 2
    message = str(caught.value)
    assert all(f"BRIDGE_KAFKA__{name}" in message for name in SASL_SETTINGS), message
    assert said in message and "s3cret" not in message
    # The probe logs in as every client does.
    assert probe.calls[0]["sasl_plain_password"] == LOGIN["sasl_password"]
    assert probe.calls[0]["sasl_mechanism"] == "SCRAM-SHA-256"


async def test_a_key_error_from_the_scram_client_is_explained_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _probe(monkeypatch, KeyError("v"))
    with pytest.raises(clients.KafkaSaslError):
        await clients._start(_failing(KeyError("v")), KafkaSettings(**LOGIN))


async def test_a_mechanism_the_broker_refuses_names_the_mechanism(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _probe(monkeypatch, UnsupportedSaslMechanismError("enabled: SCRAM-SHA-512"))
    with pytest.raises(clients.KafkaSaslError, match="BRIDGE_KAFKA__SASL_MECHANISM=SCRAM-SHA-256"):
        await clients._start(_failing(KafkaConnectionError("x")), KafkaSettings(**LOGIN))


@pytest.mark.parametrize("unreachable", [OSError("refused"), TimeoutError()])
async def test_an_unreachable_broker_keeps_aiokafkas_error(
    monkeypatch: pytest.MonkeyPatch, unreachable: BaseException
) -> None:
    # Not a wrong setting: the service's handling of an outage must still see it.
    _probe(monkeypatch, unreachable)
    original = KafkaConnectionError("Unable to bootstrap")
    with pytest.raises(KafkaConnectionError) as caught:
        await clients._start(_failing(original), KafkaSettings(**LOGIN))
    assert caught.value is original


async def test_a_login_that_works_keeps_aiokafkas_error_and_closes_the_probe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    probe = _probe(monkeypatch, None)
    original = KafkaConnectionError("Unable to bootstrap")
    with pytest.raises(KafkaConnectionError) as caught:
        await clients._start(_failing(original), KafkaSettings(**LOGIN))
    assert caught.value is original
    assert probe.closed


async def test_without_sasl_nothing_is_probed(monkeypatch: pytest.MonkeyPatch) -> None:
    probe = _probe(monkeypatch, SaslAuthenticationFailed("never asked"))
    with pytest.raises(KeyError):
        await clients._start(_failing(KeyError("v")), KafkaSettings(bootstrap_servers="x:1"))
    with pytest.raises(KafkaConnectionError):
        await clients._start(
            _failing(KafkaConnectionError("down")), KafkaSettings(bootstrap_servers="x:1")
        )
    assert probe.calls == []
