"""The bridge's lifecycle: signals, the metrics port, routes, the Kafka clients, shutdown.

``Bridge.run`` opens the lanes (the routes, checked against the model server, and
the control-topic follower), starts the producer and the consumer, and runs the
``Service`` (``bridge.service``: the consume -> predict -> produce pipeline) until
SIGTERM/SIGINT or a pipeline task that dies; then it closes what it opened.
"""

from __future__ import annotations

import asyncio
import signal

import structlog

from bridge.control import RoutesFollower
from bridge.domain import Target
from bridge.kafka.clients import make_consumer, make_producer, make_raw_client
from bridge.kafka.records import RecordBuilder
from bridge.kafka.salvage import Salvager
from bridge.lanes import Lanes, RoutesRejectedError
from bridge.metrics import Metrics, serve_metrics
from bridge.outputs import Counts
from bridge.probes import Pipeline, Probes, partition_heads, stuck_after_s, watch_server
from bridge.service import SHUTDOWN_STEP_S, Service, bounded
from bridge.serving.client import ModelClient
from bridge.serving.health import ServerHealth
from bridge.serving.predictor import Predictor, RetryPolicy
from bridge.settings import Settings
from bridge.stacks import all_task_stacks
from bridge.switching import RouteSwitch
from bridge.tracing import OFF, Tracing
from bridge.version import installed_version

log = structlog.get_logger(__name__)


class StartupError(Exception):
    """The bridge cannot start (no such model or label, missing topic); the message says why."""


def make_client(settings: Settings) -> ModelClient:
    """Import only the protocol in use: grpc or httpx, not both (memory, start time)."""
    serving = settings.serving
    if serving.protocol == "grpc":
        from bridge.serving.grpc_client import GrpcModelClient

        return GrpcModelClient(
            serving.grpc_target,
            serving.timeout_ms / 1000,
            serving.max_message_mb * 1024 * 1024,
            serving.tls(),
        )
    from bridge.serving.rest_client import RestModelClient

    return RestModelClient(
        serving.rest_url,
        serving.timeout_ms / 1000,
        serving.connect_timeout_ms / 1000,
        tls=serving.tls(),
    )


