"""The bridge's lifecycle: start, the consume -> predict -> produce loop, shutdown.

    consume loop ──instances──> Batcher ──batches──> queue ──> N workers (Predictor)
         │                                                          │ outcomes
         └── per-partition PartitionLedger <── resolve ─────────────┘
                      │ ready slots, in offset order
                   emitter ──> producer ──ack──> ledger ──> committer ──> commit

One task consumes, ``batch.max_in_flight`` workers call the model, one emitter
hands outputs to the producer in offset order, one committer commits what Kafka
acknowledged. Shutdown: stop fetching -> finish or hand back work in flight ->
flush the producer -> commit -> close.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from bridge.errors import EventError, ModelCallError
from bridge.kafka.clients import make_consumer, make_producer
from bridge.kafka.records import OutputRecord, RecordBuilder, Source
from bridge.pipeline.batcher import Batcher
from bridge.pipeline.health import ServerHealth
from bridge.pipeline.instances import Instance, InstanceBuilder, parse_event
from bridge.pipeline.ledger import PartitionLedger, Slot
from bridge.pipeline.outcomes import Failure, Outcome, Success
from bridge.pipeline.predictor import Predictor, RetryPolicy
from bridge.serving.client import ModelClient, Target
from bridge.serving.signature import Signature
from bridge.settings import Settings

log = structlog.get_logger("bridge")

IDLE_POLL_MS = 200  # longest a poll waits when no batch is open (bounds stop latency)


class StartupError(Exception):
    """The bridge cannot start (bad signature, missing topic); the message says why."""


@dataclass(slots=True)
class Pending:
    """An instance on its way to the model, with the slot its outcome goes to."""

    tp: TopicPartition
    slot: Slot[Outcome]
    instance: Instance


def make_client(settings: Settings) -> ModelClient:
    """Import only the protocol in use: grpc or httpx, not both (memory, start time)."""
    serving = settings.serving
    if serving.protocol == "grpc":
        from bridge.serving.grpc_client import GrpcModelClient

        return GrpcModelClient(
            serving.grpc_target, serving.timeout_ms / 1000, serving.max_message_mb * 1024 * 1024
        )
    from bridge.serving.rest_client import RestModelClient

    return RestModelClient(
        serving.rest_url, serving.timeout_ms / 1000, serving.connect_timeout_ms / 1000
    )


class Bridge:
    def __init__(self, settings: Settings, client: ModelClient | None = None) -> None:
        self.settings = settings
        self.target = Target(
            settings.model.name,
            settings.model.label,
            settings.model.version,
            settings.model.signature,
        )
        self.client = client or make_client(settings)
        retry = settings.retry
        self.health = ServerHealth(
            lambda: self.client.is_ready(self.target),
            retry.initial_backoff_ms / 1000,
            retry.probe_max_backoff_ms / 1000,
        )
        self.predictor = Predictor(
            self.client,
            self.health,
            RetryPolicy(
                retry.max_attempts, retry.initial_backoff_ms / 1000, retry.max_backoff_ms / 1000
            ),
        )
        self.stop = asyncio.Event()
        self.fatal: BaseException | None = None
        self.ledgers: dict[TopicPartition, PartitionLedger[Outcome]] = {}
        self.queue: asyncio.Queue[list[Pending]] = asyncio.Queue()
        self.dirty: set[TopicPartition] = set()
        self.wake_emitter = asyncio.Event()
        self.progress = asyncio.Event()  # set on every ack; drains wait on it
        self.paused = False
        self.counts = {"events": 0, "results": 0, "failures": 0}
        self.signature: Signature | None = None
        self.builder: InstanceBuilder | None = None
        self.records: RecordBuilder | None = None
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None

    # -- start ---------------------------------------------------------------------------

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT; the process exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._request_stop, sig.name)
        try:
            signature = await self._wait_for_signature()
            if signature is None:
                return 0
            await self._serve(signature)
        except StartupError as exc:
            log.error("cannot_start", reason=str(exc))  # noqa: TRY400 - expected; no traceback
            return 2
        finally:
            await self.health.close()
            await self.client.aclose()
        if self.fatal is not None:
            log.error("stopped_on_error", error=repr(self.fatal))
            return 1
        return 0

    def _request_stop(self, why: str) -> None:
        if not self.stop.is_set():
            log.info("stopping", signal=why)
        self.stop.set()

    async def _wait_for_signature(self) -> Signature | None:
        """The target's signature; while the server is down or not ready, hold and retry."""
        delay = self.settings.retry.initial_backoff_ms / 1000
        while not self.stop.is_set():
            try:
                signature = await self.client.get_signature(self.target)
            except ModelCallError as exc:
                if not exc.retriable:
                    raise StartupError(f"{self.target}: {exc.message}") from exc
                log.warning("waiting_for_model", target=str(self.target), error=exc.message)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), delay)
                delay = min(delay * 2, self.settings.retry.probe_max_backoff_ms / 1000)
                continue
            log.info(
                "model_signature",
                target=str(self.target),
                version=signature.version,
                inputs={k: [v.dtype.tf_name, v.shape] for k, v in signature.inputs.items()},
                outputs=sorted(signature.outputs),
            )
            return signature
        return None

    async def _serve(self, signature: Signature) -> None:
        settings = self.settings
        self.signature = signature
        self.builder = InstanceBuilder(
            signature, settings.model.input_map, settings.model.copy_fields
        )
        max_size = settings.batch.max_size
        if max_size > 1 and not signature.batchable:
            log.warning("signature_not_batchable", action="sending one event per request")
            max_size = 1
        batcher: Batcher[Pending] = Batcher(max_size, settings.batch.max_wait_ms / 1000)

        self.producer = make_producer(settings.kafka)
        await self.producer.start()
        try:
            counts = {}
            for topic in (settings.topics.results, settings.topics.failures):
                partitions = await self.producer.partitions_for(topic)
                if not partitions:
                    raise StartupError(f"topic {topic} has no partitions (does it exist?)")
                counts[topic] = len(partitions)
            self.records = RecordBuilder(
                settings.topics.results,
                settings.topics.failures,
                counts,
                self.target,
                settings.serving.protocol,
            )
            self.consumer = make_consumer(settings.kafka)
            self.consumer.subscribe([settings.topics.input], listener=_Rebalance(self, batcher))
            # Everything before this line is the bridge's own start; what follows until
            # "partitions_assigned" is the group join, whose wait the broker decides
            # (Apache Kafka: group.initial.rebalance.delay.ms; Tansu: half the session timeout).
            log.info("joining_group", group=settings.kafka.group_id, topic=settings.topics.input)
            await self.consumer.start()
            try:
                await self._pipeline(batcher)
            finally:
                await self.consumer.stop()
        finally:
            await self.producer.stop()

    async def _pipeline(self, batcher: Batcher[Pending]) -> None:
        tasks = [
            asyncio.create_task(self._worker(), name=f"worker-{i}")
            for i in range(self.settings.batch.max_in_flight)
        ]
        emitter = asyncio.create_task(self._emitter(), name="emitter")
        committer = asyncio.create_task(self._committer(), name="committer")
        try:
            await self._consume(batcher)
        finally:
            await self._shutdown(batcher, tasks, emitter, committer)

    # -- consume ---------------------------------------------------------------------------

    async def _consume(self, batcher: Batcher[Pending]) -> None:
        assert self.consumer is not None and self.builder is not None  # noqa: S101 - set in _serve
        consumer, builder = self.consumer, self.builder
        loop = asyncio.get_running_loop()
        max_bytes = self.settings.model.max_event_bytes
        max_pending = self.settings.batch.max_pending
        first = True
        while not self.stop.is_set():
            room = self._backpressure(max_pending)
            deadline = batcher.deadline()
            timeout_ms = (
                IDLE_POLL_MS if deadline is None else max(0, int((deadline - loop.time()) * 1000))
            )
            fetched = await consumer.getmany(
                timeout_ms=timeout_ms,
                max_records=max(1, min(room, self.settings.kafka.fetch_max_records)),
            )
            now = loop.time()
            for tp, records in fetched.items():
                if first:
                    log.info("consuming", topic=tp.topic)
                    first = False
                ledger = self.ledgers.setdefault(tp, PartitionLedger())
                for record in records:
                    self.counts["events"] += 1
                    slot: Slot[Outcome] = ledger.add(record.offset, record)
                    slot.times["fetched"] = now
                    try:
                        instance = builder.build(parse_event(record.value, max_bytes))
                    except EventError as exc:
                        slot.resolve(Failure(exc, attempts=0))
                        self.dirty.add(tp)
                        continue
                    slot.context = instance.copied
                    for batch in batcher.add(Pending(tp, slot, instance), instance.shape_key, now):
                        self.queue.put_nowait(batch)
            due = batcher.take_due(loop.time())
            if due:
                self.queue.put_nowait(due)
            if self.dirty:
                self.wake_emitter.set()

    def _backpressure(self, max_pending: int) -> int:
        """Pause every assigned partition while too much is pending or the server is down."""
        assert self.consumer is not None  # noqa: S101 - set in _serve
        pending = sum(len(ledger) for ledger in self.ledgers.values())
        should_pause = pending >= max_pending or not self.health.up
        assigned = self.consumer.assignment()
        if should_pause:
            # Also pauses partitions assigned since the last pass.
            self.consumer.pause(*assigned)
            if not self.paused:
                log.info("paused", pending=pending, server_up=self.health.up)
        elif self.paused:
            self.consumer.resume(*assigned)
            log.info("resumed", pending=pending)
        self.paused = should_pause
        return max(0, max_pending - pending)

    # -- predict -----------------------------------------------------------------------

    async def _worker(self) -> None:
        assert self.signature is not None  # noqa: S101 - set in _serve
        loop = asyncio.get_running_loop()
        while True:
            batch = await self.queue.get()
            started = loop.time()
            outcomes = await self.predictor.run(
                self.target, self.signature, [pending.instance for pending in batch]
            )
            failed = 0
            versions: set[int | None] = set()
            for pending, outcome in zip(batch, outcomes, strict=True):
                pending.slot.times["dispatched"] = started
                pending.slot.resolve(outcome)
                self.dirty.add(pending.tp)
                if isinstance(outcome, Failure):
                    failed += 1
                else:
                    versions.add(outcome.version)
            self.wake_emitter.set()
            log.info(
                "batch",
                size=len(batch),
                failed=failed,
                target=str(self.target),
                versions=sorted(v for v in versions if v is not None),
                ms=round((loop.time() - started) * 1000, 3),
            )

    # -- produce and commit -------------------------------------------------------------------

    async def _emitter(self) -> None:
        """The only task that hands records to the producer: offset order per partition."""
        assert self.producer is not None  # noqa: S101 - set in _serve
        while True:
            await self.wake_emitter.wait()
            self.wake_emitter.clear()
            await self._emit_ready()

    async def _emit_ready(self) -> None:
        assert self.producer is not None  # noqa: S101 - set in _serve
        loop = asyncio.get_running_loop()
        while self.dirty:
            tp = self.dirty.pop()
            ledger = self.ledgers.get(tp)
            if ledger is None:
                continue  # handed back in a rebalance: its outputs are not ours to write
            for slot in ledger.take_ready():
                output = self._output(slot, loop.time())
                future = await self.producer.send(
                    output.topic,
                    output.value,
                    key=output.key,
                    partition=output.partition,
                    headers=output.headers,
                )
                future.add_done_callback(
                    lambda fut, ledger=ledger, slot=slot: self._on_ack(fut, ledger, slot)
                )

    def _output(self, slot: Slot[Outcome], now: float) -> OutputRecord:
        assert self.records is not None  # noqa: S101 - set in _serve
        record: Any = slot.record
        source = Source(
            record.topic,
            record.partition,
            record.offset,
            record.timestamp,
            record.key,
            record.value,
            record.headers,
        )
        outcome = slot.outcome
        if isinstance(outcome, Success):
            self.counts["results"] += 1
            fetched = slot.times["fetched"]
            timings = {
                "queued_ms": (slot.times.get("dispatched", fetched) - fetched) * 1000,
                "model_ms": outcome.model_ms,
                "bridge_ms": (now - fetched) * 1000,
            }
            return self.records.result(source, outcome, slot.context or {}, timings)
        assert isinstance(outcome, Failure)  # noqa: S101 - a READY slot has an outcome
        self.counts["failures"] += 1
        if self.settings.log.payloads:
            log.info(
                "failure", offset=record.offset, reason=outcome.error.reason, value=record.value
            )
        return self.records.failure(source, outcome)

    def _on_ack(
        self, future: asyncio.Future[Any], ledger: PartitionLedger[Outcome], slot: Slot[Outcome]
    ) -> None:
        if future.cancelled() or future.exception() is not None:
            # The output could not be written: stop without committing it (replayed on restart).
            error = future.exception() if not future.cancelled() else asyncio.CancelledError()
            if self.fatal is None:
                log.error("produce_failed", offset=slot.offset, error=repr(error))
                self.fatal = error
            self.stop.set()
            return
        ledger.ack(slot)
        self.progress.set()

    async def _committer(self) -> None:
        interval = self.settings.delivery.commit_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            await self.commit()

    async def commit(self, partitions: Iterable[TopicPartition] | None = None) -> None:
        """Commit, for each partition, one past its last acknowledged output."""
        assert self.consumer is not None  # noqa: S101 - set in _serve
        chosen = (
            self.ledgers
            if partitions is None
            else {tp: self.ledgers[tp] for tp in partitions if tp in self.ledgers}
        )
        offsets = {}
        for tp, ledger in chosen.items():
            offset = ledger.committable()
            if offset is not None and offset != ledger.committed:
                offsets[tp] = offset
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except CommitFailedError as exc:
            # The group rebalanced: the new owner resumes from the last good commit.
            log.warning("commit_rejected", error=str(exc), partitions=len(offsets))
            return
        except KafkaError as exc:
            # Not committed; the next pass tries again with the same or later offsets.
            log.warning("commit_failed", error=repr(exc), partitions=len(offsets))
            return
        for tp, offset in offsets.items():
            chosen[tp].committed = offset

    # -- rebalance and shutdown ---------------------------------------------------------------

    async def drain(self, partitions: Iterable[TopicPartition], timeout_s: float) -> bool:
        """Wait until the partitions' work is all acknowledged; False on timeout."""
        partitions = list(partitions)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while any(len(self.ledgers.get(tp, ())) for tp in partitions):
            if self.fatal is not None:
                return False
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self.progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.progress.wait(), remaining)
        return True

    async def _shutdown(
        self,
        batcher: Batcher[Pending],
        workers: list[asyncio.Task[None]],
        emitter: asyncio.Task[None],
        committer: asyncio.Task[None],
    ) -> None:
        rest = batcher.take_all()
        if rest:
            self.queue.put_nowait(rest)
        grace = self.settings.delivery.shutdown_grace_ms / 1000
        drained = await self.drain(list(self.ledgers), grace)
        for task in (*workers, committer):
            task.cancel()
        await asyncio.gather(*workers, committer, return_exceptions=True)
        with contextlib.suppress(KafkaError):
            assert self.producer is not None  # noqa: S101 - set in _serve
            await self.producer.flush()
        emitter.cancel()
        await asyncio.gather(emitter, return_exceptions=True)
        await self.commit()
        pending = sum(len(ledger) for ledger in self.ledgers.values())
        log.info(
            "stopped",
            drained=drained,
            handed_back=pending,
            **self.counts,
        )


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Revoked partitions: finish their work within a bound, commit, hand back the rest."""

    def __init__(self, bridge: Bridge, batcher: Batcher[Pending]) -> None:
        self._bridge = bridge
        self._batcher = batcher

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        bridge = self._bridge
        mine = [tp for tp in revoked if tp in bridge.ledgers]
        if not mine:
            return
        rest = self._batcher.take_all()
        if rest:
            bridge.queue.put_nowait(rest)
        drained = await bridge.drain(mine, bridge.settings.delivery.rebalance_drain_ms / 1000)
        await bridge.commit(mine)
        handed_back = sum(len(bridge.ledgers.pop(tp)) for tp in mine)
        log.info(
            "partitions_revoked",
            partitions=sorted(tp.partition for tp in mine),
            drained=drained,
            handed_back=handed_back,
        )

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("partitions_assigned", partitions=sorted(tp.partition for tp in assigned))
