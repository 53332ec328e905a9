"""Stale events: too old, by their record timestamp, to be worth a model call.

With ``BRIDGE_DELIVERY__MAX_EVENT_AGE_MS`` set, a worker judges each batch just
before it calls the model, and again when a call waited out an outage: an event
whose record timestamp (CreateTime or LogAppendTime, as Kafka gives it) is older
than the bound by the wall clock is not sent and ends as an ``expired`` failure,
through the same ledger as every outcome, so it keeps its partition's order and
is committed like the rest. A record without a timestamp (-1) never expires.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from bridge.domain import Failure
from bridge.errors import ExpiredEventError

NO_TIMESTAMP = -1  # what Kafka gives a record written without one (message format v0)


class Judged(Protocol):
    @property
    def record(self) -> Any: ...  # the ConsumerRecord (or a salvaged record): its ``timestamp``


T = TypeVar("T", bound=Judged)


@dataclass(frozen=True, slots=True)
class Expiry:
    max_age_ms: int

    def failure(self, timestamp_ms: int | None, now_ms: int) -> Failure | None:
        """The ``expired`` failure for a record with this timestamp, or None if it is fresh."""
        if timestamp_ms is None or timestamp_ms <= NO_TIMESTAMP:
            return None
        age_ms = now_ms - timestamp_ms
        if age_ms <= self.max_age_ms:
            return None
        return Failure(ExpiredEventError.aged(age_ms, self.max_age_ms, timestamp_ms), attempts=0)

    def split(self, batch: Sequence[T], now_ms: int) -> tuple[list[T], list[tuple[T, Failure]]]:
        """The events still worth sending (in order), and the expired ones with their failure."""
        fresh: list[T] = []
        expired: list[tuple[T, Failure]] = []
        for item in batch:
            failure = self.failure(getattr(item.record, "timestamp", None), now_ms)
            if failure is None:
                fresh.append(item)
            else:
                expired.append((item, failure))
        return fresh, expired
