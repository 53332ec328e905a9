"""The bridge's lifecycle: start, the consume -> predict -> produce loop, shutdown.

    consume ─route─> Lane(batcher) ──batches──> queue ──> N workers (Predictor)
       │                                                      │ outcomes
       └── PartitionLedger per partition <──── resolve ───────┘
                      │ ready slots, in offset order
                Delivery: emitter ──> producer ──ack──> committer ──> commit

One task consumes and routes, ``batch.max_in_flight`` workers call the model, one
emitter hands outputs to the producer in offset order, one committer commits what
Kafka acknowledged; a follower of the control topic swaps routes, and shadow
traffic has its own bounded lane that nothing waits for. Shutdown: stop fetching
-> finish or hand back work in flight -> flush the producer -> commit -> close.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Coroutine
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from bridge.control import RoutesFollower
from bridge.errors import BridgeError, EventError, InternalError
from bridge.kafka.clients import make_consumer, make_producer
from bridge.kafka.delivery import Delivery
from bridge.kafka.records import OutputRecord, RecordBuilder
from bridge.lanes import Lanes, Pending, RoutesRejectedError, initial_routes
from bridge.metrics import Metrics, serve_metrics
from bridge.pipeline.health import ServerHealth
from bridge.pipeline.instances import NO_FIELDS, parse_event
from bridge.pipeline.ledger import Slot
from bridge.pipeline.outcomes import Failure, Outcome, Success
from bridge.pipeline.predictor import Predictor, RetryPolicy
from bridge.pipeline.routing import Routes
from bridge.serving.client import ModelClient, Target
from bridge.settings import Settings
from bridge.shadow import ShadowMirror

log = structlog.get_logger("bridge")

IDLE_POLL_MS = 200  # longest a poll waits when no batch is open (bounds stop latency)
SHUTDOWN_STEP_S = 5.0  # longest one Kafka step of the shutdown may take
STALL_PAUSE_S = 1.0  # full for this long: pause the partitions (see Bridge._room)


class StartupError(Exception):
    """The bridge cannot start (no such model or label, missing topic); the message says why."""


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
        self.client = client or make_client(settings)
        retry = settings.retry
        model_only = Target(settings.model.name)
        # Liveness of the server, not of one version: a pinned version that is gone
        # must fail its events (bounded), not pause the whole bridge.
        self.health = ServerHealth(
            lambda: self.client.is_ready(model_only),
            retry.initial_backoff_ms / 1000,
            retry.probe_max_backoff_ms / 1000,
        )
        self.predictor = Predictor(
            self.client,
            self.health,
            RetryPolicy(
                retry.max_attempts,
                retry.initial_backoff_ms / 1000,
                retry.max_backoff_ms / 1000,
                retry.not_found_timeout_ms / 1000,
            ),
        )
        self.lanes = Lanes(self.client, settings, self.health.hold_if_down)
        self.stop = asyncio.Event()
        self.fatal: BaseException | None = None
        self.queue: asyncio.Queue[list[Pending]] = asyncio.Queue()
        self.paused = False
        self._full_since: float | None = None
        self.counts = {"events": 0, "results": 0, "failures": 0}
        self.metrics = Metrics()
        self.metrics.gauges["bridge_paused"] = lambda: float(self.paused)
        self.metrics.gauges["bridge_model_server_up"] = lambda: float(self.health.up)
        self.metrics.gauges["bridge_pending_events"] = lambda: float(
            self.delivery.pending() if self.delivery else 0
        )
        self.records: RecordBuilder | None = None
        self.delivery: Delivery | None = None
        self.shadow: ShadowMirror | None = None
        self.follower: RoutesFollower | None = None
        self._background: set[asyncio.Task[None]] = set()

    # -- start ---------------------------------------------------------------------------

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT; the process exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._request_stop, sig.name)
        metrics_server = None
        if self.settings.metrics.port:
            metrics_server = await serve_metrics(
                self.metrics, self.settings.metrics.host, self.settings.metrics.port
            )
        try:
            if not await self._open_lanes():
                return 0
            await self._serve()
        except StartupError as exc:
            log.error("cannot_start", reason=str(exc))  # noqa: TRY400 - expected; no traceback
            return 2
        finally:
            if metrics_server is not None:
                metrics_server.close()
            if self.follower is not None:
                await _bounded(self.follower.stop(), "stop the control-topic reader")
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

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        """These tasks run until shutdown cancels them; one that dies stops the bridge.

        Without this, a bug in (say) the emitter would leave the consumer paused and
        the process alive forever; stopping uncommitted lets a restart replay the work.
        """
        error = None if task.cancelled() else task.exception()
        if error is None:
            return
        log.error("task_failed", task=task.get_name(), error=repr(error), exc_info=error)
        self._fail(error)

    def _fail(self, error: BaseException) -> None:
        self.fatal = self.fatal or error
        self.stop.set()

    async def _open_lanes(self) -> bool:
        """Routes from the control topic (or the settings), checked against the server."""
        settings = self.settings
        try:
            routes = initial_routes(settings)
            if settings.topics.control:
                self.follower = RoutesFollower(
                    settings.kafka,
                    settings.topics.control,
                    settings.model.name,
                    settings.model.signature,
                    self._on_routes,
                )
                await self.follower.start()  # applies what the topic holds, if anything
            if self.lanes.routes is None:
                main, shadow = await self._prepare(routes, wait_for_models=True)
                self.lanes.apply(routes, main, shadow)
        except RoutesRejectedError as exc:
            raise StartupError(str(exc)) from exc
        except asyncio.CancelledError:
            return False
        return not self.stop.is_set()

    async def _prepare(self, routes: Routes, *, wait_for_models: bool) -> tuple[Any, Any]:
        """Lanes for ``routes``; while the server is down this holds (and SIGTERM ends it)."""
        preparing = asyncio.ensure_future(
            self.lanes.prepare(routes, wait_for_models=wait_for_models)
        )
        stopping = asyncio.ensure_future(self.stop.wait())
        await asyncio.wait({preparing, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not preparing.done():
            preparing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await preparing
            raise asyncio.CancelledError
        return preparing.result()

    async def _on_routes(self, routes: Routes | None) -> None:
        """New routes from the control topic: check them, then switch; or keep the old ones."""
        routes = routes or initial_routes(self.settings)
        if routes.model != self.settings.model.name:
            return
        if routes.shadow is not None and not self.settings.topics.shadow:
            log.error("routes_rejected", reason="a shadow target needs BRIDGE_TOPICS__SHADOW")
            return
        try:
            main, shadow = await self._prepare(routes, wait_for_models=False)
        except RoutesRejectedError as exc:
            log.error(  # noqa: TRY400 - an operator's mistake, not a bug: no traceback
                "routes_rejected",
                routes=routes.describe(),
                reason=str(exc),
                keeping=self.lanes.routes.describe() if self.lanes.routes else None,
            )
            return
        for batch in self.lanes.apply(routes, main, shadow):
            self.dispatch(batch)

    async def _serve(self) -> None:
        settings = self.settings
        producer = make_producer(settings.kafka)
        await producer.start()
        try:
            counts = {}
            for topic in filter(
                None, (settings.topics.results, settings.topics.failures, settings.topics.shadow)
            ):
                partitions = await producer.partitions_for(topic)
                if not partitions:
                    raise StartupError(f"topic {topic} has no partitions (does it exist?)")
                counts[topic] = len(partitions)
            self.records = RecordBuilder(
                settings.topics.results,
                settings.topics.failures,
                counts,
                settings.serving.protocol,
                settings.topics.shadow,
            )
            consumer = make_consumer(settings.kafka)
            self.delivery = Delivery(consumer, producer, self._output, self._fail)
            if settings.topics.shadow:
                self.shadow = ShadowMirror(
                    self.client, producer, self.records, capacity=settings.batch.max_in_flight * 4
                )
            consumer.subscribe([settings.topics.input], listener=_Rebalance(self))
            # Everything before this line is the bridge's own start; what follows until
            # "partitions_assigned" is the group join, whose wait the broker decides
            # (Apache Kafka: group.initial.rebalance.delay.ms; Tansu: half the session timeout).
            log.info("joining_group", group=settings.kafka.group_id, topic=settings.topics.input)
            await consumer.start()
            try:
                await self._pipeline(consumer)
            finally:
                await _bounded(consumer.stop(), "leave the group")
        finally:
            await _bounded(producer.stop(), "close the producer")

    async def _pipeline(self, consumer: AIOKafkaConsumer) -> None:
        assert self.delivery is not None  # noqa: S101 - set in _serve
        delivery = self.delivery
        tasks = [
            asyncio.create_task(self._worker(), name=f"worker-{i}")
            for i in range(self.settings.batch.max_in_flight)
        ]
        tasks.append(
            asyncio.create_task(
                delivery.run_committer(self.settings.delivery.commit_interval_ms / 1000),
                name="committer",
            )
        )
        if self.follower is not None:
            tasks.append(asyncio.create_task(self.follower.run(), name="routes-follower"))
        if self.shadow is not None:
            tasks.append(asyncio.create_task(self.shadow.run(), name="shadow"))
        emitter = asyncio.create_task(delivery.run_emitter(), name="emitter")
        for task in (*tasks, emitter):
            task.add_done_callback(self._task_ended)
        try:
            await self._consume(consumer)
        finally:
            await self._shutdown(tasks, emitter)

    # -- consume ---------------------------------------------------------------------------

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        assert self.delivery is not None  # noqa: S101 - set in _serve
        delivery, lanes = self.delivery, self.lanes
        loop = asyncio.get_running_loop()
        max_bytes = self.settings.model.max_event_bytes
        max_pending = self.settings.batch.max_pending
        first = True
        while not self.stop.is_set():
            deadline = lanes.deadline()
            timeout_ms = (
                IDLE_POLL_MS if deadline is None else max(0, int((deadline - loop.time()) * 1000))
            )
            room = await self._room(consumer, max_pending, timeout_ms / 1000)
            if room == 0:
                fetched = {}
                if self.paused:  # keep polling, so the group knows this member is alive
                    fetched = await consumer.getmany(timeout_ms=timeout_ms)
            else:
                fetched = await consumer.getmany(
                    timeout_ms=timeout_ms,
                    max_records=min(room, self.settings.kafka.fetch_max_records),
                )
            now = loop.time()
            routes = lanes.routes
            assert routes is not None  # noqa: S101 - applied before consuming
            # Per record, only what must be per record: the common single-route,
            # no-shadow case does no hashing and no lookups.
            only = lanes.lane_for(routes.only) if routes.only is not None else None
            shadowing = lanes.shadow is not None and routes.shadow is not None
            for tp, records in fetched.items():
                if first:
                    log.info("consuming", topic=tp.topic)
                    first = False
                self.counts["events"] += len(records)
                ledger = delivery.ledger(tp)
                for record in records:
                    slot: Slot[Outcome] = ledger.add(record.offset, record)
                    slot.fetched = now
                    lane = only or lanes.lane_for(
                        routes.choose(record.key, (record.topic, record.partition, record.offset))
                    )
                    try:
                        event = parse_event(record.value, max_bytes)
                        instance = lane.builder.build(event)
                    except EventError as exc:
                        self._fail_event(slot, lane, tp, exc)
                        continue
                    except Exception as exc:  # one event's bug must not stop the partition
                        log.exception(
                            "internal_error", stage="consume", offset=record.offset, exc_info=exc
                        )
                        self._fail_event(slot, lane, tp, InternalError.wrapping(exc))
                        continue
                    slot.context = (lane, instance.copied)
                    pending = Pending(tp, slot, instance, lane, record)
                    for batch in lane.batcher.add(pending, instance.shape_key, now):
                        self.dispatch(batch)
                    if shadowing and routes.shadowed(
                        record.key, (record.topic, record.partition, record.offset)
                    ):
                        self._mirror(event, record, tp, now)
            for batch in lanes.take_due(loop.time()):
                self.dispatch(batch)

    def _fail_event(
        self, slot: Slot[Outcome], lane: Any, tp: TopicPartition, error: BridgeError
    ) -> None:
        slot.context = (lane, None)
        slot.resolve(Failure(error, attempts=0))
        self.delivery.resolved(tp)  # type: ignore[union-attr]

    def _mirror(self, event: dict[str, Any], record: Any, tp: TopicPartition, now: float) -> None:
        """Shadow traffic: best effort, and it never touches the main record."""
        lane = self.lanes.shadow
        assert lane is not None  # noqa: S101 - checked by the caller
        try:
            instance = lane.builder.build(event)
        except Exception:  # noqa: BLE001 - the shadow cannot take it; the main record is unaffected
            return
        for batch in lane.batcher.add(
            Pending(tp, None, instance, lane, record), instance.shape_key, now
        ):
            self.dispatch(batch)

    def dispatch(self, batch: list[Pending]) -> None:
        if batch[0].slot is None:
            if self.shadow is not None:
                self.shadow.offer(batch)
        else:
            self.queue.put_nowait(batch)

    async def _room(self, consumer: AIOKafkaConsumer, max_pending: int, wait_s: float) -> int:
        """How many more events to take; 0 after waiting up to ``wait_s`` for some to finish.

        Full for a moment (normal under load): no records are taken, what aiokafka
        prefetched (bounded by the fetch size) stays where it is. Full for longer, or
        the server down: the assigned partitions are paused, which also drops that
        prefetch, and polling goes on so the group keeps the member. They resume once
        half the room is back: pausing and resuming refetch, so no flapping.
        """
        assert self.delivery is not None  # noqa: S101 - set in _serve
        pending = self.delivery.pending()
        loop = asyncio.get_running_loop()
        full = pending >= max_pending
        if not full:
            self._full_since = None
        elif self._full_since is None:
            self._full_since = loop.time()
        stalled = self._full_since is not None and loop.time() - self._full_since >= STALL_PAUSE_S
        if not self.health.up or stalled:
            if not self.paused:
                log.info("paused", pending=pending, server_up=self.health.up)
                self.paused = True
            consumer.pause(*consumer.assignment())  # also what was assigned since
            return 0
        if self.paused and pending <= max_pending // 2:
            consumer.resume(*consumer.assignment())
            self.paused = False
            log.info("resumed", pending=pending)
        if self.paused:
            return 0
        if full:
            await self.delivery.wait_progress(min(wait_s, 0.05))
            return 0
        return max_pending - pending

    # -- predict -----------------------------------------------------------------------

    async def _worker(self) -> None:
        assert self.delivery is not None  # noqa: S101 - set in _serve
        delivery = self.delivery
        loop = asyncio.get_running_loop()
        while True:
            batch = await self.queue.get()
            lane = batch[0].lane
            started = loop.time()
            outcomes = await self.predictor.run(
                lane.target, lane.signature, [pending.instance for pending in batch]
            )
            failed = 0
            versions: set[int] = set()
            partitions = set()
            for pending, outcome in zip(batch, outcomes, strict=True):
                slot = pending.slot
                assert slot is not None  # noqa: S101 - main lanes always carry a slot
                slot.dispatched = started
                slot.resolve(outcome)
                partitions.add(pending.tp)
                if isinstance(outcome, Failure):
                    failed += 1
                elif outcome.version is not None:
                    versions.add(outcome.version)
            for tp in partitions:
                delivery.resolved(tp)
            log.info(
                "batch",
                size=len(batch),
                failed=failed,
                model=lane.target.model,
                route=lane.name,
                versions=sorted(versions),
                ms=round((loop.time() - started) * 1000, 3),
            )
            for version in versions:
                if version != lane.signature.version:
                    self._in_background(self.lanes.refresh(lane, version))

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)  # a reference, or the loop may drop the task
        task.add_done_callback(self._background.discard)

    def _output(self, slot: Slot[Outcome], now: float) -> OutputRecord:
        """The slot's output record; a result that cannot be built becomes a failure."""
        try:
            return self._build_output(slot, now)
        except Exception as exc:  # one event's bug must not stop the bridge
            log.exception("internal_error", stage="output", offset=slot.offset, exc_info=exc)
            slot.outcome = Failure(InternalError.wrapping(exc), attempts=0)
            return self._build_output(slot, now)

    def _build_output(self, slot: Slot[Outcome], now: float) -> OutputRecord:
        assert self.records is not None  # noqa: S101 - set in _serve
        record: Any = slot.record
        lane, copied = slot.context
        outcome = slot.outcome
        fetched = slot.fetched
        bridge_ms = (now - fetched) * 1000
        model = lane.target.model
        if isinstance(outcome, Success):
            self.counts["results"] += 1
            self.metrics.observe(model, lane.name, outcome.version, "result", "", bridge_ms)
            timings = {
                "queued_ms": ((slot.dispatched or fetched) - fetched) * 1000,
                "model_ms": outcome.model_ms,
                "bridge_ms": bridge_ms,
            }
            return self.records.result(
                record, outcome, lane.name, lane.target, copied or NO_FIELDS, timings
            )
        assert isinstance(outcome, Failure)  # noqa: S101 - a READY slot has an outcome
        self.counts["failures"] += 1
        self.metrics.observe(model, lane.name, None, "failure", outcome.error.reason, bridge_ms)
        if self.settings.log.payloads:
            log.info(
                "failure", offset=record.offset, reason=outcome.error.reason, value=record.value
            )
        return self.records.failure(record, outcome, lane.name, lane.target)

    # -- shutdown ---------------------------------------------------------------------------

    async def _shutdown(self, tasks: list[asyncio.Task[None]], emitter: asyncio.Task[None]) -> None:
        assert self.delivery is not None  # noqa: S101 - set in _serve
        delivery = self.delivery
        for batch in self.lanes.take_all():
            self.dispatch(batch)
        grace = self.settings.delivery.shutdown_grace_ms / 1000
        drained = await delivery.drain(list(delivery.ledgers), grace)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await _bounded(delivery.flush(), "flush the producer")
        emitter.cancel()
        await asyncio.gather(emitter, return_exceptions=True)
        await _bounded(delivery.commit(), "commit")
        log.info("stopped", drained=drained, handed_back=delivery.pending(), **self.counts)


