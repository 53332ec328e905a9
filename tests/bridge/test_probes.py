"""Liveness and readiness: the checks over the state the pipeline keeps, without sockets
(but for the last tests, which ask the metrics responder on 127.0.0.1 for the pages)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import httpx
import pytest
from aiokafka import TopicPartition

from bridge.domain import Signature, Target
from bridge.errors import ModelNotFoundError, ServerUnavailableError
from bridge.kafka.rebalance import Rebalance
from bridge.lanes import Lanes, RoutesRejectedError, initial_routes
from bridge.metrics import Metrics, serve_metrics
from bridge.pipeline.ledger import PartitionLedger
from bridge.probes import (
    STUCK_FLOOR_S,
    HeadWatch,
    Pipeline,
    Probes,
    Verdict,
    group_check,
    partition_heads,
    routes_check,
    stuck_after_s,
    tasks_check,
)
from bridge.settings import Settings
from tests.bridge.fake_kafka import until

from .fakes import FakeModelClient
from .signatures import FRAUD

BOUND = 60.0


def settings(**sections: Any) -> Settings:
    kafka = {"bootstrap_servers": "127.0.0.1:9", **sections.pop("kafka", {})}
    return Settings(
        kafka=kafka,
        topics={"input": "in", "results": "out", "failures": "dlq"},
        model={"name": "fraud"},
        **sections,
    )


def body(verdict: Verdict) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(verdict.body())
    return parsed


# -- the pure checks ----------------------------------------------------------------------


def test_a_verdict_fails_when_any_check_fails_and_its_body_names_each() -> None:
    verdict = Verdict({"tasks": (True, "ok"), "stuck_partitions": (False, "in-2: oldest 312 s")})
    assert not verdict.ok
    assert verdict.failed == ["stuck_partitions"]
    assert body(verdict) == {
        "status": "fail",
        "checks": {"tasks": "ok", "stuck_partitions": "in-2: oldest 312 s"},
    }
    assert body(Verdict({"tasks": (True, "ok")}))["status"] == "ok"


async def test_tasks_pass_while_running_and_an_ended_one_is_named_with_how() -> None:
    async def forever() -> None:
        await asyncio.Event().wait()

    async def broken() -> None:
        raise ValueError("bug")

    async def quits() -> None:
        return None

    running = asyncio.create_task(forever(), name="emitter")
    assert tasks_check([running], stopping=False) == (True, "ok")
    failed = asyncio.create_task(broken(), name="worker-1")
    returned = asyncio.create_task(quits(), name="committer")
    await asyncio.gather(failed, returned, return_exceptions=True)
    passed, why = tasks_check([running, failed, returned], stopping=False)
    assert not passed
    assert why == "worker-1 failed: ValueError('bug'); committer returned"
    # Shutdown ends them on purpose: not a reason to restart the process.
    assert tasks_check([failed], stopping=True) == (True, "ok (stopping)")
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)
    assert tasks_check([running], stopping=False) == (False, "emitter cancelled")


def test_a_partition_whose_oldest_event_stays_the_same_past_the_bound_is_stuck() -> None:
    watch = HeadWatch(BOUND)
    heads = {"payments-2": (40, 0.0)}
    assert watch.check(10.0, heads, server_up=True, paused=False) == (True, "ok")
    assert watch.check(69.0, heads, server_up=True, paused=False)[0]  # seen for 59 s only
    passed, why = watch.check(72.0, heads, server_up=True, paused=False)
    assert not passed
    assert why == "payments-2: oldest event 72 s (offset 40) (bound 60 s)"


def test_an_old_head_that_moves_is_slow_not_stuck() -> None:
    watch = HeadWatch(BOUND)
    # Events fetched together share a fetch time: under a slow model the head is old
    # while the partition moves on with every call.
    for step, now in enumerate(range(0, 300, 10)):
        verdict = watch.check(float(now), {"in-0": (step, 0.0)}, server_up=True, paused=False)
        assert verdict == (True, "ok"), now


def test_stuck_is_not_checked_while_the_server_is_down_or_paused_and_restarts_after() -> None:
    watch = HeadWatch(BOUND)
    heads = {"in-0": (5, 0.0)}
    assert watch.check(0.0, heads, server_up=True, paused=False)[0]
    down = watch.check(100.0, heads, server_up=False, paused=False)
    assert down == (True, "ok (not checked: model server down)")
    assert watch.check(120.0, heads, server_up=True, paused=True) == (
        True,
        "ok (not checked: paused)",
    )
    # Back: the same head gets a whole bound again before it counts as stuck.
    assert watch.check(130.0, heads, server_up=True, paused=False)[0]
    assert watch.check(189.0, heads, server_up=True, paused=False)[0]
    assert not watch.check(190.0, heads, server_up=True, paused=False)[0]


def test_the_stuck_bound_comes_from_the_settings_with_a_floor() -> None:
    # Defaults: 5 ms fill, 5 attempts of 5 s with 4 backoffs of 2 s, a 30 s not-found
    # wait and a 30 s producer request: 93 s.
    assert stuck_after_s(settings()) == pytest.approx(93.005)
    slow = settings(serving={"timeout_ms": 60_000}, batch={"max_size": 8})
    # 5 x 60 + 4 x 2 + 3 halvings of 8 x 60 + 30 + 30
    assert stuck_after_s(slow) == pytest.approx(0.005 + 300 + 8 + 180 + 30 + 30)
    quick = settings(
        serving={"timeout_ms": 100},
        retry={"max_attempts": 1, "not_found_timeout_ms": 0},
        kafka={"request_timeout_ms": 15_000},
    )
    assert stuck_after_s(quick) == STUCK_FLOOR_S


def test_routes_and_group_say_why_they_are_not_ready() -> None:
    assert routes_check(True, {}) == (True, "ok")
    assert routes_check(False, {}) == (False, "routes not opened yet")
    waiting = routes_check(False, {"nope": "Servable not found for request: Latest(nope)"})
    assert waiting == (False, "waiting for nope: Servable not found for request: Latest(nope)")
    assert group_check(None, fenced=False) == (False, "joining the consumer group")
    assert group_check(3, fenced=False) == (True, "ok (3 partitions)")
    assert group_check(1, fenced=False) == (True, "ok (1 partition)")
    assert group_check(0, fenced=False)[0]  # in the group, a spare: ready
    assert group_check(3, fenced=True) == (False, "fenced by a rebalance: rejoining")


def test_partition_heads_read_the_oldest_unacknowledged_event_per_partition() -> None:
    busy: PartitionLedger[Any, Any] = PartitionLedger()
    busy.add(7, None, None).fetched = 3.5
    busy.add(8, None, None).fetched = 4.0
    idle: PartitionLedger[Any, Any] = PartitionLedger()
    ledgers = {TopicPartition("in", 0): busy, TopicPartition("in", 1): idle}
    assert partition_heads(ledgers) == {"in-0": (7, 3.5)}


# -- the state the checks read -----------------------------------------------------------


class MissingThenFound(FakeModelClient):
    """Answers ``error`` to GetModelMetadata until the test clears it (the model is loaded)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(signature=FRAUD)
        self.error: Exception | None = error

    async def get_signature(self, target: Target) -> Signature:
        if self.error is not None:
            raise self.error
        return await super().get_signature(target)


