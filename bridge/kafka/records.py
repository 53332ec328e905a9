"""Output records: results as JSON, failures as byte-identical dead letters.

A failure record follows Kafka Connect's dead-letter convention: the original
key, value and headers untouched, plus ``__connect.errors.*`` headers where
Connect has a name for the fact and ``__bridge.errors.*`` for the rest, so a
failure can be replayed exactly as it came.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from bridge.errors import ModelCallError
from bridge.pipeline.outcomes import Failure, Success
from bridge.serving.client import Target

Headers = list[tuple[str, bytes]]

CONNECT = "__connect.errors."
BRIDGE = "__bridge.errors."


@dataclass(frozen=True, slots=True)
class Source:
    """Where an input record came from."""

    topic: str
    partition: int
    offset: int
    timestamp: int | None
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class OutputRecord:
    topic: str
    partition: int
    key: bytes | None
    value: bytes | None  # None only for a failed tombstone, kept as it came
    headers: Headers


class RecordBuilder:
    """Builds the one output record each input event ends as."""

    def __init__(
        self,
        results_topic: str,
        failures_topic: str,
        partition_counts: Mapping[str, int],
        target: Target,
        protocol: str,
    ) -> None:
        self._results = results_topic
        self._failures = failures_topic
        self._counts = partition_counts
        self._target = target
        self._protocol = protocol
        self._model = {"name": target.model, "signature": target.signature, "target": str(target)}

    def _partition(self, topic: str, source: Source) -> int:
        # The source partition (mod the output's count): per-partition order carries over.
        return source.partition % self._counts[topic]

    def result(
        self,
        source: Source,
        outcome: Success,
        copied: Mapping[str, Any],
        timings: Mapping[str, float],
    ) -> OutputRecord:
        body = {
            "outputs": outcome.outputs,
            "model": {**self._model, "version": outcome.version},
            "source": {
                "topic": source.topic,
                "partition": source.partition,
                "offset": source.offset,
                "timestamp": source.timestamp,
            },
            "fields": copied,
            "timings": {name: round(ms, 3) for name, ms in timings.items()},
        }
        return OutputRecord(
            self._results,
            self._partition(self._results, source),
            source.key,
            orjson.dumps(body),
            list(source.headers),
        )

    def failure(self, source: Source, outcome: Failure) -> OutputRecord:
        error = outcome.error
        why: dict[str, str | int | None] = {
            CONNECT + "topic": source.topic,
            CONNECT + "partition": source.partition,
            CONNECT + "offset": source.offset,
            CONNECT + "class.name": f"{type(error).__module__}.{type(error).__qualname__}",
            CONNECT + "exception.message": error.message,
            BRIDGE + "reason": error.reason,
            BRIDGE + "retriable": "true" if error.retriable else "false",
            BRIDGE + "attempts": outcome.attempts,
            BRIDGE + "first.attempt.ms": outcome.first_attempt_ms,
            BRIDGE + "last.attempt.ms": outcome.last_attempt_ms,
            BRIDGE + "model.name": self._target.model,
            BRIDGE + "model.label": self._target.label,
            BRIDGE + "model.version": self._target.version,
            BRIDGE + "model.signature": self._target.signature,
        }
        if isinstance(error, ModelCallError):
            why[BRIDGE + "protocol"] = self._protocol
            if error.grpc_status is not None:
                why[BRIDGE + "grpc.status"] = error.grpc_status
            if error.http_status is not None:
                why[BRIDGE + "http.status"] = error.http_status
        headers = list(source.headers)
        headers.extend(
            (name, str(value).encode()) for name, value in why.items() if value is not None
        )
        return OutputRecord(
            self._failures,
            self._partition(self._failures, source),
            source.key,
            source.value,
            headers,
        )
