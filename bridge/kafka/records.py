"""Output records: results as JSON, failures as byte-identical dead letters.

A failure record follows Kafka Connect's dead-letter convention: the original
key, value and headers untouched, plus ``__connect.errors.*`` headers where
Connect has a name for the fact and ``__bridge.errors.*`` for the rest, so a
failure can be replayed exactly as it came.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec
import orjson

from bridge.domain import Failure, Success, Target
from bridge.errors import ExpiredEventError, ModelCallError

CONNECT = "__connect.errors."
BRIDGE = "__bridge.errors."


class SourceRecord(Protocol):
    """Where an input record came from: what an aiokafka ``ConsumerRecord`` has."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int | None: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


@dataclass(slots=True)  # not frozen: a frozen init costs a setattr call per field, per event
class OutputRecord:
    topic: str
    partition: int
    key: bytes | None
    value: bytes | None  # None only for a failed tombstone, kept as it came
    headers: list[tuple[str, bytes]]  # a list: the producer's record builder takes no other


class RecordBuilder:
    """Builds the one output record each input event ends as."""

    def __init__(
        self,
        results_topic: str,
        failures_topic: str,
        partition_counts: Mapping[str, int],
        protocol: str,
        shadow_topic: str | None = None,
        expired_topic: str | None = None,
    ) -> None:
        self._results = results_topic
        self._failures = failures_topic
        self._shadow = shadow_topic
        self._expired = expired_topic  # None: expired events' dead letters go with the others
        self._counts = partition_counts
        self._protocol = protocol
        # A result's "model" and "source" parts up to the offset, per lane version and
        # source partition; and the timings' format, per set of timing names.
        self._heads: dict[tuple[Target, str, int | None, str, int], bytes] = {}
        self._timing_formats: dict[tuple[str, ...], bytes] = {}

    @property
    def shadow_topic(self) -> str | None:
        return self._shadow

    def _partition(self, topic: str, source: SourceRecord) -> int:
        # The source partition (mod the output's count): per-partition order carries over.
        return source.partition % self._counts[topic]

    def result(
        self,
        source: SourceRecord,
        outcome: Success,
        route: str,
        target: Target,
        copied: bytes,
        timings: Mapping[str, float],
        topic: str | None = None,
    ) -> OutputRecord:
        """The result record (on the shadow topic when ``topic`` says so).

        Built from pieces: everything but the outputs, the offset, the timestamp and the
        timings is the same for every event of one partition a lane's version serves, so
        it is encoded once (a few per run) and joined as bytes. ``copied`` is JSON already.
        """
        topic = topic or self._results
        where = (target, route, outcome.version, source.topic, source.partition)
        head = self._heads.get(where)
        if head is None:
            head = self._heads[where] = b"".join(
                (
                    b',"model":',
                    orjson.dumps(_model(target, route, outcome.version)),
                    b',"source":{"topic":',
                    orjson.dumps(source.topic),
                    b',"partition":%d,"offset":' % source.partition,
                )
            )
        names = tuple(timings)
        shape = self._timing_formats.get(names)
        if shape is None:
            shape = self._timing_formats[names] = _timing_format(names)
        timestamp = source.timestamp
        value = b"".join(
            (
                b'{"outputs":',
                _encode(outcome.outputs),
                head,
                b"%d" % source.offset,
                b',"timestamp":',
                b"null" if timestamp is None else b"%d" % timestamp,
                b'},"fields":',
                copied,
                b',"timings":',
                shape % tuple(timings.values()),
                b"}",
            )
        )
        return OutputRecord(
            topic,
            self._partition(topic, source),
            source.key,
            value,
            list(source.headers),  # the producer's record builder takes only a list
        )

    def shadow_failure(
        self, source: SourceRecord, outcome: Failure, route: str, target: Target
    ) -> OutputRecord:
        """A shadow call that failed: recorded on the shadow topic, nowhere else."""
        if self._shadow is None:
            raise ValueError("no shadow topic configured")
        body = {
            "error": {"reason": outcome.error.reason, "message": outcome.error.message},
            "model": _model(target, route, None),
            "source": {
                "topic": source.topic,
                "partition": source.partition,
                "offset": source.offset,
            },
        }
        return OutputRecord(
            self._shadow,
            self._partition(self._shadow, source),
            source.key,
            orjson.dumps(body),
            list(source.headers),
        )

    def failure(
        self,
        source: SourceRecord,
        outcome: Failure,
        route: str,
        target: Target,
        *,
        keep_value: bool = True,
    ) -> OutputRecord:
        """The dead letter: the input as it came, then headers that say why.

        ``keep_value=False`` leaves the value out (the broker refused the record with it).
        """
        error = outcome.error
        why: dict[str, str | int | None] = {
            CONNECT + "topic": source.topic,
            CONNECT + "partition": source.partition,
            CONNECT + "offset": source.offset,
            # A batch nothing could be read from ends as one record for its whole range.
            BRIDGE + "offset.last": getattr(source, "last_offset", None),
            CONNECT + "class.name": f"{type(error).__module__}.{type(error).__qualname__}",
            CONNECT + "exception.message": error.message,
            BRIDGE + "reason": error.reason,
            BRIDGE + "retriable": "true" if error.retriable else "false",
            BRIDGE + "attempts": outcome.attempts,
            BRIDGE + "first.attempt.ms": outcome.first_attempt_ms,
            BRIDGE + "last.attempt.ms": outcome.last_attempt_ms,
            BRIDGE + "model.name": target.model,
            BRIDGE + "model.route": route,
            BRIDGE + "model.label": target.label,
            BRIDGE + "model.version": target.version,
            BRIDGE + "model.signature": target.signature,
        }
        if why[BRIDGE + "offset.last"] == source.offset:
            del why[BRIDGE + "offset.last"]
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
        topic = self._failures
        if self._expired is not None and isinstance(error, ExpiredEventError):
            topic = self._expired
        return OutputRecord(
            topic,
            self._partition(topic, source),
            source.key,
            source.value if keep_value else None,
            headers,
        )


# msgspec's encoder: as orjson for what outputs hold (NaN and infinities as null), and
# cheaper per call for small documents.
_encode = msgspec.json.Encoder().encode


def _timing_format(names: tuple[str, ...]) -> bytes:
    """``{"a":%.3f,...}``: milliseconds to the microsecond, as the result has always shown."""
    fields = b",".join(orjson.dumps(name) + b":%.3f" for name in names)
    return b"{" + fields + b"}"


def _model(target: Target, route: str, version: int | None) -> dict[str, Any]:
    return {
        "name": target.model,
        "route": route,
        "target": str(target),
        "signature": target.signature,
        "version": version,
    }
