"""Settings: the documented names, a TOML file under the environment, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.cli import main
from bridge.settings import SettingsError, describe_settings, load_settings

REQUIRED = {
    "BRIDGE_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9092",
    "BRIDGE_TOPICS__INPUT": "payments",
    "BRIDGE_TOPICS__RESULTS": "scores",
    "BRIDGE_TOPICS__FAILURES": "payments-dlq",
    "BRIDGE_MODEL__NAME": "fraud",
}
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("BRIDGE_"):
            monkeypatch.delenv(name)


def test_names_operators_rely_on(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in REQUIRED.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("BRIDGE_KAFKA__GROUP_ID", "scorers")
    monkeypatch.setenv("BRIDGE_SERVING__PROTOCOL", "rest")
    monkeypatch.setenv("BRIDGE_SERVING__GRPC_TARGET", "tfs:8500")
    monkeypatch.setenv("BRIDGE_SERVING__REST_URL", "http://tfs:8501")
    monkeypatch.setenv("BRIDGE_MODEL__LABEL", "canary")
    monkeypatch.setenv("BRIDGE_BATCH__MAX_SIZE", "64")
    monkeypatch.setenv("BRIDGE_BATCH__MAX_WAIT_MS", "7")
    monkeypatch.setenv("BRIDGE_MODEL__COPY_FIELDS", '["id", "card"]')
    settings = load_settings()
    assert settings.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert settings.kafka.group_id == "scorers"
    assert (settings.topics.input, settings.topics.results, settings.topics.failures) == (
        "payments",
        "scores",
        "payments-dlq",
    )
    assert settings.serving.protocol == "rest"
    assert settings.serving.grpc_target == "tfs:8500"
    assert settings.serving.rest_url == "http://tfs:8501"
    assert (settings.model.name, settings.model.label, settings.model.version) == (
        "fraud",
        "canary",
        None,
    )
    assert (settings.batch.max_size, settings.batch.max_wait_ms) == (64, 7)
    assert settings.model.copy_fields == ["id", "card"]


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text(
        '[kafka]\nbootstrap_servers = "file:9092"\ngroup_id = "from-file"\n'
        '[topics]\ninput = "a"\nresults = "b"\nfailures = "c"\n'
        '[model]\nname = "fraud"\n[batch]\nmax_size = 8\n'
    )
    monkeypatch.setenv("BRIDGE_KAFKA__GROUP_ID", "from-env")
    settings = load_settings(config)
    assert settings.kafka.bootstrap_servers == "file:9092"
    assert settings.kafka.group_id == "from-env"
    assert settings.batch.max_size == 8


def test_missing_and_invalid_settings_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in REQUIRED.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("BRIDGE_TOPICS__FAILURES")
    monkeypatch.setenv("BRIDGE_BATCH__MAX_SIZE", "0")
    monkeypatch.setenv("BRIDGE_SERVING__PROTOCOL", "soap")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "BRIDGE_TOPICS__FAILURES: Field required" in message
    assert "BRIDGE_BATCH__MAX_SIZE: Input should be greater than 0" in message
    assert "BRIDGE_SERVING__PROTOCOL: Input should be 'grpc' or 'rest'" in message


def test_a_whole_missing_section_names_its_required_settings() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings()
    for name in REQUIRED:
        assert f"{name}: Field required" in str(caught.value)


def test_label_and_version_together_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in REQUIRED.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("BRIDGE_MODEL__LABEL", "stable")
    monkeypatch.setenv("BRIDGE_MODEL__VERSION", "2")
    with pytest.raises(SettingsError, match="not both"):
        load_settings()


def test_unreadable_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[kafka\n")
    with pytest.raises(SettingsError, match="cannot read config file"):
        load_settings(bad)


def test_run_help_and_readme_list_every_setting(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    help_text = capsys.readouterr().out
    readme = (REPO / "README.md").read_text()
    for name, default, _ in describe_settings():
        assert name in help_text
        assert f"[default: {default}]" in help_text
        assert f"`{name}`" in readme, (
            f"README does not document {name}: run python -m tools.readme_settings"
        )


def test_run_with_bad_settings_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run"]) == 2
    assert "BRIDGE_MODEL__NAME: Field required" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"BRIDGE_KAFKA__FETCH_MAX_BYTES": "5000000"},
            "BRIDGE_KAFKA__FETCH_MAX_BYTES \\(5000000\\) may be at most half of "
            "BRIDGE_BATCH__MAX_PENDING_BYTES",
        ),
        (
            {"BRIDGE_KAFKA__MAX_PARTITION_FETCH_BYTES": "3000000"},
            "MAX_PARTITION_FETCH_BYTES \\(3000000\\) may be at most BRIDGE_KAFKA__FETCH_MAX_BYTES",
        ),
        (
            {"BRIDGE_KAFKA__REQUEST_TIMEOUT_MS": "10000"},
            "REQUEST_TIMEOUT_MS \\(10000\\) must be longer than BRIDGE_KAFKA__SESSION_TIMEOUT_MS",
        ),
    ],
)
def test_kafka_bounds_that_cannot_hold_are_refused(
    monkeypatch: pytest.MonkeyPatch, overrides: dict[str, str], message: str
) -> None:
    for name, value in {**REQUIRED, **overrides}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=message):
        load_settings()


def test_every_kafka_codec_is_an_output_compression(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in REQUIRED.items():
        monkeypatch.setenv(name, value)
    for codec in ("none", "gzip", "snappy", "lz4", "zstd"):
        monkeypatch.setenv("BRIDGE_KAFKA__PRODUCER_COMPRESSION", codec)
        assert load_settings().kafka.producer_compression == codec