class Bridge:
    def __init__(
        self,
        settings: Settings,
        client: ModelClient | None = None,
        tracing: Tracing = OFF,
    ) -> None:
        self.settings = settings
        self.tracing = tracing
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
            # Events held through an outage are judged again for their age once it ends.
            back_after_outage=settings.delivery.max_event_age_ms is not None,
        )
        self.lanes = Lanes(self.client, settings, self.health.hold_if_down)
        self.stop = asyncio.Event()
        self.fatal: BaseException | None = None
        self.counts = Counts()
        self.metrics = Metrics()
        self.switch = RouteSwitch(settings, self.lanes, self.stop)
        self.probes = Probes(self.health, self.lanes, self.stop.is_set, stuck_after_s(settings))
        self._register(self.metrics)
        control = settings.topics.control
        self.follower = (
            RoutesFollower(
                settings.kafka,
                control,
                settings.model.name,
                settings.model.signature,
                self.switch.on_routes,
            )
            if control
            else None
        )

    def _register(self, metrics: Metrics) -> None:
        """What lives as long as the process (the pipeline's own: ``Service._register``)."""
        version = installed_version()
        metrics.gauge_by(
            "bridge_build_info",
            "Always 1; the bridge's version.",
            ("version",),
            lambda: {(version,): 1},
        )
        metrics.counter_by(
            "bridge_route_changes_total",
            "Route changes from the control topic, applied or rejected (the current stay).",
            "outcome",
            lambda: self.switch.changes,
        )
        metrics.process()

    # -- start ---------------------------------------------------------------------------

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT; the process exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._request_stop, sig.name)
        metrics_server = None
        watch = None
        if self.settings.metrics.port:
            # First, so the probes answer (not ready, and why) while the routes open and
            # the group is joined.
            metrics_server = await serve_metrics(
                self.metrics,
                self.settings.metrics.host,
                self.settings.metrics.port,
                self.probes.pages(),
            )
            watch = asyncio.create_task(watch_server(self.health), name="server-watch")
            self.probes.own(watch)
        try:
            if not await self._open_lanes():
                return 0
            await self._serve()
        except StartupError as exc:
            log.error("cannot_start", reason=str(exc))  # noqa: TRY400 - expected; no traceback
            return 2
        finally:
            if watch is not None:
                watch.cancel()
                await asyncio.gather(watch, return_exceptions=True)
            if metrics_server is not None:
                await metrics_server.close()
            if self.follower is not None:
                await bounded(self.follower.stop(), "stop the control-topic reader")
            await self.health.close()
            await self.client.aclose()
            if self.tracing.enabled:  # the spans of the last events, exported before exit
                await asyncio.to_thread(self.tracing.shutdown)
        if self.fatal is not None:
            log.error("stopped_on_error", error=repr(self.fatal))
            return 1
        return 0

    def _request_stop(self, why: str) -> None:
        if not self.stop.is_set():
            log.info("stopping", signal=why)
            budget = shutdown_budget_s(self.settings)
            asyncio.get_running_loop().call_later(budget, self._shutdown_overdue, budget)
        self.stop.set()

    def _shutdown_overdue(self, budget_s: float) -> None:
        """Every shutdown step is bounded, so this is a bug: say where each task waits."""
        log.error("shutdown_overdue", budget_s=budget_s, tasks=all_task_stacks())

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
        try:
            if self.follower is not None:
                await self.follower.start()  # applies what the topic holds, if anything
            await self.switch.open_settings_routes()
        except RoutesRejectedError as exc:
            raise StartupError(str(exc)) from exc
        except asyncio.CancelledError:
            return False
        return not self.stop.is_set()

    async def _serve(self) -> None:
        settings = self.settings
        producer = make_producer(settings.kafka)
        await producer.start()
        try:
            counts = {}
            for topic in filter(
                None,
                (
                    settings.topics.results,
                    settings.topics.failures,
                    settings.topics.shadow,
                    settings.topics.expired,
                ),
            ):
                partitions = await producer.partitions_for(topic)
                if not partitions:
                    raise StartupError(f"topic {topic} has no partitions (does it exist?)")
                counts[topic] = len(partitions)
            records = RecordBuilder(
                settings.topics.results,
                settings.topics.failures,
                counts,
                settings.serving.protocol,
                settings.topics.shadow,
                settings.topics.expired,
            )
            consumer = make_consumer(settings.kafka)
            # The salvage path's own protocol client: raw fetches of what aiokafka cannot read.
            salvager = Salvager(
                make_raw_client(settings.kafka),
                settings.kafka.fetch_max_bytes,
                read_committed=settings.kafka.isolation_level == "read_committed",
            )
            service = Service(
                settings,
                consumer,
                producer,
                salvager,
                records,
                self.client,
                self.predictor,
                self.health,
                self.lanes,
                self.metrics,
                self.counts,
                self._fail,
                self.tracing,
            )
            consumer.subscribe([settings.topics.input], listener=service.rebalance)
            self.probes.attach(
                Pipeline(
                    tasks=lambda: service.tasks,
                    heads=lambda: partition_heads(service.delivery.ledgers),
                    paused=lambda: service.flow.paused,
                    assigned=lambda: service.rebalance.assigned,
                    fenced=lambda: service.rebalance.fenced,
                )
            )
            # Everything before this line is the bridge's own start; what follows until
            # "partitions_assigned" is the group join, whose wait the broker decides
            # (Apache Kafka: group.initial.rebalance.delay.ms; Tansu: half the session timeout).
            log.info("joining_group", group=settings.kafka.group_id, topic=settings.topics.input)
            await consumer.start()
            try:
                extra = [self.follower.run()] if self.follower is not None else []
                await service.run(self.stop, self._task_ended, extra)
            finally:
                await bounded(salvager.close(), "close the salvage client")
                await bounded(consumer.stop(), "leave the group")
        finally:
            await bounded(producer.stop(), "close the producer")


def shutdown_budget_s(settings: Settings) -> float:
    """The longest a shutdown can take: the drain, then the bounded Kafka and close steps
    (flush, two commit tries, salvage client, group, producer, control-topic reader)."""
    return settings.delivery.shutdown_grace_ms / 1000 + 7 * SHUTDOWN_STEP_S + 1.0
