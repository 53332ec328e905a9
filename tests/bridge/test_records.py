"""Result records carry the outputs and provenance; failure records are replayable."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import orjson

from bridge.domain import Failure, Success, Target
from bridge.errors import InputShapeError, RejectedInputError
from bridge.kafka.records import RecordBuilder


@dataclass(frozen=True, slots=True)
class Source:
    """An input record as aiokafka's ``ConsumerRecord`` has it (a ``SourceRecord``)."""

    topic: str
    partition: int
    offset: int
    timestamp: int | None
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]


SOURCE = Source(
    topic="payments",
    partition=4,
    offset=1234,
    timestamp=1_700_000_000_000,
    key=b"card-1",
    value=b'{"amount": "x"}',
    headers=[("trace", b"\x00\x01"), ("trace", b"again")],
)
BUILDER = RecordBuilder("results", "failures", {"results": 3, "failures": 2}, "grpc")
STABLE = Target("fraud", label="stable")


def test_result_record() -> None:
    record = BUILDER.result(
        SOURCE,
        Success({"p": 0.25, "flagged": False}, version=2, attempts=1, model_ms=3.0),
        "stable",
        STABLE,
        b'{"id":"tx-1"}',
        {"model_ms": 3.0, "bridge_ms": 4.12345},
    )
    assert (record.topic, record.partition, record.key) == ("results", 4 % 3, b"card-1")
    assert record.headers == list(SOURCE.headers)
    body = orjson.loads(record.value or b"")
    assert body == {
        "outputs": {"p": 0.25, "flagged": False},
        "model": {
            "name": "fraud",
            "route": "stable",
            "signature": "serving_default",
            "target": "fraud@stable",
            "version": 2,
        },
        "source": {
            "topic": "payments",
            "partition": 4,
            "offset": 1234,
            "timestamp": 1_700_000_000_000,
        },
        "fields": {"id": "tx-1"},
        "timings": {"model_ms": 3.0, "bridge_ms": 4.123},
    }


def test_result_pieces_hold_any_topic_name_timestamp_and_output() -> None:
    """The parts joined as bytes stay valid JSON: escapes, a missing timestamp, NaN."""
    source = Source('odd "topic"\\é', 1, 7, None, None, b"{}", [])
    builder = RecordBuilder("results", "failures", {"results": 3, "failures": 2}, "grpc")
    outcome = Success({"p": float("nan"), "text": 'a"b', "big": 10**18}, 3, 1, 1.0)
    first = builder.result(source, outcome, "v3", Target("m", version=3), b"{}", {"q": 0.0004})
    again = builder.result(
        replace(source, offset=8), outcome, "v3", Target("m", version=3), b"{}", {}
    )
    body = orjson.loads(first.value or b"")
    assert body["source"] == {
        "topic": 'odd "topic"\\é',
        "partition": 1,
        "offset": 7,
        "timestamp": None,
    }
    assert body["outputs"] == {"p": None, "text": 'a"b', "big": 10**18}
    assert body["timings"] == {"q": 0.0}
    assert orjson.loads(again.value or b"")["source"]["offset"] == 8
    assert orjson.loads(again.value or b"")["timings"] == {}


def test_failure_record_is_the_original_plus_why() -> None:
    record = BUILDER.failure(
        SOURCE, Failure(InputShapeError("field 'pca' has shape [5]"), attempts=0), "stable", STABLE
    )
    assert (record.topic, record.partition) == ("failures", 0)
    assert record.key == SOURCE.key and record.value == SOURCE.value
    assert record.headers[:2] == list(SOURCE.headers)
    why = {name: value.decode() for name, value in record.headers[2:]}
    assert why == {
        "__connect.errors.topic": "payments",
        "__connect.errors.partition": "4",
        "__connect.errors.offset": "1234",
        "__connect.errors.class.name": "bridge.errors.InputShapeError",
        "__connect.errors.exception.message": "field 'pca' has shape [5]",
        "__bridge.errors.reason": "wrong_shape",
        "__bridge.errors.retriable": "false",
        "__bridge.errors.attempts": "0",
        "__bridge.errors.model.name": "fraud",
        "__bridge.errors.model.route": "stable",
        "__bridge.errors.model.label": "stable",
        "__bridge.errors.model.signature": "serving_default",
    }


def test_failure_of_a_model_call_names_status_and_attempt_times() -> None:
    error = RejectedInputError("Expects arg[0] to be float", grpc_status="INVALID_ARGUMENT")
    record = BUILDER.failure(
        SOURCE,
        Failure(error, attempts=3, first_attempt_ms=10, last_attempt_ms=99),
        "stable",
        STABLE,
    )
    why = dict(record.headers[2:])
    assert why["__bridge.errors.grpc.status"] == b"INVALID_ARGUMENT"
    assert why["__bridge.errors.protocol"] == b"grpc"
    assert why["__bridge.errors.attempts"] == b"3"
    assert why["__bridge.errors.first.attempt.ms"] == b"10"
    assert why["__bridge.errors.last.attempt.ms"] == b"99"
    assert "__bridge.errors.http.status" not in why


def test_a_failed_tombstone_stays_a_tombstone() -> None:
    tombstone = Source("payments", 0, 1, None, b"k", None, [])
    record = BUILDER.failure(tombstone, Failure(InputShapeError("x"), attempts=0), "stable", STABLE)
    assert record.value is None
