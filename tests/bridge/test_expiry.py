"""Stale events: the age check, the batch split, the worker that judges again after an
outage, the predictor that hands a held batch back, and the ``expired`` failure record."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from bridge.domain import Failure, Instance, Outcome, Prediction, Success, Target
from bridge.errors import ExpiredEventError, ModelCallError, RecordError, error_for_grpc_status
from bridge.expiry import Expiry
from bridge.kafka.records import BRIDGE, CONNECT, RecordBuilder
from bridge.lanes import Pending
from bridge.pipeline.ledger import EventSlot
from bridge.serving.health import ServerHealth
from bridge.serving.predictor import HeldThroughOutageError, Predictor, RetryPolicy
from bridge.settings import SettingsError, load_settings
from bridge.workers import Workers

from .fakes import FakeModelClient, echo_amounts
from .signatures import FRAUD
from .test_predictor import TARGET, instances
from .test_records import SOURCE, STABLE
from .test_settings import REQUIRED

NOW_MS = 1_800_000_000_000
EXPIRY = Expiry(max_age_ms=3000)


def test_an_event_older_than_the_bound_expires_and_says_by_how_much() -> None:
    assert EXPIRY.failure(NOW_MS - 3000, NOW_MS) is None  # at the bound: still fresh
    assert EXPIRY.failure(NOW_MS + 50, NOW_MS) is None  # a producer clock ahead of ours
    failure = EXPIRY.failure(NOW_MS - 3001, NOW_MS)
    assert failure is not None
    assert failure.attempts == 0 and failure.first_attempt_ms is None
    error = failure.error
    assert isinstance(error, ExpiredEventError) and isinstance(error, RecordError)
    assert (error.reason, error.retriable) == ("expired", False)
    assert error.message == (
        "the event was 3001 ms old when the model would have been called, over "
        f"BRIDGE_DELIVERY__MAX_EVENT_AGE_MS=3000 (record timestamp {NOW_MS - 3001}); "
        "not sent to the model"
    )


@pytest.mark.parametrize("timestamp", [-1, None])
def test_a_record_without_a_timestamp_never_expires(timestamp: int | None) -> None:
    assert EXPIRY.failure(timestamp, NOW_MS) is None


def test_a_batch_splits_into_fresh_events_in_order_and_expired_ones() -> None:
    ages = [10, 5000, -1, 3000, 3500, 0]
    batch = [
        SimpleNamespace(name=n, record=SimpleNamespace(timestamp=NOW_MS - age if age >= 0 else -1))
        for n, age in enumerate(ages)
    ]
    fresh, expired = EXPIRY.split(batch, NOW_MS)
    assert [item.name for item in fresh] == [0, 2, 3, 5]
    assert [item.name for item, _ in expired] == [1, 4]
    assert all(f.error.reason == "expired" for _, f in expired)


def test_the_expired_failure_record_goes_to_the_expired_topic_when_there_is_one() -> None:
    expired = EXPIRY.failure(NOW_MS - 9000, NOW_MS)
    assert expired is not None
    other = Failure(error_for_grpc_status("INTERNAL", "boom"), attempts=1)
    counts = {"results": 3, "failures": 2, "expired": 3}
    builder = RecordBuilder("results", "failures", counts, "grpc", expired_topic="expired")
    record = builder.failure(SOURCE, expired, "stable", STABLE)
    assert (record.topic, record.partition) == ("expired", SOURCE.partition % 3)
    assert (record.key, record.value) == (SOURCE.key, SOURCE.value)  # the dead-letter shape
    headers = dict(record.headers)
    assert headers[BRIDGE + "reason"] == b"expired"
    assert headers[BRIDGE + "attempts"] == b"0"
    assert headers[CONNECT + "class.name"] == b"bridge.errors.ExpiredEventError"
    assert b"9000 ms old" in headers[CONNECT + "exception.message"]
    assert builder.failure(SOURCE, other, "stable", STABLE).topic == "failures"

    without = RecordBuilder("results", "failures", counts, "grpc")
    assert without.failure(SOURCE, expired, "stable", STABLE).topic == "failures"


# -- the predictor hands back a batch that waited out an outage --------------------------------


def outage_client() -> FakeModelClient:
    client = FakeModelClient(ready=False, up_after_probes=3)

    def behaviour(batch: Sequence[Instance]) -> Prediction | ModelCallError:
        if not client.ready:
            return error_for_grpc_status("UNAVAILABLE", "down")
        return echo_amounts(batch)

    client.behaviour = behaviour
    return client


async def test_with_expiry_on_a_held_batch_comes_back_unsent_after_the_outage() -> None:
    client = outage_client()
    health = ServerHealth(lambda: client.is_ready(TARGET), 0.001, 0.005)
    policy = RetryPolicy(max_attempts=3, initial_backoff_s=0.001, max_backoff_s=0.002)
    runner = Predictor(client, health, policy, back_after_outage=True)
    with pytest.raises(HeldThroughOutageError):
        await asyncio.wait_for(runner.run(TARGET, FRAUD, instances([1, 2])), timeout=10)
    assert client.calls == [2] and health.up  # one refused call, none made after the outage
    await health.close()


# -- the worker: judged before the call, and again once an outage is over ----------------------


@dataclass
class FakeDelivery:
    wanted: int
    finished: list[tuple[int, Outcome]] = field(default_factory=list)
    all_finished: asyncio.Event = field(default_factory=asyncio.Event)

    def finish(self, tp: Any, slot: EventSlot, outcome: Outcome) -> None:
        self.finish_all([(tp, slot, outcome)])

    def finish_all(self, finished: Iterable[tuple[Any, EventSlot, Outcome]]) -> None:
        self.finished.extend((slot.offset, outcome) for _, slot, outcome in finished)
        if len(self.finished) >= self.wanted:
            self.all_finished.set()


class HeldOncePredictor:
    """Holds the first batch through an outage that lasts ``outage_ms`` of the clock."""

    def __init__(self, clock: list[float], outage_ms: int) -> None:
        self.clock = clock
        self.outage_ms = outage_ms
        self.sent: list[list[float]] = []

    async def run(
        self, target: Target, signature: Any, batch: Sequence[Instance], route: str = ""
    ) -> list[Outcome]:
        self.sent.append([instance.values["amount"][0] for instance in batch])
        if len(self.sent) == 1:
            self.clock[0] += self.outage_ms / 1000
            raise HeldThroughOutageError
        return [Success({"y": 1}, 1, 1, 1.0) for _ in batch]


async def test_the_worker_expires_stale_events_before_the_call_and_after_an_outage() -> None:
    clock = [NOW_MS / 1000]
    predictor = HeldOncePredictor(clock, outage_ms=2500)
    delivery = FakeDelivery(wanted=3)
    lanes = SimpleNamespace(take_all=list)
    workers = Workers(
        predictor,  # type: ignore[arg-type]
        delivery,  # type: ignore[arg-type]
        lanes,  # type: ignore[arg-type]
        None,
        expiry=EXPIRY,
        clock=lambda: clock[0],
    )
    lane = SimpleNamespace(target=TARGET, name="stable", signature=FRAUD)
    # Ages at the first look: 5 s (stale), 1 s (stale after the 2.5 s outage), no timestamp.
    timestamps = [NOW_MS - 5000, NOW_MS - 1000, -1]
    batch = [
        Pending(
            None,
            EventSlot(offset, record := SimpleNamespace(timestamp=ts), None),
            instance,
            lane,  # type: ignore[arg-type]
            record,
        )
        for offset, (ts, instance) in enumerate(zip(timestamps, instances([0, 1, 2]), strict=True))
    ]
    workers.dispatch(batch)
    task = asyncio.create_task(workers.run())
    await asyncio.wait_for(delivery.all_finished.wait(), timeout=10)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

    assert predictor.sent == [[1, 2], [2]]  # the stale one never sent; the other after the outage
    outcomes = dict(delivery.finished)
    assert [offset for offset, _ in delivery.finished] == [0, 1, 2]
    reasons = {n: o.error.reason for n, o in outcomes.items() if isinstance(o, Failure)}
    assert reasons == {0: "expired", 1: "expired"}
    assert isinstance(outcomes[2], Success)


# -- the settings ----------------------------------------------------------------------------


def test_expiry_is_off_by_default_and_an_expired_topic_needs_an_age(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [n for n in os.environ if n.startswith("BRIDGE_")]:
        monkeypatch.delenv(name)
    for name, value in REQUIRED.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert (settings.delivery.max_event_age_ms, settings.topics.expired) == (None, None)
    monkeypatch.setenv("BRIDGE_TOPICS__EXPIRED", "payments-expired")
    with pytest.raises(SettingsError, match="EXPIRED needs BRIDGE_DELIVERY__MAX_EVENT_AGE_MS"):
        load_settings()
    monkeypatch.setenv("BRIDGE_DELIVERY__MAX_EVENT_AGE_MS", "3000")
    settings = load_settings()
    assert settings.delivery.max_event_age_ms == 3000
    assert settings.topics.expired == "payments-expired"
    monkeypatch.setenv("BRIDGE_DELIVERY__MAX_EVENT_AGE_MS", "0")
    with pytest.raises(SettingsError, match="MAX_EVENT_AGE_MS"):
        load_settings()
