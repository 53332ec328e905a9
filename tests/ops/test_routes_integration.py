"""``bridge routes show|set`` over the dev broker, checked against a real model server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from bridge.ops import commands
from bridge.ops.control import read_control_topic
from bridge.settings import OpsKafka
from tests.ops.servers import Served, model_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with model_server(tmp_path_factory.mktemp("routes")) as running:
        yield running  # the routes tests only read from it


@pytest.fixture
def env(
    kafka_bootstrap: str, topic_prefix: str, served: Served, monkeypatch: pytest.MonkeyPatch
) -> str:
    """Settings as an operator's shell has them; returns the control topic."""
    topic = f"{topic_prefix}-control"
    monkeypatch.setenv("BRIDGE_KAFKA__BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("BRIDGE_TOPICS__CONTROL", topic)
    monkeypatch.setenv("BRIDGE_SERVING__GRPC_TARGET", served.server.grpc_target)
    monkeypatch.setenv("BRIDGE_SERVING__REST_URL", served.server.rest_url)
    return topic


def show_json(*argv: str, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    capsys.readouterr()
    assert commands.main(["routes", "show", *argv, "--json"]) == 0
    document: dict[str, object] = orjson.loads(capsys.readouterr().out)
    return document


async def cleanup_policy(bootstrap: str, topic: str) -> str:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (response,) = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic)]
        )
    finally:
        await admin.close()
    entries = {entry[0]: entry[1] for entry in response.resources[0][4]}
    return str(entries["cleanup.policy"])


def test_set_then_show_round_trip(
    env: str, kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["routes", "set", "fraud", "stable=90", "canary=10", "shadow:canary=0.05"]
    assert commands.main(argv) == 0
    out = capsys.readouterr().out
    assert f"created control topic {env} (1 partition" in out
    assert f"wrote routes for fraud to {env} (partition 0 offset 0): stable=90 canary=10" in out
    assert asyncio.run(cleanup_policy(kafka_bootstrap, env)) == "compact"

    # A version number as a target, checked over REST this time; another model unchecked.
    assert commands.main(["routes", "set", "fraud", "2=100", "--protocol", "rest"]) == 0
    assert commands.main(["routes", "set", "churn", "stable=1", "--no-check"]) == 0
    capsys.readouterr()

    assert commands.main(["routes", "show"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"control topic {env}: 3 record(s) read, 2 model(s)"
    rows = {line.split()[0]: line.split()[1:3] for line in lines[2:]}
    assert rows == {"churn": ["stable=1", "-"], "fraud": ["2=100", "-"]}

    document = show_json("fraud", capsys=capsys)
    assert document["models"] == {
        "fraud": {
            "routes": {"2": 100},
            "shadow": None,
            "deleted": False,
            "problem": None,
            "partition": 0,
            "offset": 1,
            "timestamp_ms": document["models"]["fraud"]["timestamp_ms"],  # type: ignore[index]
        }
    }


def test_set_then_show_keeps_the_shadow(env: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert commands.main(["routes", "set", "fraud", "stable=9", "1=1", "shadow:2=0.5"]) == 0
    models = show_json(capsys=capsys)["models"]
    assert models == {
        "fraud": {
            "routes": {"stable": 9, "1": 1},
            "shadow": {"target": "2", "fraction": 0.5},
            "deleted": False,
            "problem": None,
            "partition": 0,
            "offset": 0,
            "timestamp_ms": models["fraud"]["timestamp_ms"],  # type: ignore[index]
        }
    }


def test_an_unknown_label_is_refused_and_nothing_is_written(
    env: str, kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert commands.main(["routes", "set", "fraud", "stable=100"]) == 0
    capsys.readouterr()

    assert commands.main(["routes", "set", "fraud", "stable=50", "canry=50"]) == 1
    err = capsys.readouterr().err
    assert "nothing was written" in err
    assert (
        "label canry of model fraud: INVALID_ARGUMENT: Unrecognized servable version label" in err
    )
    assert commands.main(["routes", "set", "fraud", "stable=50", "7=50"]) == 1
    assert "version 7 of model fraud: NOT_FOUND" in capsys.readouterr().err

    state = asyncio.run(read_control_topic(OpsKafka(bootstrap_servers=kafka_bootstrap), env, 30))
    assert state.read == 1
    (latest,) = [entry.latest for entry in state.models.values()]
    assert (latest.key, latest.value) == (b"fraud", b'{"model":"fraud","routes":{"stable":100}}')


def test_a_refused_first_set_does_not_even_create_the_topic(
    env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert commands.main(["routes", "set", "fraud", "canry=1"]) == 1
    capsys.readouterr()
    assert commands.main(["routes", "show"]) == 1
    assert f"control topic {env} does not exist" in capsys.readouterr().err


def test_a_tombstone_deletes_the_models_routes(
    env: str, kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert commands.main(["routes", "set", "fraud", "stable=1"]) == 0
    assert commands.main(["routes", "set", "churn", "canary=1", "--no-check"]) == 0

    async def delete_fraud() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(env, key=b"fraud", value=None)
        finally:
            await producer.stop()

    asyncio.run(delete_fraud())
    capsys.readouterr()
    assert commands.main(["routes", "show"]) == 0
    out = capsys.readouterr().out
    assert "fraud  (deleted: the bridge uses its configured routes)" in out
    models = show_json(capsys=capsys)["models"]
    assert models["fraud"]["deleted"] is True  # type: ignore[index]
    assert models["churn"]["routes"] == {"canary": 1}  # type: ignore[index]


def test_show_names_a_model_without_routes(env: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert commands.main(["routes", "set", "fraud", "stable=1"]) == 0
    capsys.readouterr()
    assert commands.main(["routes", "show", "churn"]) == 0
    assert f"control topic {env}: no routes for churn" in capsys.readouterr().out


def test_flags_override_the_environment(
    env: str, kafka_bootstrap: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    other = env + "-other"
    argv = ["routes", "set", "fraud", "stable=1", "--topic", other, "--grpc-target", "127.0.0.1:1"]
    assert commands.main(argv) == 1  # the flag's server is not there
    assert "cannot reach the model server at 127.0.0.1:1" in capsys.readouterr().err
    assert commands.main(["routes", "set", "fraud", "stable=1", "--topic", other]) == 0
    assert f"wrote routes for fraud to {other}" in capsys.readouterr().out