async def _bounded(step: Coroutine[Any, Any, None], what: str) -> None:
    """A shutdown step that needs Kafka: give up after a bound if Kafka is unreachable.

    What was not committed is replayed by the next owner (at-least-once), which is
    better than a process that ignores SIGTERM until it is killed.
    """
    try:
        await asyncio.wait_for(step, SHUTDOWN_STEP_S)
    except TimeoutError:
        log.error("shutdown_step_timed_out", step=what, seconds=SHUTDOWN_STEP_S)  # noqa: TRY400


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Revoked partitions: finish their work within a bound, commit, hand back the rest."""

    def __init__(self, bridge: Bridge) -> None:
        self._bridge = bridge

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        bridge = self._bridge
        delivery = bridge.delivery
        if delivery is None:
            return
        mine = [tp for tp in revoked if tp in delivery.ledgers]
        if not mine:
            return
        for batch in bridge.lanes.take_all():
            bridge.dispatch(batch)
        drained = await delivery.drain(mine, bridge.settings.delivery.rebalance_drain_ms / 1000)
        await delivery.commit(mine)
        handed_back = delivery.hand_back(mine)
        log.info(
            "partitions_revoked",
            partitions=sorted(tp.partition for tp in mine),
            drained=drained,
            handed_back=handed_back,
        )

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("partitions_assigned", partitions=sorted(tp.partition for tp in assigned))
