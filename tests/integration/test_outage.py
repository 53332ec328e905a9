"""A model server outage mid-stream holds the bridge; it never turns into failure records.

The model server is stopped while events keep arriving and started again on the
same ports: the bridge logs the outage, pauses, resumes, and every event still
ends as exactly one result.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.kafka_io import (
    BRIDGE,
    GroupOffsets,
    Outputs,
    Producer,
    duplicated,
    end_offsets,
    make_topics,
    missing,
    payment_items,
    wait_for_inputs,
)
from tests.integration.procs import (
    Bridges,
    demo_server,
    log_events,
    stopped_counts,
    wait_for,
    written,
)
from tools.harness.processes import ModelServer, bridge_env

pytestmark = pytest.mark.integration

STREAM = 1500
RATE_PER_S = 300.0
PRODUCED_WHILE_DOWN = 300


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[ModelServer]:
    """A model server this test alone uses, since it stops and restarts it."""
    server = demo_server(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
async def test_outage_mid_stream_holds_and_loses_nothing(
    kafka_bootstrap: str,
    topic_prefix: str,
    own_server: ModelServer,
    bridges: Bridges,
    protocol: str,
) -> None:
    topics = await make_topics(kafka_bootstrap, topic_prefix)
    env = bridge_env(
        kafka_bootstrap,
        topics.names,
        own_server,
        protocol=protocol,
        group=topics.group,
        BRIDGE_BATCH__MAX_SIZE="16",
        # Short deadlines and probe backoff: the outage is noticed and ended quickly.
        BRIDGE_SERVING__TIMEOUT_MS="2000",
        BRIDGE_RETRY__PROBE_MAX_BACKOFF_MS="500",
    )
    bridge = await bridges.start_assigned(env)
    items = payment_items(STREAM, seed=17)  # valid events only: any failure is a bug

    async with (
        Producer(kafka_bootstrap) as producer,
        Outputs.of(kafka_bootstrap, topics) as out,
        GroupOffsets.of(kafka_bootstrap, topics) as offsets,
    ):
        stream = asyncio.create_task(producer.send_all(topics.input, items, rate_per_s=RATE_PER_S))
        await out.wait_until(
            lambda o: len(o.records) >= 200, "200 results before the outage", 60, bridge.output
        )
        code = await asyncio.to_thread(own_server.stop)
        assert code == 0, own_server.output()
        sent_at_stop = len(producer.sent)
        await asyncio.to_thread(bridge.wait_for_log, "model_server_down", 30)
        # Keep it down while the stream goes on, so events pile up behind the outage.
        await wait_for(
            lambda: len(producer.sent) >= sent_at_stop + PRODUCED_WHILE_DOWN or stream.done(),
            f"{PRODUCED_WHILE_DOWN} events produced during the outage",
            30,
        )
        assert not stream.done(), "the outage should be mid-stream; slow the stream down"
        await asyncio.to_thread(own_server.start)  # same ports; waits until AVAILABLE
        await asyncio.to_thread(bridge.wait_for_log, "model_server_up", 30)

        sent = await stream
        await wait_for_inputs(out, sent, offsets, 90, bridge.output)
        code = await asyncio.to_thread(bridge.stop)
        assert code == 0, bridge.output()
        await out.wait_for_count(written(bridge))
        final = await offsets.read()

    failures = [
        (f.source, f.header(BRIDGE + "reason"), f.header("__connect.errors.exception.message"))
        for f in out.failures
    ]
    assert not failures, f"an outage must never produce failure records: {failures[:5]}"
    assert not missing(sent, out)
    assert not duplicated(out), "no crash, no rebalance: exactly one result per input"
    assert len(out.results) == len(sent)

    paused = log_events(bridge, "paused")
    assert any(p["reason"] == "model server down" for p in paused), "it should pause while down"
    assert log_events(bridge, "resumed"), "and resume after"
    stopped = stopped_counts(bridge)
    assert stopped["failures"] == 0 and stopped["results"] == len(sent)
    assert final == end_offsets(sent)