class Health:
    """What the probes and the lanes ask of ``ServerHealth``."""

    def __init__(self) -> None:
        self.up = True

    async def hold_if_down(self) -> bool:
        return False


def quick_lanes(client: MissingThenFound) -> Lanes:
    return Lanes(client, settings(retry={"initial_backoff_ms": 1}), Health().hold_if_down)


async def test_lanes_say_which_target_they_wait_for_until_it_is_found() -> None:
    client = MissingThenFound(ModelNotFoundError("Servable not found for request: Latest(fraud)"))
    lanes = quick_lanes(client)
    opening = asyncio.create_task(lanes.prepare(initial_routes(settings()), wait_for_models=True))
    await until(lambda: bool(lanes.waiting))
    assert lanes.waiting == {"fraud@latest": "Servable not found for request: Latest(fraud)"}
    client.error = None
    await opening
    assert lanes.waiting == {}


async def test_a_rejected_route_change_leaves_nothing_waiting() -> None:
    client = MissingThenFound(ServerUnavailableError("connection refused"))
    lanes = quick_lanes(client)
    opening = asyncio.create_task(lanes.prepare(initial_routes(settings()), wait_for_models=False))
    await until(lambda: bool(lanes.waiting))
    client.error = ModelNotFoundError("gone")  # a route change does not wait for a model
    with pytest.raises(RoutesRejectedError, match="gone"):
        await opening
    assert lanes.waiting == {}


class NoWork:
    """The delivery and fetch of a member with nothing in flight."""

    ledgers: Mapping[TopicPartition, object] = {}

    def forget(self, partitions: object) -> None:
        return None

    def hand_back(self, partitions: object) -> int:
        return 0


