"""From finished slots to Kafka: ordered hand-off to the producer, acks, resends.

One emitter task hands outputs to the producer partition by partition, in offset
order (``PartitionLedger.take_ready``; with ``DELIVERY__ORDERING=key``, in offset
order per key: ``bridge.pipeline.keyed``), as *rounds*: per input partition at most
one round is in flight, and a round holds at most one producer batch per output
topic-partition. So a batch that fails can be sent again before anything that
came after it, and order holds through any broker fault:

- a retriable failure (the broker slow or unreachable past the client's request
  timeout, a leader moving) keeps the outputs and resends them, oldest first,
  while ``blocked`` tells the consume loop to hold; nothing is lost or reordered.
  A resend may duplicate a batch the broker wrote but did not acknowledge (without
  an idempotent producer nobody can tell), never more than the batches in flight;
- a batch the broker refuses for good (too large, say) is split into single
  records; a single result it refuses is replaced by a failure record, a failure
  record by one without the original value (``Outputs.unwritable``); only when
  even that is refused does the bridge stop, uncommitted, so a restart replays it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import structlog
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError, KafkaTimeoutError

from bridge.domain import Outcome
from bridge.kafka.records import OutputRecord
from bridge.pipeline.keyed import KeyedLedger
from bridge.pipeline.ledger import EventLedger, EventSlot, PartitionLedger

log = structlog.get_logger(__name__)


class OutputMaker(Protocol):
    """Makes the output record of a finished slot (``bridge.outputs.Outputs``)."""

    def build(self, slot: EventSlot, now: float) -> OutputRecord:
        """The record; called again for a resend (outputs are not kept once appended)."""
        ...

    def unwritable(self, slot: EventSlot, error: BaseException) -> OutputRecord:
        """The smallest record the event can end as, for an output the broker refused."""
        ...

    def written(self, slots: Sequence[EventSlot], now: float) -> None:
        """Kafka acknowledged these slots' outputs (one producer batch): count them."""
        ...


RESEND_BACKOFF_S = (0.1, 2.0)  # first and longest wait before a failed round is sent again


@dataclass(slots=True)
class _Out:
    """One output on its way: the slot it acknowledges and how it must be sent."""

    slot: EventSlot
    # A replacement record to send as is; None: built from the slot when it is sent, and
    # not kept after it was appended (orjson's output holds 4 KB per record); kept while
    # it waits for the next round because its batch was full, so it is built once.
    record: OutputRecord | None = None
    alone: bool = False  # in a batch of its own (its batch was refused as a whole)
    last_resort: bool = False  # already the smallest record this event can end as


@dataclass(slots=True)
class _Round:
    tp: TopicPartition
    ledger: EventLedger
    open: int  # batches not yet answered
    failed: list[tuple[list[_Out], BaseException]] = field(default_factory=list)  # per batch


def retriable(error: BaseException) -> bool:
    """Worth sending again: the broker may take it later."""
    return isinstance(error, KafkaTimeoutError) or bool(getattr(error, "retriable", False))


