"""The operator commands run where the bridge runs: with its whole environment, or its
TOML file, as processes against the dev broker and a real model server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from bridge.settings import load_settings
from tests.ops.servers import Served, model_server
from tools.harness.processes import bridge_env, run_bridge

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with model_server(tmp_path_factory.mktemp("environment")) as running:
        yield running  # only read from


def full_env(kafka_bootstrap: str, prefix: str, served: Served) -> dict[str, str]:
    """What a bridge container has: every section set, as the integration tests set it."""
    return bridge_env(
        kafka_bootstrap,
        (f"{prefix}-in", f"{prefix}-out", f"{prefix}-dlq"),
        served.server,
        group=f"{prefix}-group",
        BRIDGE_TOPICS__CONTROL=f"{prefix}-control",
        BRIDGE_TOPICS__SHADOW=f"{prefix}-shadow",
        BRIDGE_KAFKA__CLIENT_ID="scorer",
        BRIDGE_KAFKA__SECURITY_PROTOCOL="PLAINTEXT",
        BRIDGE_KAFKA__SESSION_TIMEOUT_MS="6000",
        BRIDGE_KAFKA__PRODUCER_COMPRESSION="zstd",
        BRIDGE_SERVING__TIMEOUT_MS="10000",
        BRIDGE_SERVING__MODELS_CONFIG=str(served.config),
        BRIDGE_MODEL__ROUTES='{"stable": 90, "canary": 10}',
        BRIDGE_MODEL__COPY_FIELDS='["id"]',
        BRIDGE_MODEL__SHADOW_TARGET="canary",
        BRIDGE_MODEL__SHADOW_FRACTION="0.1",
        BRIDGE_BATCH__MAX_SIZE="8",
        BRIDGE_DELIVERY__COMMIT_INTERVAL_MS="200",
        BRIDGE_METRICS__PORT="0",
        BRIDGE_LOG__FORMAT="json",
    )


def as_toml(env: dict[str, str]) -> str:
    """The same settings as a bridge.toml: ``BRIDGE_SECTION__KEY`` -> ``[section] key``."""
    sections: dict[str, list[str]] = {}
    for name, text in env.items():
        section, key = name.removeprefix("BRIDGE_").lower().split("__")
        try:
            value: Any = orjson.loads(text)  # numbers, lists and maps are JSON in the environment
        except orjson.JSONDecodeError:
            value = text
        sections.setdefault(section, []).append(f"{key} = {_toml(value)}")
    return "".join(
        f"[{s}]\n" + "".join(f"{line}\n" for line in lines) for s, lines in sections.items()
    )


def _toml(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, int | float):
        return str(value)
    return orjson.dumps(value).decode()  # a JSON string is a TOML basic string


def test_routes_and_serving_commands_take_the_bridges_environment(
    kafka_bootstrap: str,
    topic_prefix: str,
    served: Served,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = full_env(kafka_bootstrap, topic_prefix, served)
    for name, value in env.items():  # it is a whole, valid environment for `bridge run`
        monkeypatch.setenv(name, value)
    assert load_settings().topics.input == f"{topic_prefix}-in"

    done = run_bridge(env, "routes", "set", "fraud", "stable=80", "canary=20", "shadow:canary=0.05")
    assert done.returncode == 0, done.stderr
    assert f"wrote routes for fraud to {topic_prefix}-control" in done.stdout

    shown = run_bridge(env, "routes", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    fraud = orjson.loads(shown.stdout)["models"]["fraud"]
    assert (fraud["routes"], fraud["shadow"]) == (
        {"stable": 80, "canary": 20},
        {"target": "canary", "fraction": 0.05},
    )

    status = run_bridge(env, "serving", "status")
    assert status.returncode == 0, status.stderr
    rows = [line.split() for line in status.stdout.splitlines() if line.startswith("  ")]
    assert rows[1:] == [["2", "AVAILABLE", "canary"], ["1", "AVAILABLE", "stable"]]


def test_the_commands_take_the_bridges_config_file(
    kafka_bootstrap: str, topic_prefix: str, served: Served, tmp_path: Path
) -> None:
    env = full_env(kafka_bootstrap, topic_prefix, served)
    config = tmp_path / "bridge.toml"
    config.write_text(as_toml(env))
    assert load_settings(config).model.routes == {"stable": 90, "canary": 10}

    done = run_bridge({}, "routes", "set", "fraud", "stable=1", "--config", str(config))
    assert done.returncode == 0, done.stderr
    shown = run_bridge({}, "routes", "show", "fraud", "--config", str(config))
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[2].split()[:2] == ["fraud", "stable=1"]
    status = run_bridge({}, "serving", "status", "fraud", "--json", "--config", str(config))
    assert status.returncode == 0, status.stderr
    assert orjson.loads(status.stdout)["models"][0]["labels"] == {"canary": 2, "stable": 1}


def test_an_invalid_setting_the_commands_use_still_exits_2(
    kafka_bootstrap: str, topic_prefix: str, served: Served
) -> None:
    env = full_env(kafka_bootstrap, topic_prefix, served)
    done = run_bridge({**env, "BRIDGE_KAFKA__SECURITY_PROTOCOL": "TLS"}, "routes", "show")
    assert done.returncode == 2
    assert "BRIDGE_KAFKA__SECURITY_PROTOCOL: Input should be" in done.stderr
