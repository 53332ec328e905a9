"""The whole pipeline without sockets: ``Service`` wired on the fake consumer, producer
and model client, from the first fetch to the last commit.

What the unit tests of each part cannot show: that an event read by the consume loop
ends as exactly one output record, in offset order per partition, and is committed;
that bad events take the same road; and that a stop drains, commits and says so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import orjson
from aiokafka import TopicPartition

from bridge.domain import Instance, Prediction, Target
from bridge.errors import ServerBusyError, ServerUnavailableError
from bridge.kafka.records import RecordBuilder
from bridge.lanes import Lanes
from bridge.metrics import Metrics
from bridge.outputs import Counts
from bridge.service import Service
from bridge.serving.health import ServerHealth
from bridge.serving.predictor import Predictor, RetryPolicy
from bridge.settings import Settings
from bridge.switching import RouteSwitch
from bridge.tracing import OFF, Tracing
from tests.bridge.fake_kafka import FakeConsumer, FakeProducer, FakeRecord, FakeSalvager, until

from .fakes import FakeModelClient
from .signatures import FRAUD, fraud_event

P0, P1 = TopicPartition("in", 0), TopicPartition("in", 1)


def amounts(instances: Sequence[Instance]) -> Prediction:
    return Prediction(2, [{"fraud_probability": i.values["amount"][0]} for i in instances])


class Pipeline:
    def __init__(self, client: FakeModelClient, tracing: Tracing = OFF, **batch: Any) -> None:
        self.settings = Settings(
            kafka={"bootstrap_servers": "127.0.0.1:9"},
            topics={"input": "in", "results": "out", "failures": "dlq"},
            model={"name": "fraud"},
            batch={"max_size": 4, "max_wait_ms": 2, **batch},
            delivery={"commit_interval_ms": 20},
        )
        self.client = client
        self.consumer = FakeConsumer()
        self.producer = FakeProducer(auto_ack=True)
        self.stop = asyncio.Event()
        self.fatal: list[BaseException] = []
        self.health = ServerHealth(lambda: client.is_ready(Target("fraud")), 0.001, 0.005)
        self.lanes = Lanes(client, self.settings, self.health.hold_if_down)
        self.counts = Counts()
        self.service = Service(
            self.settings,
            self.consumer,  # type: ignore[arg-type]
            self.producer,  # type: ignore[arg-type]
            FakeSalvager([]),  # type: ignore[arg-type]
            RecordBuilder("out", "dlq", {"out": 2, "dlq": 2}, "grpc"),
            client,
            Predictor(client, self.health, RetryPolicy(3, 0.001, 0.002)),
            self.health,
            self.lanes,
            Metrics(),
            self.counts,
            self.fatal.append,
            tracing,
        )

    def write(self, tp: TopicPartition, values: Sequence[bytes | None]) -> None:
        log = self.consumer.logs.setdefault(tp, [])
        for value in values:
            log.append(FakeRecord(tp.topic, tp.partition, len(log), value=value))
        if tp not in self.consumer.assigned:
            self.consumer.assign_more(tp)

    async def start(self) -> asyncio.Task[None]:
        await RouteSwitch(self.settings, self.lanes, self.stop).open_settings_routes()

        def ended(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and task.exception() is not None:
                self.fatal.append(task.exception())  # type: ignore[arg-type]

        return asyncio.create_task(self.service.run(self.stop, ended, []))

    def outputs(self) -> list[tuple[str, int, dict[str, Any]]]:
        """(topic, output partition, record value as JSON), in the order they were sent."""
        return [
            (sent.topic, sent.partition, orjson.loads(record.value or b"null"))
            for sent in self.producer.sent
            for record in sent.records
        ]


def event(amount: float) -> bytes:
    return orjson.dumps(fraud_event(amount=amount))


async def test_every_event_ends_as_one_record_in_order_and_is_committed() -> None:
    pipeline = Pipeline(FakeModelClient(amounts, signature=FRAUD))
    pipeline.write(P0, [event(i) for i in range(10)])
    pipeline.write(P1, [event(100 + i) for i in range(7)])
    running = await pipeline.start()
    await until(lambda: len(pipeline.outputs()) == 17, timeout_s=5)
    await until(lambda: pipeline.consumer.group_offsets == {P0: 10, P1: 7}, timeout_s=5)
    pipeline.stop.set()
    await asyncio.wait_for(running, 5)

    outputs = pipeline.outputs()
    assert {topic for topic, _, _ in outputs} == {"out"}
    by_partition: dict[int, list[float]] = {}
    for _, partition, value in outputs:
        by_partition.setdefault(partition, []).append(value["outputs"]["fraud_probability"])
    # The source partition carries over, and so does the order within it.
    assert by_partition == {0: [float(i) for i in range(10)], 1: [100.0 + i for i in range(7)]}
    assert max(pipeline.client.calls) > 1  # micro-batched, not one call per event
    assert (pipeline.counts.events, pipeline.counts.results) == (17, 17)
    assert pipeline.fatal == []


async def test_bad_events_take_the_same_road_as_failure_records_in_their_place() -> None:
    pipeline = Pipeline(FakeModelClient(amounts, signature=FRAUD))
    pipeline.write(P0, [event(0), b"not json", event(2), None, b'{"amount": "x"}', event(5)])
    running = await pipeline.start()
    await until(lambda: pipeline.consumer.group_offsets.get(P0) == 6, timeout_s=5)
    pipeline.stop.set()
    await asyncio.wait_for(running, 5)

    sent = [(s.topic, record) for s in pipeline.producer.sent for record in s.records]
    dead = [record for topic, record in sent if topic == "dlq"]
    # A dead letter keeps the input's value byte for byte, and says where it came from and why.
    assert [record.value for record in dead] == [b"not json", None, b'{"amount": "x"}']
    headers = [dict(record.headers) for record in dead]
    assert [h["__connect.errors.offset"] for h in headers] == [b"1", b"3", b"4"]
    assert [h["__bridge.errors.reason"] for h in headers] == [
        b"not_json",
        b"not_json",
        b"missing_input",
    ]
    results = [orjson.loads(r.value or b"") for topic, r in sent if topic == "out"]
    assert [v["outputs"]["fraud_probability"] for v in results] == [0.0, 2.0, 5.0]
    assert (pipeline.counts.results, pipeline.counts.failures) == (3, 3)


async def test_a_busy_model_is_retried_and_nothing_is_lost() -> None:
    calls = {"n": 0}

    def busy_twice(instances: Sequence[Instance]) -> Prediction | ServerBusyError:
        calls["n"] += 1
        if calls["n"] <= 2:
            return ServerBusyError("RESOURCE_EXHAUSTED: queue full")
        return amounts(instances)

    pipeline = Pipeline(FakeModelClient(busy_twice, signature=FRAUD), max_size=16)
    pipeline.write(P0, [event(i) for i in range(5)])
    running = await pipeline.start()
    await until(lambda: pipeline.consumer.group_offsets.get(P0) == 5, timeout_s=5)
    pipeline.stop.set()
    await asyncio.wait_for(running, 5)
    assert [t for t, _, _ in pipeline.outputs()] == ["out"] * 5


async def test_a_stop_ends_a_waiting_fetch_drains_and_commits() -> None:
    pipeline = Pipeline(FakeModelClient(amounts, signature=FRAUD), max_size=64, max_wait_ms=60_000)
    pipeline.write(P0, [event(i) for i in range(3)])  # an open batch that would wait a minute
    running = await pipeline.start()
    await until(lambda: pipeline.counts.events == 3, timeout_s=5)
    assert pipeline.outputs() == []
    pipeline.stop.set()
    await asyncio.wait_for(running, 5)  # not a minute: the stop flushes the open batch
    assert len(pipeline.outputs()) == 3
    assert pipeline.consumer.group_offsets == {P0: 3}
    assert pipeline.producer.flushes >= 1


async def test_an_outage_pauses_the_partitions_and_resumes_without_failures() -> None:
    client = FakeModelClient(amounts, signature=FRAUD)
    pipeline = Pipeline(client)
    running = await pipeline.start()
    client.ready = False
    client.up_after_probes = client.probes + 3  # back after three probes

    def unavailable(instances: Sequence[Instance]) -> Prediction | Exception:
        if not client.ready:
            return ServerUnavailableError("connection refused")
        return amounts(instances)

    client.behaviour = unavailable  # type: ignore[assignment]
    pipeline.write(P0, [event(i) for i in range(6)])
    await until(lambda: pipeline.service.flow.paused, timeout_s=5)
    await until(lambda: pipeline.consumer.group_offsets.get(P0) == 6, timeout_s=5)
    await until(lambda: not pipeline.service.flow.paused, timeout_s=5)  # resumed by itself
    pipeline.stop.set()
    await asyncio.wait_for(running, 5)
    assert [t for t, _, _ in pipeline.outputs()] == ["out"] * 6  # no failure for the outage
    assert pipeline.health.outages == 1
