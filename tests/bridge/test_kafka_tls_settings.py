"""Kafka TLS and SASL settings: what is refused at load, and the SSL context the client
factory builds from them (no sockets; the PEM files are in ``tls_certs/``)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from bridge.kafka import tls
from bridge.kafka.clients import make_admin, make_consumer, make_producer
from bridge.kafka.tls import KafkaTlsError
from bridge.settings import KafkaConnection, KafkaSettings, SettingsError, load_settings

CERTS = Path(__file__).parent / "tls_certs"
CA, CERT, KEY = CERTS / "test-ca.pem", CERTS / "client.pem", CERTS / "client.key"
ENCRYPTED_KEY = CERTS / "client-encrypted.key"
PASSWORD = "client-key-password"  # noqa: S105 - the throwaway test key's

REQUIRED = {
    "BRIDGE_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9",
    "BRIDGE_TOPICS__INPUT": "in",
    "BRIDGE_TOPICS__RESULTS": "out",
    "BRIDGE_TOPICS__FAILURES": "dlq",
    "BRIDGE_MODEL__NAME": "fraud",
}


@pytest.fixture(autouse=True)
def _fresh_contexts() -> None:
    tls._ssl_context.cache_clear()


def load(monkeypatch: pytest.MonkeyPatch, **kafka: str) -> KafkaSettings:
    for name, value in {**REQUIRED, **{f"BRIDGE_KAFKA__{k}": v for k, v in kafka.items()}}.items():
        monkeypatch.setenv(name, value)
    return load_settings().kafka


def refused(monkeypatch: pytest.MonkeyPatch, **kafka: str) -> str:
    with pytest.raises(SettingsError) as caught:
        load(monkeypatch, **kafka)
    return str(caught.value)


def test_tls_settings_load(monkeypatch: pytest.MonkeyPatch) -> None:
    kafka = load(
        monkeypatch,
        SECURITY_PROTOCOL="SSL",
        SSL_CAFILE=str(CA),
        SSL_CERTFILE=str(CERT),
        SSL_KEYFILE=str(ENCRYPTED_KEY),
        SSL_KEY_PASSWORD=PASSWORD,
        SSL_CHECK_HOSTNAME="false",
    )
    assert (kafka.ssl_cafile, kafka.ssl_certfile, kafka.ssl_keyfile) == (CA, CERT, ENCRYPTED_KEY)
    assert kafka.ssl_check_hostname is False
    assert PASSWORD not in repr(kafka)


def test_hostname_check_is_on_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load(monkeypatch, SECURITY_PROTOCOL="SSL").ssl_check_hostname is True


@pytest.mark.parametrize("setting", ["SSL_CAFILE", "SSL_CERTFILE", "SSL_KEYFILE"])
def test_a_file_that_does_not_exist_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, setting: str
) -> None:
    pair = {"SSL_CERTFILE": str(CERT), "SSL_KEYFILE": str(KEY)}
    message = refused(
        monkeypatch, SECURITY_PROTOCOL="SSL", **{**pair, setting: str(tmp_path / "nope.pem")}
    )
    assert f"BRIDGE_KAFKA__{setting}: cannot read {tmp_path / 'nope.pem'}" in message


def test_an_unreadable_file_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A directory cannot be read as a file, also as root (who reads any mode).
    message = refused(monkeypatch, SECURITY_PROTOCOL="SSL", SSL_CAFILE=str(tmp_path))
    assert "BRIDGE_KAFKA__SSL_CAFILE: cannot read" in message


@pytest.mark.parametrize(
    ("given", "missing"), [("SSL_CERTFILE", "SSL_KEYFILE"), ("SSL_KEYFILE", "SSL_CERTFILE")]
)
def test_a_certificate_needs_its_key_and_a_key_its_certificate(
    monkeypatch: pytest.MonkeyPatch, given: str, missing: str
) -> None:
    path = CERT if given == "SSL_CERTFILE" else KEY
    message = refused(monkeypatch, SECURITY_PROTOCOL="SSL", **{given: str(path)})
    assert f"BRIDGE_KAFKA__{missing} is missing" in message


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SASL_PLAINTEXT"])
def test_tls_files_without_tls_are_refused_not_ignored(
    monkeypatch: pytest.MonkeyPatch, protocol: str
) -> None:
    sasl = {"SASL_MECHANISM": "PLAIN", "SASL_USERNAME": "u", "SASL_PASSWORD": "p"}
    message = refused(monkeypatch, SECURITY_PROTOCOL=protocol, SSL_CAFILE=str(CA), **sasl)
    assert "BRIDGE_KAFKA__SSL_CAFILE would be ignored" in message
    assert f"SECURITY_PROTOCOL={protocol}" in message


@pytest.mark.parametrize("missing", ["SASL_MECHANISM", "SASL_USERNAME", "SASL_PASSWORD"])
def test_sasl_needs_a_mechanism_and_credentials(
    monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    sasl = {"SASL_MECHANISM": "SCRAM-SHA-512", "SASL_USERNAME": "u", "SASL_PASSWORD": "secret"}
    del sasl[missing]
    message = refused(monkeypatch, SECURITY_PROTOCOL="SASL_SSL", **sasl)
    assert f"BRIDGE_KAFKA__{missing} is needed" in message
    assert "secret" not in message


def connection(**ssl_settings: object) -> KafkaConnection:
    return KafkaConnection(bootstrap_servers="127.0.0.1:9", security_protocol="SSL", **ssl_settings)  # type: ignore[arg-type]


def test_the_context_trusts_the_ca_and_holds_the_client_certificate() -> None:
    context = tls.ssl_context(
        connection(
            ssl_cafile=CA, ssl_certfile=CERT, ssl_keyfile=ENCRYPTED_KEY, ssl_key_password=PASSWORD
        )
    )
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "test-ca"),),)]
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True


def test_the_hostname_check_can_be_turned_off() -> None:
    context = tls.ssl_context(connection(ssl_cafile=CA, ssl_check_hostname=False))
    assert context.check_hostname is False
    assert context.verify_mode == ssl.CERT_REQUIRED  # the chain is still checked


async def test_every_client_of_the_factory_gets_the_same_context() -> None:
    kafka = KafkaSettings(
        bootstrap_servers="127.0.0.1:9",
        security_protocol="SSL",
        ssl_cafile=CA,
        ssl_certfile=CERT,
        ssl_keyfile=KEY,
    )
    consumer, producer, admin = make_consumer(kafka), make_producer(kafka), make_admin(kafka, 1000)
    try:
        contexts = {
            id(consumer._client._ssl_context),
            id(producer.client._ssl_context),
            id(admin._client._ssl_context),
        }
    finally:
        await consumer.stop()  # never started: this only closes them
        await producer.stop()
        await admin.close()
    assert contexts == {id(tls.ssl_context(kafka))}


@pytest.mark.parametrize("password", ["wrong", None])
def test_a_wrong_or_missing_key_password_is_a_settings_error(password: str | None) -> None:
    kafka = connection(ssl_certfile=CERT, ssl_keyfile=ENCRYPTED_KEY, ssl_key_password=password)
    with pytest.raises(KafkaTlsError, match="SSL_KEY_PASSWORD"):
        tls.ssl_context(kafka)


def test_a_file_that_is_not_pem_is_a_settings_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(KafkaTlsError, match="BRIDGE_KAFKA__SSL_CAFILE"):
        tls.ssl_context(connection(ssl_cafile=junk))
    with pytest.raises(KafkaTlsError, match="BRIDGE_KAFKA__SSL_CERTFILE"):
        tls.ssl_context(connection(ssl_certfile=junk, ssl_keyfile=KEY))
