"""A broker that stalls longer than the client's request timeout is an outage, not a crash.

The broker is frozen (SIGSTOP: its sockets stay open, nothing is answered) for
longer than ``BRIDGE_KAFKA__REQUEST_TIMEOUT_MS`` and than the group session, while
a stream flows. Before, the producer's request timed out, the bridge logged
``stopped_on_error`` and exited 1. Now it holds (no fetching, what is pending kept,
the outputs resent in order), resumes by itself once the broker answers, and every
input ends as a record. Duplicates are possible only for what was written but not
acknowledged or committed when the broker froze (no idempotent producer on the dev
broker), and are bounded by what the bridge held.

This test runs its own broker: freezing the session's would stall other tests.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.kafka_io import (
    GroupOffsets,
    Outputs,
    Producer,
    duplicated,
    end_offsets,
    make_topics,
    missing,
    order_violations,
    payment_items,
    wait_for_inputs,
)
from tests.integration.procs import Bridges, log_events, stopped_counts, wait_for
from tools.harness.broker import DevBroker
from tools.harness.processes import ModelServer, bridge_env

pytestmark = pytest.mark.integration

STREAM = 6000
RATE_PER_S = 1500.0  # faster than the bridge with these settings: outputs are in flight
MAX_PENDING = 300
REQUEST_TIMEOUT_MS = 7000
FROZEN_S = 15.0  # > the request timeout and > the session timeout


@pytest.fixture
def own_broker() -> DevBroker:
    with DevBroker() as broker:
        yield broker


async def test_a_frozen_broker_holds_the_bridge_and_it_resumes_by_itself(
    own_broker: DevBroker, topic_prefix: str, model_server: ModelServer, bridges: Bridges
) -> None:
    bootstrap = own_broker.bootstrap_servers
    topics = await make_topics(bootstrap, topic_prefix)
    env = bridge_env(
        bootstrap,
        topics.names,
        model_server,
        group=topics.group,
        BRIDGE_BATCH__MAX_SIZE="8",
        BRIDGE_BATCH__MAX_PENDING=str(MAX_PENDING),
        BRIDGE_KAFKA__REQUEST_TIMEOUT_MS=str(REQUEST_TIMEOUT_MS),
        BRIDGE_KAFKA__SESSION_TIMEOUT_MS="6000",
        BRIDGE_DELIVERY__COMMIT_INTERVAL_MS="200",
    )
    bridge = await bridges.start_assigned(env)
    items = payment_items(STREAM, seed=31, malformed_every=50)

    async with (
        Producer(bootstrap) as producer,
        Outputs.of(bootstrap, topics) as out,
        GroupOffsets.of(bootstrap, topics) as offsets,
    ):
        stream = asyncio.create_task(producer.send_all(topics.input, items, rate_per_s=RATE_PER_S))
        await out.wait_until(
            lambda o: len(o.records) >= 500, "500 outputs first", 60, bridge.output
        )
        committed_before = await offsets.read()
        own_broker.freeze()
        try:
            await asyncio.sleep(FROZEN_S)  # the fault's length, not a wait for a condition
            assert bridge.process is not None and bridge.process.poll() is None, (
                f"the bridge exited during the stall:\n{bridge.output()}"
            )
        finally:
            own_broker.thaw()
        await wait_for(
            lambda: bool(log_events(bridge, "resumed")),
            "the bridge to resume",
            60,
            bridge.output,
        )
        sent = await stream
        await wait_for_inputs(out, sent, offsets, 120, bridge.output)
        code = await asyncio.to_thread(bridge.stop)
        assert code == 0, bridge.output()
        final = await offsets.read()

    assert not missing(sent, out), "inputs without a record"
    assert not order_violations(out, topics.partitions)
    held = {event["reason"] for event in log_events(bridge, "paused")}
    assert held & {"broker not taking outputs", "commits not landing"}, f"held for {held}"
    if log_events(bridge, "broker_not_writable"):  # outputs were in flight when it froze
        assert log_events(bridge, "broker_writable")
    dups = duplicated(out)
    # Replayed or resent: only what the bridge held around the stall, never what was
    # committed before it.
    early = [s for s in dups if s[1] < (committed_before[s[0]] or 0)]
    assert not early, f"duplicates of work committed before the stall: {early[:10]}"
    assert len(dups) <= MAX_PENDING + RATE_PER_S * 2 * 0.2 + 50, f"{len(dups)} duplicates"
    failures = [f.header("__bridge.errors.reason") for f in out.failures]
    assert set(failures) <= {
        "not_json",
        "not_object",
        "missing_input",
        "wrong_type",
        "wrong_shape",
    }, f"the stall caused failures: {set(failures)}"
    assert final == end_offsets(sent)
    assert stopped_counts(bridge)["committed"] is True