class Delivery:
    def __init__(
        self,
        producer: AIOKafkaProducer,
        outputs: OutputMaker,
        on_fatal: Callable[[BaseException], None],
        ordering: Literal["partition", "key"] = "partition",
    ) -> None:
        self._producer = producer
        self._by_key = ordering == "key"
        self._outputs = outputs
        self._on_fatal = on_fatal
        self.ledgers: dict[TopicPartition, EventLedger] = {}
        self._dirty: set[TopicPartition] = set()
        self._sending: set[TopicPartition] = set()  # a round is in flight
        self._carry: dict[TopicPartition, list[_Out]] = {}  # to send first, in this order
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()  # set on every ack; drains wait on it
        self._trouble_since: float | None = None  # first failed round of the current streak
        self._troubled: set[TopicPartition] = set()  # partitions with outputs to send again
        self._resend_after = 0.0
        self._resend_wait = RESEND_BACKOFF_S[0]
        self._holding = False  # fenced by a rebalance: write nothing new
        self.failed = False  # an output could not be written at all: the bridge stops
        self.resends = 0

    # -- what the rest of the bridge asks -------------------------------------------------

    def ledger(self, tp: TopicPartition) -> EventLedger:
        ledger = self.ledgers.get(tp)
        if ledger is None:
            ledger = self.ledgers[tp] = KeyedLedger() if self._by_key else PartitionLedger()
        return ledger

    def pending(self) -> int:
        return sum(len(ledger) for ledger in self.ledgers.values())

    def oldest_in_flight(self, now: float) -> dict[TopicPartition, float]:
        """Seconds since the oldest unacknowledged event of each busy partition was fetched."""
        ages = {}
        for tp, ledger in self.ledgers.items():
            fetched = ledger.oldest_fetched()
            if fetched is not None:
                ages[tp] = max(now - fetched, 0.0)
        return ages

    def pending_bytes(self) -> int:
        return sum(ledger.bytes for ledger in self.ledgers.values())

    @property
    def blocked(self) -> bool:
        """Outputs are waiting to be sent again: the broker is not taking them."""
        return bool(self._troubled)

    def hold_writes(self, holding: bool) -> None:
        """Stop (or restart) handing outputs to the producer; rounds in flight finish."""
        self._holding = holding
        if not holding:
            self._wake.set()

    def finish(self, tp: TopicPartition, slot: EventSlot, outcome: Outcome) -> None:
        """The one place a slot gets its outcome; the emitter then has work for ``tp``."""
        self.finish_all(((tp, slot, outcome),))

    def finish_all(self, finished: Iterable[tuple[TopicPartition, EventSlot, Outcome]]) -> None:
        """``finish`` for a model call's worth of slots: the emitter is woken once."""
        dirty = self._dirty
        for tp, slot, outcome in finished:
            slot.resolve(outcome)
            if self._by_key:  # the keyed ledger finds ready slots by being told (no scans)
                ledger = self.ledgers.get(tp)
                if isinstance(ledger, KeyedLedger):
                    ledger.resolved(slot)
            dirty.add(tp)
        self._wake.set()

    # -- the emitter ------------------------------------------------------------------------

    async def run_emitter(self) -> None:
        """The only task that hands records to the producer: offset order per partition (or key)."""
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._holding:
                continue  # woken again when the hold ends
            wait = self._resend_after - loop.time()
            if wait > 0 and self._troubled:
                await asyncio.sleep(wait)  # the broker is in trouble: do not spin on it
                if self._holding:
                    continue  # a hold that began meanwhile stops the resend too
            for tp in list(self._dirty):
                if tp in self._sending:
                    continue  # stays dirty: its next round goes when this one is answered
                self._dirty.discard(tp)
                ledger = self.ledgers.get(tp)
                if ledger is None:
                    self._carry.pop(tp, None)
                    continue  # handed back in a rebalance: its outputs are not ours to write
                outs = self._carry.pop(tp, [])
                outs += [_Out(slot) for slot in ledger.take_ready()]
                if outs:
                    await self._send_round(tp, ledger, outs, loop.time())

    async def _send_round(
        self, tp: TopicPartition, ledger: EventLedger, outs: list[_Out], now: float
    ) -> None:
        """One batch per destination; what does not fit waits for the next round."""
        batches: dict[tuple[str, int], tuple[Any, list[_Out]]] = {}
        carry: list[_Out] = []
        for out in outs:
            if carry:
                carry.append(out)  # behind one that waits: keep the order
                continue
            record = out.record or self._outputs.build(out.slot, now)
            where = (record.topic, record.partition)
            entry = batches.get(where)
            if out.alone and entry is not None and entry[1]:
                carry.append(out)
                continue
            if entry is None:
                entry = batches[where] = (self._producer.create_batch(), [])
            if entry[1] and entry[1][-1].alone:
                carry.append(out)
                continue
            if _append(entry[0], record) is None:
                # The batch is full (a first record always fits): kept, so it is built once.
                out.record = record
                carry.append(out)
                continue
            entry[1].append(out)
        if carry:
            self._carry[tp] = carry
            self._dirty.add(tp)
        batches = {where: entry for where, entry in batches.items() if entry[1]}
        if not batches:
            return
        this = _Round(tp, ledger, len(batches))
        self._sending.add(tp)
        for (topic, partition), (batch, members) in batches.items():
            batch.close()
            try:
                future = await self._producer.send_batch(batch, topic, partition=partition)
            except KafkaError as exc:  # no room in time (the broker is stalled), or closing
                self._answered(this, members, exc)
                continue
            future.add_done_callback(
                lambda done, members=members: self._answered(this, members, _error_of(done))
            )

    def _answered(self, this: _Round, members: list[_Out], error: BaseException | None) -> None:
        if self.ledgers.get(this.tp) is not this.ledger:
            pass  # handed back meanwhile: the answer is not ours to act on
        elif error is None:
            slots = [out.slot for out in members]
            this.ledger.ack_all(slots)
            self._outputs.written(slots, asyncio.get_running_loop().time())
        else:
            this.failed.append((members, error))
        this.open -= 1
        self._progress.set()
        if this.open == 0:
            self._finish(this)

    def _finish(self, this: _Round) -> None:
        self._sending.discard(this.tp)
        loop = asyncio.get_running_loop()
        if self.ledgers.get(this.tp) is not this.ledger:
            pass  # handed back meanwhile (its next owner writes it); assigned again, maybe
        elif not this.failed:
            self._troubled.discard(this.tp)
            if self._trouble_since is not None and not self._troubled:
                log.info("broker_writable", down_s=round(loop.time() - self._trouble_since, 3))
                self._trouble_since = None
                self._resend_wait = RESEND_BACKOFF_S[0]
        elif not self._retry(this, loop.time()):
            return
        self._dirty.add(this.tp)
        self._wake.set()

    def _retry(self, this: _Round, now: float) -> bool:
        """Put a failed round's outputs first in line, each batch as its own error requires."""
        again: list[_Out] = []
        waiting = False
        for members, error in this.failed:
            if retriable(error):
                waiting = True
                if self._trouble_since is None:
                    self._trouble_since = now
                    log.warning(
                        "broker_not_writable", error=repr(error), action="holding; sending again"
                    )
                again += members
                continue
            for out in members:
                if len(members) > 1 and not out.alone:
                    again.append(_Out(out.slot, out.record, alone=True))
                elif not out.last_resort:
                    log.error(
                        "output_refused",
                        offset=out.slot.offset,
                        error=repr(error),
                        action="writing a failure record without the value",
                    )
                    replacement = self._outputs.unwritable(out.slot, error)
                    again.append(_Out(out.slot, replacement, alone=True, last_resort=True))
                else:
                    log.error("output_unwritable", offset=out.slot.offset, error=repr(error))
                    self.failed = True
                    self._on_fatal(error)
                    return False
        if waiting:
            self._troubled.add(this.tp)
            self._resend_after = now + self._resend_wait
            self._resend_wait = min(self._resend_wait * 2, RESEND_BACKOFF_S[1])
        again.sort(key=lambda out: out.slot.offset)
        self.resends += len(again)
        self._carry[this.tp] = again + self._carry.get(this.tp, [])
        return True

    # -- rebalance and shutdown -------------------------------------------------------------

    async def drain(self, partitions: Iterable[TopicPartition], timeout_s: float) -> bool:
        """Wait until the partitions' work is all acknowledged; False on timeout or failure."""
        partitions = list(partitions)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while any(len(self.ledgers.get(tp, ())) for tp in partitions):
            remaining = deadline - loop.time()
            if self.failed or remaining <= 0:
                return False
            await self.wait_progress(remaining)
        return True

    async def wait_progress(self, timeout_s: float) -> None:
        """Until some output is acknowledged, or ``timeout_s``."""
        self._progress.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._progress.wait(), timeout_s)

    def hand_back(self, partitions: Iterable[TopicPartition]) -> int:
        """Forget revoked partitions; their unfinished events are the next owner's."""
        handed = 0
        for tp in partitions:
            ledger = self.ledgers.pop(tp, None)
            self._carry.pop(tp, None)
            self._troubled.discard(tp)
            if ledger is not None:
                handed += len(ledger)
        return handed

    async def flush(self) -> None:
        with contextlib.suppress(KafkaError):
            await self._producer.flush()


def _append(batch: Any, record: OutputRecord) -> Any:
    return batch.append(timestamp=None, key=record.key, value=record.value, headers=record.headers)


def _error_of(future: asyncio.Future[Any]) -> BaseException | None:
    if future.cancelled():
        error: BaseException | None = KafkaTimeoutError("the produce request was cancelled")
    else:
        error = future.exception()
    return error
