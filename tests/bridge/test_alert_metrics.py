"""The series SREs alert on: lag, oldest in flight, model-call and batch histograms,
retries, outages, route changes, build info and the process collector, without sockets.

Each is read back through ``Metrics.exposition`` and prometheus_client's own parser.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaTimeoutError
from structlog.testing import capture_logs

from bridge.app import Bridge
from bridge.domain import Instance, Prediction, Signature, Target
from bridge.errors import ServerBusyError
from bridge.kafka.lag import ConsumerLag
from bridge.metrics import Histogram, Metrics
from bridge.metrics.histograms import BATCH_SIZE_BUCKETS, MODEL_CALL_BUCKETS_S
from bridge.pipeline.instances import InstanceBuilder
from bridge.pipeline.ledger import EventLedger, PartitionLedger
from bridge.pipeline.routing import parse_assignments
from bridge.serving.health import ServerHealth
from bridge.serving.predictor import Predictor, RetryPolicy
from bridge.settings import Settings
from bridge.version import installed_version
from tests.bridge.fake_kafka import FakeConsumer, until
from tests.bridge.test_metrics import scrape, value
from tests.bridge.test_service import P0, P1, Pipeline, amounts, event

from .fakes import FakeModelClient, echo_amounts
from .signatures import FRAUD, fraud_event

# -- the collectors ---------------------------------------------------------------------


def test_a_histogram_with_its_owner_labels_and_a_constant_one() -> None:
    calls = Histogram(MODEL_CALL_BUCKETS_S)
    metrics = Metrics()
    metrics.histogram("m_seconds", "calls", ("model", "route"), calls, {"protocol": "rest"})
    for seconds in (0.004, 0.005, 7.0):
        calls.observe(seconds, ("fraud", "stable"))
    samples = scrape(metrics)  # read at the scrape: observed after registering
    labels = {"model": "fraud", "route": "stable", "protocol": "rest"}
    assert value(samples, "m_seconds_bucket", **labels, le="0.0025") == 0
    assert value(samples, "m_seconds_bucket", **labels, le="0.005") == 2
    assert value(samples, "m_seconds_bucket", **labels, le="5.0") == 2
    assert value(samples, "m_seconds_bucket", **labels, le="+Inf") == 3
    assert value(samples, "m_seconds_count", **labels) == 3
    assert value(samples, "m_seconds_sum", **labels) == pytest.approx(7.009)


def test_an_unlabelled_histogram() -> None:
    sizes = Histogram(BATCH_SIZE_BUCKETS)
    metrics = Metrics()
    metrics.histogram("bridge_batch_size", "sizes", (), sizes)
    for size in (1, 64, 65):
        sizes.observe(size)
    samples = scrape(metrics)
    assert value(samples, "bridge_batch_size_bucket", le="1.0") == 1
    assert value(samples, "bridge_batch_size_bucket", le="64.0") == 2
    assert value(samples, "bridge_batch_size_bucket", le="128.0") == 3
    assert value(samples, "bridge_batch_size_sum") == 130


def test_gauges_by_labels_are_read_at_each_scrape() -> None:
    lag = {("in", "0"): 3.0}
    metrics = Metrics()
    metrics.gauge_by("bridge_consumer_lag", "lag", ("topic", "partition"), lambda: lag)
    assert value(scrape(metrics), "bridge_consumer_lag", topic="in", partition="0") == 3
    lag[("in", "1")] = 5.0
    assert value(scrape(metrics), "bridge_consumer_lag", topic="in", partition="1") == 5


def test_process_metrics_on_the_bridges_own_registry() -> None:
    metrics = Metrics()
    assert "process_resident_memory_bytes" not in {s.name for s in scrape(metrics)}
    metrics.process()
    samples = scrape(metrics)
    assert value(samples, "process_resident_memory_bytes") > 1024 * 1024
    assert value(samples, "process_cpu_seconds_total") > 0
    assert "process_open_fds" in {s.name for s in samples}
    assert "process_resident_memory_bytes" not in {s.name for s in scrape(Metrics())}


# -- the predictor: calls timed one by one, retries by reason ----------------------------


def predictor(client: FakeModelClient) -> Predictor:
    health = ServerHealth(lambda: client.is_ready(Target("fraud")), 0.001, 0.005)
    return Predictor(client, health, RetryPolicy(3, 0.001, 0.002))


async def test_each_model_call_is_timed_and_each_retry_counted_by_reason() -> None:
    answers: list[Prediction | ServerBusyError] = [ServerBusyError("queue full")]

    def behaviour(batch: Sequence[Instance]) -> Prediction | ServerBusyError:
        return answers.pop() if answers else echo_amounts(batch)

    runner = predictor(FakeModelClient(behaviour))
    batch = [InstanceBuilder(FRAUD).build(fraud_event(amount=a)) for a in (1, 2)]
    await runner.run(Target("fraud", label="stable"), FRAUD, batch, "stable")
    assert runner.retries == {"busy": 1}
    series = runner.call_seconds.series
    # The refused call (no version served it) and the answered one, each its own.
    assert sum(series[("fraud", "stable", "")][:-1]) == 1
    assert sum(series[("fraud", "stable", "7")][:-1]) == 1
    assert set(series) == {("fraud", "stable", ""), ("fraud", "stable", "7")}


# -- consumer lag -----------------------------------------------------------------------


def ledger_committed_at(offset: int | None) -> EventLedger:
    ledger: EventLedger = PartitionLedger()
    ledger.committed = offset
    return ledger


P2 = TopicPartition("in", 2)


async def test_lag_is_the_end_minus_the_committed_offset() -> None:
    consumer = FakeConsumer()
    for tp, count in ((P0, 10), (P1, 6), (P2, 4)):
        consumer.write(tp, count)
    consumer.group_offsets = {P1: 2}  # the group's, from before this member
    ledgers = {P0: ledger_committed_at(7), P1: ledger_committed_at(None)}
    lag = ConsumerLag(consumer, ledgers, 1.0, from_earliest=True)  # type: ignore[arg-type]
    await lag.update()
    # P0: this bridge's own commit; P1: the group's; P2: never committed, read from the start.
    assert lag.lag == {P0: 3, P1: 4, P2: 4}


async def test_lag_is_never_negative_and_waits_for_a_commit_when_starting_at_the_end() -> None:
    consumer = FakeConsumer()
    consumer.write(P0, 5)
    consumer.write(P1, 5)
    # An end read before a commit that landed after it.
    ledgers = {P0: ledger_committed_at(9)}
    lag = ConsumerLag(consumer, ledgers, 1.0, from_earliest=False)  # type: ignore[arg-type]
    await lag.update()
    assert lag.lag == {P0: 0}  # P1: nothing committed, nothing to measure from


async def test_an_unreadable_end_keeps_the_last_lag_and_says_so_at_debug() -> None:
    consumer = FakeConsumer()
    consumer.write(P0, 5)
    lag = ConsumerLag(consumer, {}, 1.0, from_earliest=True)  # type: ignore[arg-type]
    await lag.update()
    consumer.write(P0, 5)
    consumer.end_offsets_error = KafkaTimeoutError()
    with capture_logs() as logs:
        await lag.update()
    assert lag.lag == {P0: 5}
    assert [(e["event"], e["log_level"]) for e in logs] == [("lag_unreadable", "debug")]
    consumer.end_offsets_error = None
    await lag.update()
    assert lag.lag == {P0: 10}


async def test_a_partition_given_away_leaves_the_lag() -> None:
    consumer = FakeConsumer()
    consumer.write(P0, 5)
    consumer.write(P1, 5)
    lag = ConsumerLag(consumer, {}, 1.0, from_earliest=True)  # type: ignore[arg-type]
    await lag.update()
    consumer.rebalance([P1])
    await lag.update()
    assert lag.lag == {P1: 5}


# -- wired in the service -----------------------------------------------------------------


class GatedClient(FakeModelClient):
    """Answers only once ``gate`` is set: events stay in flight meanwhile."""

    def __init__(self) -> None:
        super().__init__(amounts, signature=FRAUD)
        self.gate = asyncio.Event()

    async def predict(
        self, target: Target, signature: Signature, instances: Sequence[Instance]
    ) -> Prediction:
        await self.gate.wait()
        return await super().predict(target, signature, instances)


async def test_the_service_exposes_lag_age_and_histograms() -> None:
    client = GatedClient()
    pipeline = Pipeline(client)
    metrics = Metrics()
    pipeline.service._register_alerting(metrics)  # as the service does, on a fresh registry
    pipeline.write(P0, [event(i) for i in range(10)])
    running = await pipeline.start()
    try:
        await until(lambda: pipeline.service.lag.lag == {P0: 10}, timeout_s=5)
        await until(lambda: pipeline.service.delivery.pending() == 10, timeout_s=5)
        await asyncio.sleep(0.05)
        stuck = scrape(metrics)
        age = value(stuck, "bridge_oldest_in_flight_seconds", topic="in", partition="0")
        assert age >= 0.05
        assert value(stuck, "bridge_consumer_lag", topic="in", partition="0") == 10
        client.gate.set()
        await until(lambda: pipeline.consumer.group_offsets == {P0: 10}, timeout_s=5)
        await pipeline.service.lag.update()
        done = scrape(metrics)
    finally:
        pipeline.stop.set()
        client.gate.set()
        await asyncio.wait_for(running, 5)
    assert value(done, "bridge_consumer_lag", topic="in", partition="0") == 0
    assert "bridge_oldest_in_flight_seconds" not in {s.name for s in done}  # nothing in flight
    assert value(done, "bridge_batch_size_sum") == 10
    calls = [s for s in done if s.name == "bridge_model_request_duration_seconds_count"]
    assert {s.labels["protocol"] for s in calls} == {"grpc"}
    assert {s.labels["version"] for s in calls} == {"2"}
    assert sum(s.value for s in calls) == len(client.calls)
    assert value(done, "bridge_model_server_outages_total") == 0
    assert value(done, "bridge_rebalances_total") == 0
    assert not [s for s in done if s.name == "bridge_retries_total"]


async def test_the_bridge_exposes_its_version_route_changes_and_process() -> None:
    settings = Settings(
        kafka={"bootstrap_servers": "127.0.0.1:9"},
        topics={"input": "in", "results": "out", "failures": "dlq"},
        model={"name": "fraud"},
    )
    bridge = Bridge(settings, FakeModelClient(signature=FRAUD))
    await bridge.switch.on_routes(parse_assignments("fraud", ["latest=1", "shadow:2=0.5"]))
    await bridge.switch.on_routes(parse_assignments("fraud", ["latest=1"]))
    samples = scrape(bridge.metrics)
    assert value(samples, "bridge_build_info", version=installed_version()) == 1
    assert installed_version() != "unknown"  # the tests run on an installed bridge
    assert value(samples, "bridge_route_changes_total", outcome="rejected") == 1
    assert value(samples, "bridge_route_changes_total", outcome="applied") == 1
    assert value(samples, "process_resident_memory_bytes") > 0
