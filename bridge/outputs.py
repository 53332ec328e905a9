"""A finished slot -> the one output record its event ends as; counted once it is written.

Building an output cannot stop the bridge: a result that cannot be built (a bug,
an output the encoder refuses) becomes a failure record with ``internal_error``,
and ``unwritable`` makes the smallest record an event can end as when the broker
refuses the real one (too large, say): a failure record without the original value.
``build`` may run more than once for a slot (a resend after a broker fault); counts
and metrics come from ``written``, once Kafka acknowledged the record.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from bridge.domain import Failure, Success
from bridge.errors import InternalError, UnwritableOutputError
from bridge.kafka.records import OutputRecord, RecordBuilder
from bridge.metrics import Metrics
from bridge.pipeline.durations import Durations
from bridge.pipeline.ledger import EventSlot
from bridge.tracing import OFF, Tracing

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class Counts:
    """What the final ``stopped`` log line and the periodic ``summary`` report (since start)."""

    events: int = 0
    results: int = 0
    failures: int = 0
    reasons: dict[str, int] = field(default_factory=dict)  # failures by reason
    durations: Durations = field(default_factory=Durations)  # fetch to acknowledged, ms


class Outputs:
    def __init__(
        self,
        records: RecordBuilder,
        metrics: Metrics,
        counts: Counts,
        log_payloads: bool,
        tracing: Tracing = OFF,
    ) -> None:
        self._records = records
        self._metrics = metrics
        self._counts = counts
        self._log_payloads = log_payloads
        self._tracing = tracing

    def build(self, slot: EventSlot, now: float) -> OutputRecord:
        """The slot's output record; a result that cannot be built becomes a failure."""
        try:
            output = self._build(slot, now)
        except Exception as exc:  # one event's bug must not stop the bridge
            log.exception("internal_error", stage="output", offset=slot.offset, exc_info=exc)
            slot.outcome = Failure(InternalError.wrapping(exc), attempts=0)
            output = self._build(slot, now)
        if slot.trace is not None:  # the output carries the bridge's span, not the input's
            self._tracing.stamp(output.headers, slot.trace)
        return output

    def unwritable(self, slot: EventSlot, error: BaseException) -> OutputRecord:
        """The failure record without the input's value, for an output the broker refuses."""
        routed = slot.context
        record: Any = slot.record
        size = len(record.value) if record.value is not None else 0
        failure = slot.outcome = Failure(
            UnwritableOutputError(
                f"the broker refused the output record ({type(error).__name__}: {error}); "
                f"the input's value ({size} bytes) is left out, read it at the source offset"
            ),
            attempts=0,
        )
        output = self._records.failure(
            record, failure, routed.route, routed.target, keep_value=False
        )
        if slot.trace is not None:
            self._tracing.stamp(output.headers, slot.trace)
        return output

    def written(self, slots: Sequence[EventSlot], now: float) -> None:
        """Kafka acknowledged these slots' output records: count them (fetch to acknowledged).

        Called once per producer batch, so the lookups are made once per batch too.
        """
        counts = self._counts
        record_ms = counts.durations.record
        observe = self._metrics.observe
        results = 0
        for slot in slots:
            routed = slot.context
            outcome = slot.outcome
            seconds = now - slot.fetched
            record_ms(seconds * 1000)
            if isinstance(outcome, Success):
                results += 1
                observe(routed.target.model, routed.route, outcome.version, "result", "", seconds)
            elif isinstance(outcome, Failure):
                counts.failures += 1
                reason = outcome.error.reason
                counts.reasons[reason] = counts.reasons.get(reason, 0) + 1
                observe(routed.target.model, routed.route, None, "failure", reason, seconds)
            if slot.trace is not None:
                self._tracing.end_event(slot)
        counts.results += results

    def _build(self, slot: EventSlot, now: float) -> OutputRecord:
        record: Any = slot.record
        routed = slot.context
        outcome = slot.outcome
        fetched = slot.fetched
        if isinstance(outcome, Success):
            timings = {
                "queued_ms": ((slot.dispatched or fetched) - fetched) * 1000,
                "model_ms": outcome.model_ms,
                "bridge_ms": (now - fetched) * 1000,
            }
            return self._records.result(
                record, outcome, routed.route, routed.target, routed.copied, timings
            )
        assert isinstance(outcome, Failure)  # noqa: S101 - a READY slot has an outcome
        if self._log_payloads:
            log.info(
                "failure", offset=record.offset, reason=outcome.error.reason, value=record.value
            )
        return self._records.failure(record, outcome, routed.route, routed.target)
