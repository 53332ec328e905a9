"""The operator commands read the bridge's settings: its environment and its TOML file."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.ops import commands
from bridge.settings import SettingsError, load_ops_settings

BRIDGE = {
    "BRIDGE_KAFKA__BOOTSTRAP_SERVERS": "broker:9093",
    "BRIDGE_KAFKA__GROUP_ID": "scorers",
    "BRIDGE_KAFKA__CLIENT_ID": "scorer-7",
    "BRIDGE_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
    "BRIDGE_KAFKA__SASL_MECHANISM": "SCRAM-SHA-256",
    "BRIDGE_KAFKA__SASL_USERNAME": "bridge",
    "BRIDGE_KAFKA__SASL_PASSWORD": "pw",
    "BRIDGE_KAFKA__FETCH_MAX_BYTES": "262144",
    "BRIDGE_TOPICS__INPUT": "payments",
    "BRIDGE_TOPICS__RESULTS": "scores",
    "BRIDGE_TOPICS__FAILURES": "payments-dlq",
    "BRIDGE_TOPICS__CONTROL": "bridge-control",
    "BRIDGE_SERVING__GRPC_TARGET": "tfs:8500",
    "BRIDGE_SERVING__MAX_MESSAGE_MB": "8",
    "BRIDGE_MODEL__NAME": "fraud",
    "BRIDGE_MODEL__ROUTES": '{"stable": 90, "canary": 10}',
    "BRIDGE_BATCH__MAX_SIZE": "64",
    "BRIDGE_METRICS__PORT": "9100",
    "BRIDGE_LOG__LEVEL": "debug",
}


def test_the_bridges_whole_environment_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in BRIDGE.items():
        monkeypatch.setenv(name, value)
    settings = load_ops_settings()
    kafka = settings.kafka
    assert (kafka.bootstrap_servers, kafka.client_id, kafka.security_protocol) == (
        "broker:9093",
        "scorer-7",
        "SASL_SSL",
    )
    assert (kafka.sasl_mechanism, kafka.sasl_username) == ("SCRAM-SHA-256", "bridge")
    assert kafka.sasl_password is not None and kafka.sasl_password.get_secret_value() == "pw"
    assert settings.topics.control == "bridge-control"
    assert (settings.serving.grpc_target, settings.serving.max_message_mb) == ("tfs:8500", 8)
    assert settings.serving.timeout_ms == 30_000  # unset: the commands' own default


def test_settings_the_commands_do_not_use_are_not_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BRIDGE_BATCH__MAX_SIZE", "0")  # `bridge run` refuses it
    monkeypatch.setenv("BRIDGE_KAFKA__FETCH_MAX_BYTES", "many")
    monkeypatch.setenv("BRIDGE_SERVING__GRPC_TARGET", "tfs:8500")
    assert load_ops_settings().serving.grpc_target == "tfs:8500"


def test_settings_the_commands_use_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_KAFKA__SASL_MECHANISM", "KERBEROS")
    monkeypatch.setenv("BRIDGE_SERVING__PROTOCOL", "soap")
    with pytest.raises(SettingsError) as caught:
        load_ops_settings()
    assert "BRIDGE_KAFKA__SASL_MECHANISM: Input should be" in str(caught.value)
    assert "BRIDGE_SERVING__PROTOCOL: Input should be 'grpc' or 'rest'" in str(caught.value)


def test_the_bridges_toml_file_under_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text(
        '[kafka]\nbootstrap_servers = "file:9092"\ngroup_id = "scorers"\n'
        'security_protocol = "SSL"\n'
        '[topics]\ninput = "a"\nresults = "b"\nfailures = "c"\ncontrol = "from-file"\n'
        '[model]\nname = "fraud"\n[batch]\nmax_size = 8\n'
    )
    monkeypatch.setenv("BRIDGE_TOPICS__CONTROL", "from-env")
    settings = load_ops_settings(config)
    assert (settings.kafka.bootstrap_servers, settings.kafka.security_protocol) == (
        "file:9092",
        "SSL",
    )
    assert settings.topics.control == "from-env"


def test_an_unreadable_config_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.toml"
    assert commands.main(["routes", "show", "--config", str(missing)]) == 2
    assert f"cannot read config file {missing}" in capsys.readouterr().err
