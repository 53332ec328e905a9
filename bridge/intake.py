"""Fetched records -> a slot each in its partition's ledger -> instances on their lane's batcher.

Per record, only what must be per record: the common single-route, no-shadow case
does no hashing and no lookups. A record that cannot become a model input
resolves its slot at once with a failure; nothing a record holds can raise out of
here (``internal_error`` catches what the checks did not foresee).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import structlog
from aiokafka import TopicPartition

from bridge.domain import NO_FIELDS, Failure, Routed
from bridge.errors import BridgeError, EventError, InternalError
from bridge.kafka.delivery import Delivery
from bridge.kafka.fetch import Fetched
from bridge.kafka.salvage import SalvagedRecord
from bridge.lanes import Lane, Lanes, Pending
from bridge.outputs import Counts
from bridge.pipeline.ledger import EventSlot
from bridge.tracing import OFF, Tracing

log = structlog.get_logger(__name__)

Dispatch = Callable[[list[Pending]], None]


class Intake:
    def __init__(
        self,
        delivery: Delivery,
        lanes: Lanes,
        dispatch: Dispatch,
        counts: Counts,
        max_event_bytes: int,
        tracing: Tracing = OFF,
    ) -> None:
        self._delivery = delivery
        self._lanes = lanes
        self._dispatch = dispatch
        self._counts = counts
        self._max_bytes = max_event_bytes
        # Decided once: with tracing off, no per-event call at all.
        self._start_event = tracing.start_event if tracing.enabled else None

    def take(self, fetched: Fetched, now: float) -> None:
        for tp, records in fetched.records.items():
            self._take(tp, records, now)
        for tp, salvaged in fetched.salvaged.items():
            for record in salvaged:
                if record.problem is not None:
                    self._take_unreadable(tp, record, record.problem, now)
                else:
                    self._take(tp, [record], now)

    def _take(self, tp: TopicPartition, records: Sequence[Any], now: float) -> None:
        lanes = self._lanes
        routes = lanes.current
        only = lanes.lane_for(routes.only) if routes.only is not None else None
        shadow = lanes.shadow if routes.shadow is not None else None
        ledger = self._delivery.ledger(tp)
        if records and ledger.last_offset is not None and records[0].offset <= ledger.last_offset:
            records = self._skip_taken(tp, records, ledger.last_offset)
        max_bytes = self._max_bytes
        start_event = self._start_event
        self._counts.events += len(records)
        for record in records:
            value = record.value
            key = record.key
            size = (len(value) if value is not None else 0) + (len(key) if key else 0)
            lane = only or lanes.lane_for(
                routes.choose(key, (record.topic, record.partition, record.offset))
            )
            error: BridgeError | None = None
            try:
                instance = lane.builder.decode(value, max_bytes)
            except EventError as exc:
                error = exc
            except Exception as exc:  # one event's bug must not stop the partition
                log.exception("internal_error", stage="consume", offset=record.offset, exc_info=exc)
                error = InternalError.wrapping(exc)
            if error is not None:
                slot = ledger.add(
                    record.offset, record, Routed(lane.name, lane.target, NO_FIELDS), size
                )
                slot.fetched = now
                if start_event is not None:
                    slot.trace = start_event(record)
                self._fail(tp, slot, error)
                continue
            slot = ledger.add(
                record.offset, record, Routed(lane.name, lane.target, instance.copied), size
            )
            slot.fetched = now
            if start_event is not None:
                slot.trace = start_event(record)
            for batch in lane.batcher.add(
                Pending(tp, slot, instance, lane, record), instance.shape_key, now
            ):
                self._dispatch(batch)
            if shadow and routes.shadowed(key, (record.topic, record.partition, record.offset)):
                self._mirror(shadow, value, record, tp, now)

    @staticmethod
    def _skip_taken(tp: TopicPartition, records: Sequence[Any], last: int) -> Sequence[Any]:
        """Records the partition already gave (a client re-delivering them) are not taken twice."""
        fresh = [record for record in records if record.offset > last]
        log.warning(
            "records_already_taken",
            partition=tp.partition,
            skipped=len(records) - len(fresh),
            last_taken=last,
        )
        return fresh

    def _take_unreadable(
        self, tp: TopicPartition, record: SalvagedRecord, problem: BridgeError, now: float
    ) -> None:
        """A record (or a range of offsets) the client could not decode: one failure."""
        lanes = self._lanes
        routes = lanes.current
        lane = lanes.lane_for(
            routes.choose(record.key, (record.topic, record.partition, record.offset))
        )
        size = len(record.value or b"") + len(record.key or b"")
        ledger = self._delivery.ledger(tp)
        if ledger.last_offset is not None and record.offset <= ledger.last_offset:
            self._skip_taken(tp, [record], ledger.last_offset)
            return
        slot = ledger.add(
            record.last_offset, record, Routed(lane.name, lane.target, NO_FIELDS), size
        )
        slot.fetched = now
        if self._start_event is not None:
            slot.trace = self._start_event(record)
        self._counts.events += 1
        self._fail(tp, slot, problem)

    def _fail(self, tp: TopicPartition, slot: EventSlot, error: BridgeError) -> None:
        self._delivery.finish(tp, slot, Failure(error, attempts=0))

    def _mirror(
        self, lane: Lane, value: bytes | None, record: Any, tp: TopicPartition, now: float
    ) -> None:
        """Shadow traffic: best effort, and it never touches the main record."""
        try:
            instance = lane.builder.decode(value, self._max_bytes)
        except Exception:  # noqa: BLE001 - the shadow cannot take it; the main record is unaffected
            return
        for batch in lane.batcher.add(
            Pending(tp, None, instance, lane, record), instance.shape_key, now
        ):
            self._dispatch(batch)
