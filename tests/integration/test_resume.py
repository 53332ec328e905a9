"""After a model server outage of any length, the bridge serves again within seconds.

An operator saw the bridge over gRPC take 2.5-89 s to resume after the server came
back from an 11-34 s outage (REST: under 2 s): gRPC's own connection backoff
(1 s x 1.6 per failed attempt, up to 120 s) decided when the channel tried again,
not the bridge's probe backoff. Here two bridges run at once, one per protocol,
each on its own topics, against one model server that is stopped for 5, 30 and
60 s in turn while payments flow. For each outage and protocol the time from the
server being back (``wait_ready`` returned) to the bridge's first result written
after that must be within a bound; a long-lived client in the test measures the
same for ``is_ready`` and ``predict``. At the end every input has exactly one
record, and the only failure records are the stream's malformed events.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import orjson
import pytest

from bridge.domain import Instance, Signature, Target
from bridge.pipeline.instances import InstanceBuilder
from bridge.serving.client import ModelClient
from bridge.serving.grpc_client import GrpcModelClient
from bridge.serving.rest_client import RestModelClient
from tests.integration.kafka_io import (
    BRIDGE,
    GroupOffsets,
    Item,
    Outputs,
    Producer,
    Topics,
    end_offsets,
    make_topics,
    payment_items,
    wait_for_inputs,
)
from tests.integration.procs import Bridges, demo_server, log_events, wait_for, written
from tools.harness.processes import BridgeProcess, ModelServer, bridge_env

pytestmark = pytest.mark.integration

PROTOCOLS = ("grpc", "rest")
OUTAGES_S = (5.0, 30.0, 60.0)
# From the server being back to the bridge's first new result. The bridge probes at
# most every 2 s (BRIDGE_RETRY__PROBE_MAX_BACKOFF_MS); what is left is the channel
# connecting, one Predict and the produce. Before the fix gRPC took 7-17 s here.
RESUME_BOUND_S = 5.0
# A long-lived client probing is_ready every 0.25 s: only the channel's own delay.
CLIENT_BOUND_S = 3.0
RATE_PER_S = 25.0  # per protocol; a 60 s outage piles up 1500 events
CHUNK = 5
MALFORMED_EVERY = 20
MODEL = Target("fraud")


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[ModelServer]:
    """A model server this test alone uses, since it stops and restarts it."""
    server = demo_server(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class TimedOutputs(Outputs):
    """``Outputs`` that say when the first result after a moment was written."""

    def first_result_after(self, wall: float) -> float | None:
        """The Kafka timestamp (wall clock) of the first result written at or after ``wall``."""
        times = [
            r.timestamp_s for r in self.records if r.kind == "result" and r.timestamp_s >= wall
        ]
        return min(times) if times else None


@dataclass
class Side:
    """One protocol: its topics, bridge, producer, outputs and stream."""

    protocol: str
    topics: Topics
    bridge: BridgeProcess
    producer: Producer
    outputs: TimedOutputs
    offsets: GroupOffsets
    items: list[Item]
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    stream: asyncio.Task[None] | None = None

    async def flow(self) -> None:
        """Produce CHUNK events every CHUNK / RATE_PER_S seconds until ``stop``."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        for first in range(0, len(self.items), CHUNK):
            if self.stop.is_set():
                return
            await self.producer.send_all(self.topics.input, self.items[first : first + CHUNK])
            await asyncio.sleep(max(0.0, started + (first + CHUNK) / RATE_PER_S - loop.time()))
        raise AssertionError("the stream ran out of items; make more")

    def downs(self) -> int:
        return len(log_events(self.bridge, "model_server_down"))

    def up_logged_after(self, wall: float) -> float | None:
        for entry in log_events(self.bridge, "model_server_up"):
            logged = datetime.fromisoformat(entry["timestamp"]).timestamp()
            if logged >= wall:
                return logged
        return None


async def client_resume(
    client: ModelClient,
    back: asyncio.Future[float],
    signature: Signature,
    instances: list[Instance],
) -> float:
    """Probe every 0.25 s through the outage; seconds from ``back`` to a served predict."""
    while True:
        ready = await client.is_ready(MODEL)
        if ready and back.done():
            await client.predict(MODEL, signature, instances)  # an error fails the test
            return time.monotonic() - back.result()
        await asyncio.sleep(0.25)


