"""The whole pipeline (fake Kafka clients, fake model) with one key held by retries for 10 s.

With DELIVERY__ORDERING=key the other keys of the same partition keep their rate
while the held key's events are retried, the commit waits at the held key's oldest
event, and every key's results stay in input order. With the default (partition)
ordering the same scenario holds everything behind the held key: that difference
is what the setting is for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition

from bridge.domain import Instance, Prediction, Target
from bridge.errors import ModelNotFoundError
from bridge.kafka.records import RecordBuilder
from bridge.lanes import Lanes
from bridge.metrics import Metrics
from bridge.outputs import Counts
from bridge.service import Service
from bridge.serving.health import ServerHealth
from bridge.serving.predictor import Predictor, RetryPolicy
from bridge.settings import Settings
from bridge.switching import RouteSwitch
from tests.bridge.fake_kafka import FakeConsumer, FakeProducer, FakeRecord, FakeSalvager, until

from .fakes import FakeModelClient
from .signatures import FRAUD, fraud_event

P0 = TopicPartition("in", 0)
HOLD_S = 10.0
BEFORE_S = 2.0
TICK_S = 0.02  # the feeder writes one event of each other key per tick
OTHER_KEYS = [b"k1", b"k2", b"k3"]
HELD_KEY = b"held"
PER_KEY = 10_000  # an event's amount is key index * PER_KEY + its number within the key


class TimedProducer(FakeProducer):
    """Notes when each output record was handed to the producer (loop time)."""

    def __init__(self) -> None:
        super().__init__(auto_ack=True)
        self.times: list[tuple[float, float]] = []  # (when, the event's amount)

    async def send_batch(self, batch: Any, topic: str, *, partition: int) -> Any:
        future = await super().send_batch(batch, topic, partition=partition)
        now = asyncio.get_running_loop().time()
        for record in self.sent[-1].records:
            value = orjson.loads(record.value or b"null")
            self.times.append((now, value["outputs"]["fraud_probability"]))
        return future


class HeldKey:
    """A model that answers NOT_FOUND (retried: a pinned version mid-move) for one key."""

    def __init__(self) -> None:
        self.release_at = float("inf")
        self.held_calls = 0

    def __call__(self, instances: Sequence[Instance]) -> Prediction | ModelNotFoundError:
        amounts = [instance.values["amount"][0] for instance in instances]
        now = asyncio.get_running_loop().time()
        # The held key is index 0; its first event is let go last, so its later ones
        # finish first and only the ledger keeps them behind it.
        if any(a < PER_KEY and now < self.release_at + (0.5 if a == 0 else 0) for a in amounts):
            self.held_calls += 1
            return ModelNotFoundError("NOT_FOUND: version 3 is loading")
        return Prediction(2, [{"fraud_probability": a} for a in amounts])


def make_service(ordering: str, model: HeldKey) -> tuple[Service, FakeConsumer, TimedProducer]:
    settings = Settings(
        kafka={"bootstrap_servers": "127.0.0.1:9"},
        topics={"input": "in", "results": "out", "failures": "dlq"},
        model={"name": "fraud"},
        # Per event, so a call holds one key's event only; enough room for the whole hold.
        batch={"max_size": 1, "max_in_flight": 4, "max_pending": 5_000},
        delivery={"commit_interval_ms": 20, "ordering": ordering},
    )
    client = FakeModelClient(model, signature=FRAUD)  # type: ignore[arg-type]
    health = ServerHealth(lambda: client.is_ready(Target("fraud")), 0.001, 0.005)
    consumer, producer = FakeConsumer(), TimedProducer()
    service = Service(
        settings,
        consumer,  # type: ignore[arg-type]
        producer,  # type: ignore[arg-type]
        FakeSalvager([]),  # type: ignore[arg-type]
        RecordBuilder("out", "dlq", {"out": 1, "dlq": 1}, "grpc"),
        client,
        Predictor(client, health, RetryPolicy(3, 0.01, 0.05, not_found_timeout_s=60)),
        health,
        Lanes(client, settings, health.hold_if_down),
        Metrics(),
        Counts(),
        lambda error: None,
    )
    return service, consumer, producer


def write(consumer: FakeConsumer, key: bytes, amount: float) -> None:
    log = consumer.logs.setdefault(P0, [])
    value = orjson.dumps(fraud_event(amount=amount))
    log.append(FakeRecord(P0.topic, P0.partition, len(log), key=key, value=value))
    if P0 not in consumer.assigned:
        consumer.assign_more(P0)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("ordering", ["key", "partition"])
async def test_one_key_held_by_retries_for_10_s(ordering: str) -> None:
    loop = asyncio.get_running_loop()
    model = HeldKey()
    service, consumer, producer = make_service(ordering, model)
    stop = asyncio.Event()
    await RouteSwitch(service._settings, service._lanes, stop).open_settings_routes()
    running = asyncio.create_task(service.run(stop, lambda task: None, []))
    counts = dict.fromkeys([HELD_KEY, *OTHER_KEYS], 0)

    def feed(key: bytes) -> None:
        index = [HELD_KEY, *OTHER_KEYS].index(key)
        write(consumer, key, index * PER_KEY + counts[key])
        counts[key] += 1

    async def feed_for(seconds: float) -> None:
        tick = loop.time()
        end = tick + seconds
        while tick < end:
            for key in OTHER_KEYS:
                feed(key)
            tick += TICK_S
            await asyncio.sleep(max(0.0, tick - loop.time()))

    started = loop.time()
    await feed_for(BEFORE_S)
    held_from = loop.time()
    model.release_at = held_from + HOLD_S
    first_held = len(consumer.logs[P0])
    feed(HELD_KEY)
    feed(HELD_KEY)  # its events are each retried by a worker of their own
    await feed_for(HOLD_S / 2)
    committed_mid_hold = consumer.group_offsets.get(P0)
    feed(HELD_KEY)
    await feed_for(HOLD_S / 2 + 1.0)
    total = len(consumer.logs[P0])
    await until(lambda: consumer.group_offsets.get(P0) == total, timeout_s=10)
    stop.set()
    await asyncio.wait_for(running, 10)

    def others_per_s(start: float, end: float) -> float:
        done = [t for t, amount in producer.times if amount >= PER_KEY and start <= t < end]
        return len(done) / (end - start)

    # The first half second is the start (routes, first fetch), not the steady rate.
    before = others_per_s(started + 0.5, held_from)
    during = others_per_s(held_from, held_from + HOLD_S)
    assert model.held_calls > 10  # the held key really was retried through the hold
    amounts = [amount for _, amount in producer.times]
    assert sorted(amounts) == sorted(  # nothing lost, nothing twice
        index * PER_KEY + n
        for index, key in enumerate([HELD_KEY, *OTHER_KEYS])
        for n in range(counts[key])
    )
    for index in range(len(OTHER_KEYS) + 1):  # every key's results in input order
        mine = [a for a in amounts if index * PER_KEY <= a < (index + 1) * PER_KEY]
        assert mine == sorted(mine)
    held_done = [t for t, amount in producer.times if amount < PER_KEY]
    assert min(held_done) >= held_from + HOLD_S * 0.99
    # Commits never pass unfinished work: mid-hold, at most up to the held key's first event.
    assert committed_mid_hold == first_held
    if ordering == "key":
        assert during >= 0.9 * before, (before, during)
    else:
        assert during < 0.1 * before, (before, during)
