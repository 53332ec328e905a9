"""Kafka SASL settings (PLAIN, SCRAM, OAUTHBEARER), secrets read from ``*_FILE`` paths,
and the isolation level: what loads, what is refused at load and how it is named."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.cli import main as cli_main
from bridge.settings import KafkaSettings, SettingsError, load_ops_settings, load_settings

REQUIRED = {
    "BRIDGE_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9",
    "BRIDGE_TOPICS__INPUT": "in",
    "BRIDGE_TOPICS__RESULTS": "out",
    "BRIDGE_TOPICS__FAILURES": "dlq",
    "BRIDGE_MODEL__NAME": "fraud",
}
IDP = "https://idp.example/token"
SECRET = "s3cr3t-that-must-not-show"  # noqa: S105 - a test value


def load(monkeypatch: pytest.MonkeyPatch, **kafka: str) -> KafkaSettings:
    for name, value in {**REQUIRED, **{f"BRIDGE_KAFKA__{k}": v for k, v in kafka.items()}}.items():
        monkeypatch.setenv(name, value)
    return load_settings().kafka


def refused(monkeypatch: pytest.MonkeyPatch, **kafka: str) -> str:
    with pytest.raises(SettingsError) as caught:
        load(monkeypatch, **kafka)
    message = str(caught.value)
    assert SECRET not in message
    return message


SCRAM = {"SECURITY_PROTOCOL": "SASL_SSL", "SASL_MECHANISM": "SCRAM-SHA-512"}


def test_a_password_file_stands_for_the_password(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = tmp_path / "password"
    secret.write_text(SECRET + "\n")  # as `echo` and editors write it
    kafka = load(monkeypatch, **SCRAM, SASL_USERNAME="bridge", SASL_PASSWORD_FILE=str(secret))
    assert kafka.sasl_password is not None
    assert kafka.sasl_password.get_secret_value() == SECRET
    assert SECRET not in repr(kafka)
    assert SECRET not in str(kafka)


def test_key_password_and_client_secret_files_are_read_too(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = tmp_path / "client-secret"
    secret.write_text(SECRET)
    kafka = load(
        monkeypatch,
        SECURITY_PROTOCOL="SASL_SSL",
        SASL_MECHANISM="OAUTHBEARER",
        SASL_OAUTH_TOKEN_ENDPOINT_URL=IDP,
        SASL_OAUTH_CLIENT_ID="bridge",
        SASL_OAUTH_CLIENT_SECRET_FILE=str(secret),
    )
    assert kafka.sasl_oauth_client_secret is not None
    assert kafka.sasl_oauth_client_secret.get_secret_value() == SECRET


def test_a_toml_file_may_name_the_secret_file(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text(SECRET)
    config = tmp_path / "bridge.toml"
    config.write_text(
        '[kafka]\nbootstrap_servers = "127.0.0.1:9"\nsecurity_protocol = "SASL_PLAINTEXT"\n'
        'sasl_mechanism = "PLAIN"\nsasl_username = "bridge"\n'
        f'sasl_password_file = "{secret}"\n'
    )
    kafka = load_ops_settings(config).kafka
    assert kafka.sasl_password is not None
    assert kafka.sasl_password.get_secret_value() == SECRET


def test_a_missing_or_empty_secret_file_is_named_without_its_contents(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = tmp_path / "nope"
    message = refused(monkeypatch, **SCRAM, SASL_USERNAME="u", SASL_PASSWORD_FILE=str(missing))
    assert "BRIDGE_KAFKA__SASL_PASSWORD_FILE" in message
    assert str(missing) in message
    empty = tmp_path / "empty"
    empty.write_text("\n")
    message = refused(monkeypatch, **SCRAM, SASL_USERNAME="u", SASL_PASSWORD_FILE=str(empty))
    assert "BRIDGE_KAFKA__SASL_PASSWORD_FILE" in message and "empty" in message


def test_a_secret_and_its_file_together_are_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = tmp_path / "password"
    secret.write_text("from-file")
    message = refused(
        monkeypatch,
        **SCRAM,
        SASL_USERNAME="u",
        SASL_PASSWORD=SECRET,
        SASL_PASSWORD_FILE=str(secret),
    )
    assert "BRIDGE_KAFKA__SASL_PASSWORD_FILE" in message
    assert "BRIDGE_KAFKA__SASL_PASSWORD," in message


@pytest.mark.parametrize("missing", ["SASL_USERNAME", "SASL_PASSWORD"])
def test_scram_needs_its_credentials(monkeypatch: pytest.MonkeyPatch, missing: str) -> None:
    given = {"SASL_USERNAME": "u", "SASL_PASSWORD": SECRET}
    del given[missing]
    assert f"BRIDGE_KAFKA__{missing}" in refused(monkeypatch, **SCRAM, **given)


def test_sasl_settings_without_sasl_are_refused_not_ignored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = refused(
        monkeypatch, SECURITY_PROTOCOL="SSL", SASL_MECHANISM="PLAIN", SASL_USERNAME="u"
    )
    assert "BRIDGE_KAFKA__SASL_MECHANISM" in message and "BRIDGE_KAFKA__SASL_USERNAME" in message


OAUTH = {"SECURITY_PROTOCOL": "SASL_SSL", "SASL_MECHANISM": "OAUTHBEARER"}


def test_oauthbearer_with_a_token_file_loads(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("eyJ.token.sig")
    kafka = load(monkeypatch, **OAUTH, SASL_OAUTH_TOKEN_FILE=str(token))
    assert kafka.sasl_oauth_token_file == token


def test_oauthbearer_needs_exactly_one_token_source(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert "SASL_OAUTH_TOKEN_FILE" in refused(monkeypatch, **OAUTH)
    token = tmp_path / "token"
    token.write_text("t")
    both = refused(
        monkeypatch,
        **OAUTH,
        SASL_OAUTH_TOKEN_FILE=str(token),
        SASL_OAUTH_TOKEN_ENDPOINT_URL=IDP,
    )
    assert "SASL_OAUTH_TOKEN_ENDPOINT_URL" in both


def test_a_token_file_that_cannot_be_read_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    message = refused(monkeypatch, **OAUTH, SASL_OAUTH_TOKEN_FILE=str(tmp_path / "nope"))
    assert "BRIDGE_KAFKA__SASL_OAUTH_TOKEN_FILE" in message


@pytest.mark.parametrize("missing", ["SASL_OAUTH_CLIENT_ID", "SASL_OAUTH_CLIENT_SECRET"])
def test_a_token_endpoint_needs_client_id_and_secret(
    monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    given = {"SASL_OAUTH_CLIENT_ID": "bridge", "SASL_OAUTH_CLIENT_SECRET": SECRET}
    del given[missing]
    message = refused(monkeypatch, **OAUTH, SASL_OAUTH_TOKEN_ENDPOINT_URL=IDP, **given)
    assert f"BRIDGE_KAFKA__{missing}" in message


def test_a_token_endpoint_must_be_a_url(monkeypatch: pytest.MonkeyPatch) -> None:
    message = refused(
        monkeypatch,
        **OAUTH,
        SASL_OAUTH_TOKEN_ENDPOINT_URL=IDP.removeprefix("https://"),
        SASL_OAUTH_CLIENT_ID="bridge",
        SASL_OAUTH_CLIENT_SECRET=SECRET,
    )
    assert "BRIDGE_KAFKA__SASL_OAUTH_TOKEN_ENDPOINT_URL" in message


def test_oauth_settings_with_scram_and_passwords_with_oauth_are_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("t")
    message = refused(
        monkeypatch, **SCRAM, SASL_USERNAME="u", SASL_PASSWORD=SECRET,
        SASL_OAUTH_TOKEN_FILE=str(token),
    )  # fmt: skip
    assert "BRIDGE_KAFKA__SASL_OAUTH_TOKEN_FILE" in message and "OAUTHBEARER" in message
    message = refused(monkeypatch, **OAUTH, SASL_OAUTH_TOKEN_FILE=str(token), SASL_USERNAME="u")
    assert "BRIDGE_KAFKA__SASL_USERNAME" in message


def test_read_committed_is_the_default_and_can_be_turned_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load(monkeypatch).isolation_level == "read_committed"
    assert load(monkeypatch, ISOLATION_LEVEL="read_uncommitted").isolation_level == (
        "read_uncommitted"
    )
    assert "BRIDGE_KAFKA__ISOLATION_LEVEL" in refused(monkeypatch, ISOLATION_LEVEL="dirty")


def test_help_names_the_file_variants_and_shows_no_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BRIDGE_KAFKA__SASL_PASSWORD", SECRET)
    with pytest.raises(SystemExit):
        cli_main(["run", "--help"])
    out = capsys.readouterr().out
    for variable in (
        "SASL_PASSWORD_FILE",
        "SSL_KEY_PASSWORD_FILE",
        "SASL_OAUTH_CLIENT_SECRET_FILE",
    ):
        assert f"BRIDGE_KAFKA__{variable}" in out
    assert SECRET not in out
