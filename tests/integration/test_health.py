"""/livez and /readyz of a running bridge, against the dev broker and the local model server.

Probes are polled as a kubelet would (every fraction of a second here); a wait for
a state is bounded and its failure prints the last answer and the bridge's log.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.procs import Bridges, demo_server
from tools.harness.broker import free_port
from tools.harness.kafka_io import (
    GroupOffsets,
    Outputs,
    Producer,
    make_topics,
    payment_items,
    wait_for_inputs,
)
from tools.harness.processes import BridgeProcess, ModelServer, bridge_env

pytestmark = pytest.mark.integration


async def probe(port: int, path: str) -> tuple[int, dict[str, Any]]:
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(f"http://127.0.0.1:{port}{path}")
    assert response.headers["content-type"] == "application/json", response.text
    return response.status_code, response.json()


async def until_probe(
    port: int,
    path: str,
    check: Callable[[int, dict[str, Any]], bool],
    what: str,
    bridge: BridgeProcess,
    timeout_s: float = 60.0,
) -> tuple[int, dict[str, Any]]:
    """Poll ``path`` until ``check(status, body)``; the answer that passed."""
    deadline = time.monotonic() + timeout_s
    last: tuple[int, dict[str, Any]] | None = None
    while time.monotonic() < deadline:
        try:
            last = await probe(port, path)
        except httpx.TransportError:
            last = None  # the responder is not listening yet
        if last is not None and check(*last):
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"{path} never {what}; last answer {last}\n{bridge.output()}")


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[ModelServer]:
    """A model server this test alone uses, since it stops and restarts it."""
    server = demo_server(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_a_consuming_bridge_is_live_and_ready(
    kafka_bootstrap: str, topic_prefix: str, model_server: ModelServer, bridges: Bridges
) -> None:
    topics = await make_topics(kafka_bootstrap, topic_prefix, inputs=2, results=1, failures=1)
    port = free_port()
    env = bridge_env(
        kafka_bootstrap,
        topics.names,
        model_server,
        group=topics.group,
        BRIDGE_METRICS__PORT=str(port),
    )
    bridge = await bridges.start_assigned(env)
    async with Producer(kafka_bootstrap) as producer:
        sent = await producer.send_all(topics.input, payment_items(20))
    async with (
        Outputs.of(kafka_bootstrap, topics) as outputs,
        GroupOffsets.of(kafka_bootstrap, topics) as offsets,
    ):
        await wait_for_inputs(outputs, sent, offsets, 90, bridge.output)

    status, ready = await probe(port, "/readyz")
    assert status == 200, ready
    assert ready == {
        "status": "ok",
        "checks": {"model_server": "ok", "routes": "ok", "consumer_group": "ok (2 partitions)"},
    }
    status, live = await probe(port, "/livez")
    assert status == 200, live
    assert live == {
        "status": "ok",
        "checks": {"event_loop": "ok", "tasks": "ok", "stuck_partitions": "ok"},
    }
    assert await asyncio.to_thread(bridge.stop) == 0, bridge.output()


async def test_a_bridge_whose_model_does_not_exist_is_live_and_not_ready(
    kafka_bootstrap: str, topic_prefix: str, model_server: ModelServer, bridges: Bridges
) -> None:
    topics = await make_topics(kafka_bootstrap, topic_prefix, inputs=1, results=1, failures=1)
    port = free_port()
    env = bridge_env(
        kafka_bootstrap,
        topics.names,
        model_server,
        group=topics.group,
        model="nope",
        BRIDGE_METRICS__PORT=str(port),
    )
    bridge = bridges.start(env)
    await asyncio.to_thread(bridge.wait_for_log, "waiting_for_model")
    status, ready = await until_probe(
        port, "/readyz", lambda _, body: "routes" in body["checks"], "answered", bridge
    )
    assert status == 503, ready
    assert ready["status"] == "fail"
    assert ready["checks"]["routes"].startswith("waiting for nope@latest: "), ready
    assert "nope" in ready["checks"]["routes"].removeprefix("waiting for nope@latest: "), ready
    assert ready["checks"]["model_server"] == "ok"
    assert ready["checks"]["consumer_group"] == "not joined yet: the routes open first"
    status, live = await probe(port, "/livez")
    assert status == 200, live  # waiting for a model is no reason to restart the process
    assert await asyncio.to_thread(bridge.stop) == 0, bridge.output()


async def test_readiness_follows_the_model_server_down_and_back(
    kafka_bootstrap: str, topic_prefix: str, own_server: ModelServer, bridges: Bridges
) -> None:
    topics = await make_topics(kafka_bootstrap, topic_prefix, inputs=1, results=1, failures=1)
    port = free_port()
    env = bridge_env(
        kafka_bootstrap,
        topics.names,
        own_server,
        group=topics.group,
        BRIDGE_METRICS__PORT=str(port),
    )
    bridge = await bridges.start_assigned(env)
    await until_probe(port, "/readyz", lambda status, _: status == 200, "ready", bridge)

    await asyncio.to_thread(own_server.stop)
    # Idle: no event tells the bridge; its own watch of the server does, within seconds.
    status, ready = await until_probe(
        port, "/readyz", lambda status, _: status == 503, "not ready", bridge, timeout_s=30
    )
    assert ready["checks"]["model_server"] == "model server down", ready
    status, live = await probe(port, "/livez")
    assert status == 200, live  # an outage is waited out, not restarted
    assert live["checks"]["stuck_partitions"] == "ok (not checked: model server down)"

    await asyncio.to_thread(own_server.start)
    status, ready = await until_probe(
        port, "/readyz", lambda status, _: status == 200, "ready again", bridge, timeout_s=30
    )
    assert ready["checks"]["model_server"] == "ok"
    assert await asyncio.to_thread(bridge.stop) == 0, bridge.output()
