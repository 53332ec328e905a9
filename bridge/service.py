"""Everything that runs while the bridge consumes, wired once the Kafka clients exist.

    fetch (GuardedFetch) ─> intake ─route─> Lane(batcher) ──batches──> workers (Predictor)
       ^ flow control (room, pause, holds)                                 │ outcomes
       │                                                                   v
    PartitionLedger per partition <──────── Delivery.finish ────────── slots
                      │ ready slots, in offset order
                delivery: emitter ──> producer ──ack──> committer ──> commit

One task consumes (``bridge.consume``), ``batch.max_in_flight`` workers call the
model, one emitter hands outputs to the producer in offset order, one committer
commits what Kafka acknowledged, one reads the consumer lag for the metrics
(``bridge.kafka.lag``); shadow traffic has its own bounded lane that nothing
waits for. Shutdown: stop fetching -> finish or hand back work in flight
-> flush the producer -> commit -> close.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bridge.consume import consume
from bridge.expiry import Expiry
from bridge.flow import FlowControl
from bridge.intake import Intake
from bridge.kafka.commits import Committer
from bridge.kafka.delivery import Delivery
from bridge.kafka.fetch import GuardedFetch
from bridge.kafka.lag import ConsumerLag
from bridge.kafka.rebalance import Rebalance
from bridge.kafka.records import RecordBuilder
from bridge.kafka.salvage import Salvager
from bridge.lanes import Lanes
from bridge.metrics import Metrics
from bridge.outputs import Counts, Outputs
from bridge.serving.client import ModelClient
from bridge.serving.health import ServerHealth
from bridge.serving.predictor import Predictor
from bridge.settings import Settings
from bridge.shadow import ShadowMirror
from bridge.summary import Summary
from bridge.tracing import OFF, Tracing
from bridge.workers import Workers

log = structlog.get_logger(__name__)

SHUTDOWN_STEP_S = 5.0  # longest one Kafka step of the shutdown may take

TaskEnded = Callable[["asyncio.Task[None]"], None]


class Service:
    def __init__(
        self,
        settings: Settings,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        salvager: Salvager,
        records: RecordBuilder,
        client: ModelClient,
        predictor: Predictor,
        health: ServerHealth,
        lanes: Lanes,
        metrics: Metrics,
        counts: Counts,
        on_fatal: Callable[[BaseException], None],
        tracing: Tracing = OFF,
    ) -> None:
        self._settings = settings
        self._health = health
        self._lanes = lanes
        self._counts = counts
        self._predictor = predictor
        kafka, batch, delivery_settings = settings.kafka, settings.batch, settings.delivery
        self.outputs = Outputs(records, metrics, counts, settings.log.payloads, tracing)
        self.delivery = Delivery(producer, self.outputs, on_fatal, delivery_settings.ordering)
        self.shadow = (
            ShadowMirror(client, producer, records, capacity=batch.max_in_flight * 4)
            if settings.topics.shadow
            else None
        )
        max_age_ms = delivery_settings.max_event_age_ms
        self.workers = Workers(
            predictor,
            self.delivery,
            lanes,
            self.shadow,
            tracing,
            Expiry(max_age_ms) if max_age_ms is not None else None,
        )
        self.salvager = salvager
        self.fetch = GuardedFetch(
            consumer, self.salvager, reset_to_earliest=kafka.auto_offset_reset == "earliest"
        )
        self.committer = Committer(
            consumer,
            self.delivery.ledgers,
            delivery_settings.commit_interval_ms / 1000,
            kafka.request_timeout_ms / 1000,
            on_rejected=lambda: self.rebalance.fence(),
        )
        self.rebalance = Rebalance(
            delivery=self.delivery,
            committer=self.committer,
            fetch=self.fetch,
            flush_batches=self.workers.flush,
            drain_s=delivery_settings.rebalance_drain_ms / 1000,
        )
        self.flow = FlowControl(
            consumer, self.delivery, self._hold, batch.max_pending, batch.max_pending_bytes
        )
        self.intake = Intake(
            self.delivery,
            lanes,
            self.workers.dispatch,
            counts,
            settings.model.max_event_bytes,
            tracing,
        )
        self.lag = ConsumerLag(
            consumer,
            self.delivery.ledgers,
            kafka.request_timeout_ms / 1000,
            from_earliest=kafka.auto_offset_reset == "earliest",
        )
        self.summary = Summary(
            counts,
            settings.log.summary_interval_ms / 1000,
            self.delivery.pending,
            lambda: self.flow.paused,
            lag=self._summed_lag,
        )
        self.tasks: list[asyncio.Task[None]] = []  # the long-running ones, for liveness
        self._register(metrics)

    def _summed_lag(self) -> int | None:
        """The lag over the assigned partitions, for the summary; None before it is read."""
        known = self.lag.lag
        return sum(known.values()) if known else None

    def _hold(self) -> str | None:
        """Why the bridge must not take more events now (see ``bridge.flow``), or None."""
        if not self._health.up:
            return "model server down"
        if self.delivery.blocked:
            return "broker not taking outputs"
        if self.rebalance.fenced:
            return "fenced by a rebalance"
        if self.committer.overdue():
            return "commits not landing"
        return None

    def _register(self, metrics: Metrics) -> None:
        metrics.gauge(
            "bridge_paused",
            "1 while the input partitions are paused.",
            lambda: float(self.flow.paused),
        )
        metrics.gauge(
            "bridge_model_server_up",
            "1 while the model server answers.",
            lambda: float(self._health.up),
        )
        metrics.gauge(
            "bridge_pending_events",
            "Events the bridge holds (BATCH__MAX_PENDING bounds them).",
            lambda: float(self.delivery.pending()),
        )
        metrics.gauge(
            "bridge_pending_bytes",
            "Bytes of the held events' keys and values (BATCH__MAX_PENDING_BYTES bounds them).",
            lambda: float(self.delivery.pending_bytes()),
        )
        metrics.counter_by(
            "bridge_commits_total",
            "Offset commits, by outcome (ok, failed, rejected).",
            "outcome",
            lambda: self.committer.outcomes,
        )
        metrics.counter(
            "bridge_undecodable_batches_total",
            "Record batches the client could not decode, turned into failure records.",
            lambda: self.fetch.broken_batches,
        )
        metrics.counter(
            "bridge_resent_records_total",
            "Output records sent again after a broker fault.",
            lambda: self.delivery.resends,
        )
        self._register_alerting(metrics)
        if (shadow := self.shadow) is not None:
            metrics.counter_by(
                "bridge_shadow_records_total",
                "Mirrored events handed to the producer (sent), or dropped: shadow queue full.",
                "outcome",
                lambda: {"sent": shadow.sent, "dropped": shadow.dropped},
            )

    def _register_alerting(self, metrics: Metrics) -> None:
        """What SREs alert on: lag, stuck events, the model's latency, retries, outages."""
        by_partition = ("topic", "partition")
        metrics.gauge_by(
            "bridge_consumer_lag",
            "Records between the group's committed offset and the partition's end.",
            by_partition,
            lambda: {(tp.topic, str(tp.partition)): lag for tp, lag in self.lag.lag.items()},
        )
        metrics.gauge_by(
            "bridge_oldest_in_flight_seconds",
            "Age of the partition's oldest event taken and not yet written (0 series: none).",
            by_partition,
            lambda: {
                (tp.topic, str(tp.partition)): age
                for tp, age in self.delivery.oldest_in_flight(
                    asyncio.get_running_loop().time()
                ).items()
            },
        )
        metrics.histogram(
            "bridge_model_request_duration_seconds",
            "Seconds one model call took, answered or not (retries are calls of their own).",
            ("model", "route", "version"),
            self._predictor.call_seconds,
            {"protocol": self._settings.serving.protocol},
        )
        metrics.histogram(
            "bridge_batch_size",
            "Events per batch sent to the model.",
            (),
            self.workers.batch_sizes,
        )
        metrics.counter_by(
            "bridge_retries_total",
            "Model calls made again after a retriable error, by its reason (outages apart).",
            "reason",
            lambda: self._predictor.retries,
        )
        metrics.counter(
            "bridge_model_server_outages_total",
            "Times the model server was found down (consumption paused until it was back).",
            lambda: self._health.outages,
        )
        metrics.counter(
            "bridge_rebalances_total",
            "Partition assignments the group gave this member.",
            lambda: self.rebalance.rebalances,
        )

    async def run(
        self,
        stop: asyncio.Event,
        task_ended: TaskEnded,
        extra: list[Coroutine[Any, Any, None]],
    ) -> None:
        """Consume until ``stop``, then shut down in order."""
        tasks = [
            asyncio.create_task(self.workers.run(), name=f"worker-{i}")
            for i in range(self._settings.batch.max_in_flight)
        ]
        tasks.append(asyncio.create_task(self.committer.run(), name="committer"))
        tasks.append(asyncio.create_task(self.lag.run(), name="consumer-lag"))
        tasks += [asyncio.create_task(work, name="routes-follower") for work in extra]
        if self.shadow is not None:
            tasks.append(asyncio.create_task(self.shadow.run(), name="shadow"))
        if self.summary.interval_s:
            tasks.append(asyncio.create_task(self.summary.run(), name="summary"))
        emitter = asyncio.create_task(self.delivery.run_emitter(), name="emitter")
        self.tasks = [*tasks, emitter]
        for task in self.tasks:
            task.add_done_callback(task_ended)
        try:
            await consume(
                fetch=self.fetch,
                flow=self.flow,
                intake=self.intake,
                lanes=self._lanes,
                dispatch=self.workers.dispatch,
                stop=stop,
                max_records=self._settings.kafka.fetch_max_records,
            )
        finally:
            await self._shutdown(tasks, emitter)

    async def _shutdown(self, tasks: list[asyncio.Task[None]], emitter: asyncio.Task[None]) -> None:
        delivery = self.delivery
        self.workers.flush()
        drained = False
        if not self.rebalance.fenced:  # a fenced member's work is another member's now
            grace = self._settings.delivery.shutdown_grace_ms / 1000
            drained = await delivery.drain(list(delivery.ledgers), grace)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await bounded(delivery.flush(), "flush the producer")
        emitter.cancel()
        await asyncio.gather(emitter, return_exceptions=True)
        committed = await self._final_commit()
        if self.summary.interval_s:
            self.summary.emit()  # the last interval's tail, so the summaries add up to the totals
        counts = self._counts
        log.info(
            "stopped",
            drained=drained,
            committed=committed,
            fenced=self.rebalance.fenced,  # its work was another member's: nothing to commit
            handed_back=delivery.pending(),
            events=counts.events,
            results=counts.results,
            failures=counts.failures,
        )

    async def _final_commit(self) -> bool:
        """Commit what was written, trying again within the step's bound unless rejected."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SHUTDOWN_STEP_S
        while True:
            try:
                landed = await asyncio.wait_for(self.committer.commit(), SHUTDOWN_STEP_S)
            except TimeoutError:
                landed = False
            if landed or self.rebalance.fenced or loop.time() >= deadline:
                return landed
            await asyncio.sleep(0.1)


async def bounded(step: Coroutine[Any, Any, None], what: str) -> None:
    """A shutdown step that needs Kafka: give up after a bound if Kafka is unreachable.

    What was not committed is replayed by the next owner (at-least-once), which is
    better than a process that ignores SIGTERM until it is killed.
    """
    try:
        await asyncio.wait_for(step, SHUTDOWN_STEP_S)
    except TimeoutError:
        log.error("shutdown_step_timed_out", step=what, seconds=SHUTDOWN_STEP_S)  # noqa: TRY400