async def test_the_rebalance_tells_whether_the_member_is_in_the_group() -> None:
    rebalance = Rebalance(
        delivery=NoWork(),  # type: ignore[arg-type]
        committer=None,  # type: ignore[arg-type]  # nothing to commit without work
        fetch=NoWork(),  # type: ignore[arg-type]
        flush_batches=lambda: None,
        drain_s=0.0,
    )
    assert rebalance.assigned is None
    await rebalance.on_partitions_assigned({TopicPartition("in", 0), TopicPartition("in", 1)})
    assert rebalance.assigned == 2
    await rebalance.on_partitions_revoked({TopicPartition("in", 0), TopicPartition("in", 1)})
    assert rebalance.assigned is None  # between generations: joining again
    await rebalance.on_partitions_assigned(set())
    assert rebalance.assigned == 0


class Lanes_:
    def __init__(self) -> None:
        self.opened = False
        self.waiting: dict[str, str] = {}


class Service:
    """The pipeline's state as the probes read it, set by the test."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[None]] = []
        self.heads: dict[str, tuple[int, float]] = {}
        self.paused = False
        self.assigned: int | None = None
        self.fenced = False

    def pipeline(self) -> Pipeline:
        return Pipeline(
            tasks=lambda: self.tasks,
            heads=lambda: self.heads,
            paused=lambda: self.paused,
            assigned=lambda: self.assigned,
            fenced=lambda: self.fenced,
        )


async def test_readiness_from_start_to_consuming() -> None:
    health, lanes, service, stop = Health(), Lanes_(), Service(), asyncio.Event()
    probes = Probes(health, lanes, stop.is_set, BOUND)
    lanes.waiting = {"nope": "Servable not found for request: Latest(nope)"}
    before = probes.readyz()
    assert not before.ok
    assert body(before)["checks"] == {
        "model_server": "ok",
        "routes": "waiting for nope: Servable not found for request: Latest(nope)",
        "consumer_group": "not joined yet: the routes open first",
    }
    assert probes.livez().ok  # waiting for a model is not a reason to restart
    lanes.waiting, lanes.opened = {}, True
    probes.attach(service.pipeline())
    assert probes.readyz().failed == ["consumer_group"]  # joining
    service.assigned = 3
    assert probes.readyz().ok
    health.up = False
    assert body(probes.readyz())["checks"]["model_server"] == "model server down"
    health.up = True
    stop.set()
    assert probes.readyz().failed == ["process"]


async def test_liveness_names_a_stuck_partition_and_a_dead_task() -> None:
    health, service = Health(), Service()
    probes = Probes(health, Lanes_(), lambda: False, 0.0)  # any head seen twice is stuck
    probes.attach(service.pipeline())
    assert body(probes.livez()) == {
        "status": "ok",
        "checks": {"event_loop": "ok", "tasks": "ok", "stuck_partitions": "ok"},
    }
    service.heads = {"in-1": (9, 0.0)}
    probes.livez()
    await asyncio.sleep(0.01)
    stuck = probes.livez()
    assert stuck.failed == ["stuck_partitions"]
    assert body(stuck)["checks"]["stuck_partitions"].startswith("in-1: oldest event")
    service.heads = {}

    async def broken() -> None:
        raise RuntimeError("emitter bug")

    task = asyncio.create_task(broken(), name="emitter")
    await asyncio.gather(task, return_exceptions=True)
    service.tasks = [task]
    assert body(probes.livez())["checks"]["tasks"] == "emitter failed: RuntimeError('emitter bug')"


# -- on the metrics port ------------------------------------------------------------------


async def test_the_metrics_port_answers_the_probes_with_200_or_503_and_json() -> None:
    health, lanes = Health(), Lanes_()
    probes = Probes(health, lanes, lambda: False, BOUND)
    server = await serve_metrics(Metrics(), "127.0.0.1", 0, probes.pages())
    base = f"http://127.0.0.1:{server.port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=5) as client:
            live, ready = await client.get("/livez"), await client.get("/readyz")
            assert live.status_code == 200
            assert live.headers["content-type"] == "application/json"
            assert live.json()["status"] == "ok"
            assert ready.status_code == 503
            assert ready.json()["checks"]["routes"] == "routes not opened yet"
            head = await client.head("/readyz")
            assert head.status_code == 503
            assert head.content == b""
            assert (await client.get("/metrics")).status_code == 200
            assert (await client.get("/healthz")).status_code == 404
    finally:
        await server.close()


async def test_a_probe_that_breaks_answers_500_and_the_port_keeps_serving() -> None:
    def broken() -> tuple[bool, bytes]:
        raise KeyError("bug")

    server = await serve_metrics(Metrics(), "127.0.0.1", 0, {"/livez": broken})
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            url = f"http://127.0.0.1:{server.port}"
            assert (await client.get(f"{url}/livez")).status_code == 500
            assert (await client.get(f"{url}/metrics")).status_code == 200
    finally:
        await server.close()