async def test_bridges_resume_within_seconds_of_the_server(
    kafka_bootstrap: str, topic_prefix: str, own_server: ModelServer, bridges: Bridges
) -> None:
    items = payment_items(20_000, seed=23, malformed_every=MALFORMED_EVERY)
    sides: dict[str, Side] = {}
    # (outage s, protocol, first new result s, model_server_up logged s, client s)
    measured: list[tuple[float, str, float, float | None, float]] = []

    async with contextlib.AsyncExitStack() as stack:
        clients: dict[str, ModelClient] = {
            "grpc": GrpcModelClient(own_server.grpc_target, 5.0, 4 * 1024 * 1024),
            "rest": RestModelClient(own_server.rest_url, 5.0, 1.0),
        }
        for client in clients.values():
            stack.push_async_callback(client.aclose)
        signature = await clients["grpc"].get_signature(MODEL)
        builder = InstanceBuilder(signature)
        instances = [builder.build(orjson.loads(i.value or b"")) for i in items[:4]]
        for protocol in PROTOCOLS:
            topics = await make_topics(kafka_bootstrap, f"{topic_prefix}-{protocol}")
            env = bridge_env(
                kafka_bootstrap, topics.names, own_server, protocol=protocol, group=topics.group
            )
            sides[protocol] = Side(
                protocol,
                topics,
                bridges.start(env, name=f"bridge-{protocol}"),
                await stack.enter_async_context(Producer(kafka_bootstrap)),
                await stack.enter_async_context(TimedOutputs.of(kafka_bootstrap, topics)),
                await stack.enter_async_context(GroupOffsets.of(kafka_bootstrap, topics)),
                items,
            )
        await asyncio.gather(
            *(
                asyncio.to_thread(side.bridge.wait_for_log, "partitions_assigned", 60)
                for side in sides.values()
            )
        )
        for side in sides.values():
            side.stream = asyncio.create_task(side.flow(), name=f"stream-{side.protocol}")
            stack.callback(side.stream.cancel)

        def explain() -> str:
            return "\n".join(f"--- {p}:\n{s.bridge.output()}" for p, s in sides.items())

        async def poll_until(done: Callable[[], bool], what: str, timeout_s: float) -> bool:
            """Read both output topics until ``done()``; False if it timed out."""
            deadline = time.monotonic() + timeout_s
            while not done():
                if time.monotonic() > deadline:
                    print(f"timed out after {timeout_s} s waiting for {what}")
                    return False
                for side in sides.values():
                    await side.outputs.poll(timeout_ms=50)
                    if side.stream is not None and side.stream.done():
                        side.stream.result()  # its error, if it failed
            return True

        assert await poll_until(
            lambda: all(len(s.outputs.results) >= 50 for s in sides.values()),
            "50 results from each bridge before the first outage",
            60,
        ), explain()

        for outage in OUTAGES_S:
            downs = {p: side.downs() for p, side in sides.items()}
            code = await asyncio.to_thread(own_server.stop)
            assert code == 0, own_server.output()
            stopped = time.monotonic()
            back: asyncio.Future[float] = asyncio.get_running_loop().create_future()
            probes = {
                p: asyncio.create_task(client_resume(c, back, signature, instances))
                for p, c in clients.items()
            }
            for probe in probes.values():
                stack.callback(probe.cancel)

            def noticed(downs: dict[str, int] = downs) -> bool:
                return all(side.downs() > downs[p] for p, side in sides.items())

            await wait_for(
                noticed,
                "both bridges to notice the outage",
                15,
                explain,
            )
            await asyncio.sleep(max(0.0, outage - (time.monotonic() - stopped)))
            await asyncio.to_thread(own_server.start)  # same ports; returns once AVAILABLE
            back.set_result(time.monotonic())
            back_wall = time.time()
            await asyncio.wait(probes.values(), timeout=30)
            client_s = {
                p: probe.result() if probe.done() else float("inf") for p, probe in probes.items()
            }

            def served(wall: float = back_wall) -> bool:
                return all(s.outputs.first_result_after(wall) is not None for s in sides.values())

            await poll_until(
                served,
                f"a result from each bridge after the {outage:.0f} s outage",
                30,
            )
            for p, side in sides.items():
                first = side.outputs.first_result_after(back_wall)
                up = side.up_logged_after(back_wall - 1)
                resume = float("inf") if first is None else first - back_wall
                up_s = None if up is None else round(up - back_wall, 2)
                measured.append((outage, p, round(resume, 2), up_s, round(client_s[p], 2)))
                print(
                    f"outage {outage:2.0f} s, {p:>4}: first new result {resume:5.2f} s, "
                    f"model_server_up logged at {up_s} s, client is_ready + predict "
                    f"{client_s[p]:5.2f} s after the server was back",
                    flush=True,
                )

        for side in sides.values():
            side.stop.set()
        await asyncio.gather(*(s.stream for s in sides.values() if s.stream))
        for side in sides.values():
            await wait_for_inputs(
                side.outputs, side.producer.sent, side.offsets, 90, side.bridge.output
            )
        codes = await asyncio.gather(*(asyncio.to_thread(s.bridge.stop) for s in sides.values()))
        assert codes == [0, 0], explain()
        for side in sides.values():
            await side.outputs.wait_for_count(written(side.bridge))
        finals = {p: await s.offsets.read() for p, s in sides.items()}

    slow = [m for m in measured if m[2] > RESUME_BOUND_S]
    assert not slow, f"over {RESUME_BOUND_S} s to serve again (outage, protocol, ...): {slow}"
    slow = [m for m in measured if m[4] > CLIENT_BOUND_S]
    assert not slow, f"clients over {CLIENT_BOUND_S} s to answer again: {slow}"
    for protocol, side in sides.items():
        sent = side.producer.sent
        by_source = side.outputs.by_source()
        inputs = {s.source: s for s in sent}
        assert set(by_source) == set(inputs), f"{protocol}: inputs and records differ"
        extra = {src: len(rs) for src, rs in by_source.items() if len(rs) != 1}
        assert not extra, f"{protocol}: inputs with more than one record: {extra}"
        wrong = []
        for src, (out,) in by_source.items():
            got = "result" if out.kind == "result" else out.header(BRIDGE + "reason")
            if got != inputs[src].item.expected:
                wrong.append((src, inputs[src].item.expected, got))
        assert not wrong, f"{protocol}: (source, expected, got), an outage's failures? {wrong[:5]}"
        assert finals[protocol] == end_offsets(sent), protocol
