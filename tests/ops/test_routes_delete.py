"""``bridge routes delete``: what it writes, what it refuses and what it says, without a broker.

The control topic's reads and writes are replaced by a list of records; the real
topic is in ``tests/ops/test_routes_integration.py`` and, with bridges following
it, ``tests/versions/test_routes_delete.py``.
"""

from __future__ import annotations

import asyncio

import pytest

from bridge.kafka.control_topic import ControlRecord, ControlState, fold
from bridge.ops import commands, routes
from bridge.ops.errors import CommandError
from bridge.pipeline.routing import parse_assignments
from bridge.settings import KafkaConnection, OpsKafka

TOPIC = "control"


class FakeTopic:
    """The control topic as a list of records, read and written by ``bridge.ops.routes``."""

    def __init__(self, *records: tuple[str, bytes | None]) -> None:
        self.records = [
            ControlRecord(0, n, 1000 + n, k.encode(), v) for n, (k, v) in enumerate(records)
        ]

    async def read(self, kafka: KafkaConnection, topic: str, timeout_s: float) -> ControlState:
        assert topic == TOPIC
        return fold(self.records)

    async def write(
        self, kafka: KafkaConnection, topic: str, model: str, value: bytes | None, timeout_s: float
    ) -> ControlRecord:
        record = ControlRecord(0, len(self.records), 2000, model.encode(), value)
        self.records.append(record)
        return record


@pytest.fixture
def said() -> list[str]:
    return []


def install(monkeypatch: pytest.MonkeyPatch, topic: FakeTopic) -> FakeTopic:
    monkeypatch.setattr(routes, "read_control_topic", topic.read)
    monkeypatch.setattr(routes, "write_routes", topic.write)
    return topic


def delete(model: str, said: list[str]) -> ControlRecord | None:
    kafka = OpsKafka(bootstrap_servers="127.0.0.1:1")
    return asyncio.run(routes.delete_routes(kafka, TOPIC, model, 5.0, said.append))


def routes_json(*assignments: str) -> bytes:
    return parse_assignments("fraud", assignments).to_json()


def test_delete_writes_a_tombstone_and_says_what_it_replaced(
    monkeypatch: pytest.MonkeyPatch, said: list[str]
) -> None:
    topic = install(monkeypatch, FakeTopic(("fraud", routes_json("stable=90", "canary=10"))))
    record = delete("fraud", said)
    assert record is not None
    assert (record.key, record.value, record.offset) == (b"fraud", None, 1)
    assert topic.records[-1] is record
    assert said == [
        f"deleted routes for fraud on {TOPIC} (partition 0 offset 1): "
        "the bridge uses its configured routes",
        "  key fraud  value null (a tombstone)",
        "  replaced stable=90 canary=10",
    ]
    assert fold(topic.records).models["fraud"].deleted


def test_a_model_without_routes_is_refused_and_nothing_is_written(
    monkeypatch: pytest.MonkeyPatch, said: list[str]
) -> None:
    topic = install(monkeypatch, FakeTopic(("fraud", routes_json("stable=1"))))
    with pytest.raises(CommandError) as refused:
        delete("frud", said)
    assert refused.value.exit_code == 1
    assert refused.value.message == (
        f"refused: control topic {TOPIC} has no routes for frud (models with routes: fraud); "
        "nothing was written"
    )
    assert len(topic.records) == 1 and said == []


def test_deleting_twice_writes_once(monkeypatch: pytest.MonkeyPatch, said: list[str]) -> None:
    topic = install(monkeypatch, FakeTopic(("fraud", routes_json("stable=1"))))
    assert delete("fraud", said) is not None
    said.clear()
    assert delete("fraud", said) is None
    assert len(topic.records) == 2
    assert said == [
        f"routes for fraud on {TOPIC} are deleted already (partition 0 offset 1): "
        "nothing was written"
    ]


def test_the_command_is_wired_with_the_same_settings_checks_as_set(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    args = commands.build_parser().parse_args(["routes", "delete", "fraud", "--topic", "c"])
    assert args.handler is commands.run_routes_delete
    assert commands.main(["routes", "delete", "fraud", "--topic", "c"]) == 2
    assert "set BRIDGE_KAFKA__BOOTSTRAP_SERVERS or pass" in capsys.readouterr().err
    monkeypatch.setenv("BRIDGE_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:1")
    assert commands.main(["routes", "delete", "fraud"]) == 2
    assert "set BRIDGE_TOPICS__CONTROL or pass" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        commands.main(["routes", "delete"])
    assert exited.value.code == 2
