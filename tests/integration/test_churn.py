"""Members come and go: SIGTERM causes no duplicates, SIGKILL only bounded ones, none lost.

- A churn of three bridges in one group: every few seconds one is stopped with
  SIGTERM and a new one started; twice one is killed with SIGKILL instead. Every
  input ends as a record. A duplicate is allowed only where a SIGKILL explains it:
  an input of a partition the killed bridge owned, at or after the offset the
  group had committed for it when it died. Anything else is a duplicate caused by
  a graceful stop or by the rebalances around one, which must not happen.
- A SIGTERM that arrives while the group rebalances stops the bridge at once: it
  does not wait to be assigned partitions only to give them back.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import pytest

from bridge.dev.stack import ModelServer, bridge_env
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

pytestmark = pytest.mark.integration

STREAM = 24000
RATE_PER_S = 600.0
STOP_EVERY_S = 2.5
KILL_AT = (1, 4)  # which of the stops are SIGKILLs


@dataclass(frozen=True)
class Kill:
    partitions: set[int]
    committed: dict[int, int | None]


def churn_env(bootstrap: str, topics: Topics, server: ModelServer) -> dict[str, str]:
    return bridge_env(
        bootstrap,
        topics.names,
        server,
        group=topics.group,
        BRIDGE_BATCH__MAX_SIZE="16",
        BRIDGE_BATCH__MAX_PENDING="400",
        BRIDGE_DELIVERY__COMMIT_INTERVAL_MS="200",
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
                owned = assigned(victim) or set()
                await asyncio.to_thread(victim.kill)
                kills.append(Kill(owned, await offsets.read()))
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

    def explained(source: tuple[int, int]) -> bool:
        partition, offset = source
        return any(
            partition in kill.partitions and offset >= (kill.committed[partition] or 0)
            for kill in kills
        )

    dups = duplicated(out)
    unexplained = sorted(source for source in dups if not explained(source))
    assert not unexplained, (
        f"{len(unexplained)} duplicates no SIGKILL explains (a graceful stop or its "
        f"rebalance caused them): {unexplained[:20]}"
    )
    stopped = [e for b in bridges.started for e in log_events(b, "stopped")]
    assert all(e["committed"] for e in stopped), [e for e in stopped if not e["committed"]]
    print(f"{stops} stops ({len(kills)} SIGKILL), {len(dups)} duplicates, all explained")


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
