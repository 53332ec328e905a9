"""The control topic's compaction semantics: last record per key wins, null deletes."""

from __future__ import annotations

from typing import Any

from bridge.kafka.control_topic import ControlRecord, ControlState, fold
from bridge.ops.routes import render_routes, routes_json
from bridge.pipeline.routing import parse_assignments

T0 = 1_795_410_000_000


def _record(
    offset: int, key: str | bytes | None, value: bytes | None, partition: int = 0, ts: int = 0
) -> ControlRecord:
    raw_key = key.encode() if isinstance(key, str) else key
    return ControlRecord(partition, offset, T0 + (ts or offset), raw_key, value)


def _value(model: str, *assignments: str) -> bytes:
    return parse_assignments(model, assignments).to_json()


def latest_routes(records: list[ControlRecord]) -> tuple[dict[str, Any], list[ControlRecord]]:
    state = fold(records)
    assert state.read == len(records)
    return state.models, state.skipped


def test_the_last_record_per_key_wins() -> None:
    state, skipped = latest_routes(
        [
            _record(0, "fraud", _value("fraud", "stable=100")),
            _record(1, "churn", _value("churn", "1=100")),
            _record(2, "fraud", _value("fraud", "stable=90", "canary=10", "shadow:canary=0.1")),
        ]
    )
    assert skipped == []
    assert list(state) == ["churn", "fraud"]
    fraud = state["fraud"]
    assert fraud.routes is not None
    assert fraud.routes.describe() == "stable=90 canary=10 shadow:canary=0.1"
    assert fraud.latest.offset == 2 and not fraud.deleted and fraud.problem is None


def test_offsets_order_records_not_the_order_they_arrive_in() -> None:
    state, _ = latest_routes(
        [
            _record(5, "fraud", _value("fraud", "canary=1")),
            _record(3, "fraud", _value("fraud", "stable=1")),
        ]
    )
    routes = state["fraud"].routes
    assert routes is not None and routes.describe() == "canary=1"


def test_a_null_value_deletes_and_a_later_record_brings_it_back() -> None:
    state, _ = latest_routes(
        [
            _record(0, "fraud", _value("fraud", "stable=1")),
            _record(1, "fraud", None),
            _record(2, "churn", _value("churn", "stable=1")),
            _record(3, "churn", None),
            _record(4, "churn", _value("churn", "canary=1")),
        ]
    )
    assert state["fraud"].deleted and state["fraud"].routes is None
    churn = state["churn"]
    assert not churn.deleted and churn.routes is not None
    assert churn.routes.describe() == "canary=1"


def test_a_malformed_latest_record_keeps_the_last_valid_routes_and_says_why() -> None:
    state, _ = latest_routes(
        [
            _record(0, "fraud", _value("fraud", "stable=1")),
            _record(1, "fraud", b"{not json"),
            _record(2, "churn", _value("fraud", "stable=1")),  # key and value disagree
        ]
    )
    fraud = state["fraud"]
    assert fraud.problem is not None and "malformed" in fraud.problem
    assert fraud.routes is not None and fraud.routes.describe() == "stable=1"
    churn = state["churn"]
    assert churn.routes is None
    assert churn.problem == "the record's key is churn but its value names model fraud"


def test_records_without_a_usable_key_are_skipped() -> None:
    state, skipped = latest_routes(
        [_record(0, None, _value("fraud", "stable=1")), _record(1, b"\xff", b"{}")]
    )
    assert state == {} and len(skipped) == 2


def test_across_partitions_the_timestamp_decides() -> None:
    state, _ = latest_routes(
        [
            _record(9, "fraud", _value("fraud", "stable=1"), partition=0, ts=100),
            _record(1, "fraud", _value("fraud", "canary=1"), partition=1, ts=200),
        ]
    )
    routes = state["fraud"].routes
    assert routes is not None and routes.describe() == "canary=1"


def test_rendered_text_and_json() -> None:
    records = [
        _record(0, "fraud", _value("fraud", "stable=90", "canary=10", "shadow:canary=0.05")),
        _record(1, "churn", None),
        _record(2, None, b"x"),
    ]
    state = fold(records)
    text = render_routes(state, "bridge-control")
    lines = text.splitlines()
    assert lines[0] == "control topic bridge-control: 3 record(s) read, 2 model(s)"
    assert lines[1].split() == ["MODEL", "ROUTES", "SHADOW", "LATEST", "RECORD", "WRITTEN"]
    assert lines[2].startswith("churn  (deleted: the bridge uses its configured routes)")
    assert lines[3].split()[:4] == ["fraud", "stable=90", "canary=10", "canary=0.05"]
    assert lines[1].index("SHADOW") == lines[3].index("canary=0.05")  # aligned
    assert lines[-1] == "warning: 1 record(s) without a usable key were skipped"
    document = routes_json(state, "bridge-control")
    assert document["models"]["fraud"]["routes"] == {"stable": 90, "canary": 10}
    assert document["models"]["fraud"]["shadow"] == {"target": "canary", "fraction": 0.05}
    assert document["models"]["churn"]["deleted"] is True
    assert document["skipped"] == 1
    assert document["records"] == 3 and document["unreadable"] is None


def test_a_read_that_stopped_early_says_so() -> None:
    state = fold([_record(0, "fraud", _value("fraud", "stable=1"))])
    cut = ControlState(state.models, state.skipped, state.read, "CorruptRecordException: CRC")
    text = render_routes(cut, "bridge-control")
    assert text.splitlines()[-1] == (
        "warning: reading stopped at a record the client cannot read "
        "(CorruptRecordException: CRC); what is shown comes before it"
    )
    assert routes_json(cut, "bridge-control")["unreadable"] == "CorruptRecordException: CRC"
