"""Members come and go: SIGTERM causes no duplicates, SIGKILL only bounded ones, none lost.

- A churn of three bridges in one group: every few seconds one is stopped with
  SIGTERM and a new one started; twice one is killed with SIGKILL instead. Every
  input ends as a record. A duplicate is allowed only where a SIGKILL explains it:
  an input of a partition the killed bridge owned, at or after the offset the
  group had committed for it when it died, first written before it died. Anything
  else is a duplicate caused by a graceful stop or by the rebalances around one,
  which must not happen. On the dev broker one more cause is allowed, because the
  broker causes it: Tansu may form a new generation without waiting for a member
  that has not heard of the rebalance yet (Apache Kafka waits for it), so that
  member's commit is rejected and the next owner writes again what it wrote in
  the moments before (``tools.chaos_kit.Fence``). Against an external
  cluster (``BRIDGE_TEST_KAFKA_BOOTSTRAP``) that allowance is off.
- A SIGTERM that arrives while the group rebalances stops the bridge at once: it
  does not wait to be assigned partitions only to give them back.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from tests.conftest import EXTERNAL_KAFKA_ENV
from tests.integration.kafka_io import (
    GroupOffsets,
    Outputs,
    Producer,
    Topics,
    duplicated,
    make_topics,
    missing,
    payment_items,
    wait_for_inputs,
)
from tests.integration.procs import Bridges, assigned, log_events, wait_for
from tools.chaos_kit import Kill, fences_in, unexplained_duplicates
from tools.harness.processes import ModelServer, bridge_env

pytestmark = pytest.mark.integration

STREAM = 24000
RATE_PER_S = 600.0
STOP_EVERY_S = 2.5
KILL_AT = (1, 4)  # which of the stops are SIGKILLs
COMMIT_INTERVAL_MS = 200


def churn_env(bootstrap: str, topics: Topics, server: ModelServer) -> dict[str, str]:
    return bridge_env(
        bootstrap,
        topics.names,
        server,
        group=topics.group,
        BRIDGE_BATCH__MAX_SIZE="16",
        BRIDGE_BATCH__MAX_PENDING="400",
        BRIDGE_DELIVERY__COMMIT_INTERVAL_MS=str(COMMIT_INTERVAL_MS),
        # A killed member never leaves: its session has to expire first.
        BRIDGE_KAFKA__SESSION_TIMEOUT_MS="6000",
    )


async def test_sigterm_churn_causes_no_duplicates_and_sigkill_only_bounded_ones(
    kafka_bootstrap: str, topic_prefix: str, model_server: ModelServer, bridges: Bridges
) -> None:
    topics = await make_topics(kafka_bootstrap, topic_prefix, inputs=6, results=3, failures=1)
    env = churn_env(kafka_bootstrap, topics, model_server)
    live = [bridges.start(env, f"m{i}") for i in range(3)]
    for bridge in live:
        await asyncio.to_thread(bridge.wait_for_log, "partitions_assigned", 60)
    items = payment_items(STREAM, seed=41, malformed_every=40)
    kills: list[Kill] = []
    stops = 0

    async with (
        Producer(kafka_bootstrap) as producer,
        Outputs.of(kafka_bootstrap, topics) as out,
        GroupOffsets.of(kafka_bootstrap, topics) as offsets,
    ):
        stream = asyncio.create_task(producer.send_all(topics.input, items, rate_per_s=RATE_PER_S))
        while not stream.done():
            await asyncio.sleep(STOP_EVERY_S)  # the churn's pace, not a wait for a condition
            victim = live.pop(0)
            if stops in KILL_AT:
                owned = frozenset(assigned(victim) or ())
                await asyncio.to_thread(victim.kill)
                kills.append(Kill(owned, await offsets.read(), time.time()))
            else:
                code = await asyncio.to_thread(victim.stop)
                assert code == 0, victim.output()
            stops += 1
            live.append(bridges.start(env, f"m{len(bridges.started)}"))
        sent = await stream
        await wait_for_inputs(out, sent, offsets, 120, lambda: live[-1].output())
        for bridge in live:
            assert await asyncio.to_thread(bridge.stop) == 0, bridge.output()
        while await out.poll(timeout_ms=500):
            pass

    assert len(kills) == len(KILL_AT), "the stream ended before the churn did; slow it down"
    assert not missing(sent, out), "inputs without a record"

    dups = duplicated(out)
    window_s = 3 * COMMIT_INTERVAL_MS / 1000 + 1.0
    fences = (
        []
        if os.environ.get(EXTERNAL_KAFKA_ENV)
        else fences_in((log_events(bridge) for bridge in bridges.started), window_s)
    )
    unexplained = unexplained_duplicates(out, kills, fences)
    assert not unexplained, (
        f"{len(unexplained)} duplicates no SIGKILL explains (a graceful stop or its "
        f"rebalance caused them): {unexplained[:20]}"
    )
    stopped = [e for b in bridges.started for e in log_events(b, "stopped")]
    uncommitted = [e for e in stopped if not e["committed"] and not (e["fenced"] and fences)]
    assert not uncommitted, f"graceful stops that did not commit: {uncommitted}"
    print(
        f"{stops} stops ({len(kills)} SIGKILL, {len(fences)} members fenced by the broker), "
        f"{len(dups)} duplicates, all explained"
    )


async def test_a_sigterm_during_a_rebalance_stops_at_once(
    kafka_bootstrap: str, topic_prefix: str, model_server: ModelServer, bridges: Bridges
) -> None:
    topics = await make_topics(kafka_bootstrap, topic_prefix, inputs=4)
    env = churn_env(kafka_bootstrap, topics, model_server)
    first = await bridges.start_assigned(env, "first")
    bridges.start(env, "second")  # its join makes the group rebalance
    await wait_for(
        lambda: bool(log_events(first, "partitions_revoked")),
        "the first bridge to take part in the rebalance",
        60,
        first.output,
    )
    assert first.process is not None
    stopped_at = time.monotonic()
    code = await asyncio.to_thread(first.stop)
    took = time.monotonic() - stopped_at
    assert code == 0, first.output()
    events = [e["event"] for e in log_events(first)]
    after_stop = events[events.index("stopping") :]
    assert "partitions_assigned" not in after_stop, (
        f"it waited for the next assignment before stopping (took {took:.1f} s): {after_stop}"
    )
    print(f"stopped {took:.2f} s after SIGTERM, mid-rebalance")
