"""At-least-once through a crash and through a rebalance: nothing lost, duplicates bounded.

- A bridge killed with SIGKILL mid-stream loses nothing: its successor in the same
  group resumes from the last committed offsets, so the only duplicates are events
  at or after those offsets, no more than the crashed bridge had in flight.
- Two bridges share a 4-partition input; one stops with SIGTERM mid-stream and the
  other takes its partitions over from what it committed.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.integration.kafka_io import (
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
from tests.integration.procs import Bridges, assigned, stopped_counts, wait_for, written
from tools.harness.processes import ModelServer, bridge_env

pytestmark = pytest.mark.integration

STREAM = 2000
RATE_PER_S = 800.0
MAX_PENDING = 400
# The crash comes while the bridge is behind: a stream faster than one event per
# request with two in flight, so up to MAX_PENDING events are in flight when it dies.
CRASH_RATE_PER_S = 2000.0
COMMIT_INTERVAL_MS = 200


async def test_kill_9_mid_stream_loses_nothing_and_duplicates_only_uncommitted(
    kafka_bootstrap: str, topic_prefix: str, model_server: ModelServer, bridges: Bridges
) -> None:
    topics = await make_topics(kafka_bootstrap, topic_prefix)
    env = bridge_env(
        kafka_bootstrap,
        topics.names,
        model_server,
        group=topics.group,
        BRIDGE_BATCH__MAX_SIZE="1",
        BRIDGE_BATCH__MAX_IN_FLIGHT="2",
        BRIDGE_BATCH__MAX_PENDING=str(MAX_PENDING),
        BRIDGE_DELIVERY__COMMIT_INTERVAL_MS=str(COMMIT_INTERVAL_MS),
        # The killed member never leaves the group: its session has to expire first.
        BRIDGE_KAFKA__SESSION_TIMEOUT_MS="6000",
    )
    first = await bridges.start_assigned(env, "first")
    items = payment_items(STREAM, seed=11, malformed_every=50)

    async with (
        Producer(kafka_bootstrap) as producer,
        Outputs.of(kafka_bootstrap, topics) as out,
        GroupOffsets.of(kafka_bootstrap, topics) as offsets,
    ):
        stream = asyncio.create_task(
            producer.send_all(topics.input, items, rate_per_s=CRASH_RATE_PER_S)
        )
        await out.wait_until(
            lambda o: len(o.records) >= 400, "400 outputs before the crash", 60, first.output
        )
        await asyncio.to_thread(first.kill)
        written_at_crash = len(out.records)
        at_crash = await offsets.read()
        assert sum(o or 0 for o in at_crash.values()) < STREAM // 2, "crash mid-stream"

        second = await bridges.start_assigned(env, "second")
        sent = await stream
        await wait_for_inputs(out, sent, offsets, 90, second.output)
        code = await asyncio.to_thread(second.stop)
        assert code == 0, second.output()
        rewritten = written(second)
        # Each output partition holds the first bridge's records, then the second's.
        await out.wait_for_count(rewritten)
        final = await offsets.read()

    assert not missing(sent, out), "inputs without a record"
    dups = duplicated(out)
    early = sorted(s for s in dups if s[1] < (at_crash[s[0]] or 0))
    assert not early, f"duplicates before the committed offset at the crash {at_crash}: {early}"
    # What can be written twice is what was consumed but not committed when the bridge died:
    # at most MAX_PENDING in the ledger plus what was acked since the last commit.
    bound = MAX_PENDING + CRASH_RATE_PER_S * COMMIT_INTERVAL_MS / 1000
    assert len(dups) <= bound, f"{len(dups)} duplicated inputs, bound {bound}"
    assert all(n == 2 for n in dups.values()), "one crash, at most two records per input"
    # The restarted bridge picked up exactly at the committed offsets and went to the end.
    assert rewritten == sum(end - (at_crash[p] or 0) for p, end in end_offsets(sent).items())
    assert final == end_offsets(sent)
    print(f"crash after {written_at_crash} read; committed {at_crash}; {len(dups)} duplicated")


async def test_two_bridges_share_partitions_and_one_leaves_mid_stream(
    kafka_bootstrap: str, topic_prefix: str, model_server: ModelServer, bridges: Bridges
) -> None:
    topics = await make_topics(kafka_bootstrap, topic_prefix, inputs=4, results=2, failures=1)
    env = bridge_env(
        kafka_bootstrap,
        topics.names,
        model_server,
        group=topics.group,
        BRIDGE_BATCH__MAX_SIZE="16",
        BRIDGE_BATCH__MAX_PENDING=str(MAX_PENDING),
    )
    one = await bridges.start_assigned(env, "one")
    two = bridges.start(env, "two")
    everything = set(range(topics.input_partitions))

    def split() -> bool:
        a, b = assigned(one) or set(), assigned(two) or set()
        return bool(a) and bool(b) and not (a & b) and (a | b) == everything

    await wait_for(
        split,
        "both bridges to own partitions",
        60,
        lambda: f"one: {assigned(one)}, two: {assigned(two)}\n{two.output()}",
    )
    owned_by_one = assigned(one)
    assert owned_by_one

    items = payment_items(STREAM, seed=13, malformed_every=40)
    async with (
        Producer(kafka_bootstrap) as producer,
        Outputs.of(kafka_bootstrap, topics) as out,
        GroupOffsets.of(kafka_bootstrap, topics) as offsets,
    ):
        stream = asyncio.create_task(producer.send_all(topics.input, items, rate_per_s=RATE_PER_S))
        await out.wait_until(
            lambda o: len(o.records) >= 400,
            "400 outputs before the stop",
            60,
            lambda: one.output() + two.output(),
        )
        assert {r.source[0] for r in out.records} == everything, "both bridges should be working"
        code = await asyncio.to_thread(one.stop)
        assert code == 0, one.output()
        assert not stream.done(), "the stop should come mid-stream; slow the stream down"
        await wait_for(
            lambda: assigned(two) == everything,
            "the remaining bridge to take every partition",
            60,
            two.output,
        )
        sent = await stream
        await wait_for_inputs(out, sent, offsets, 90, two.output)
        code = await asyncio.to_thread(two.stop)
        assert code == 0, two.output()
        total = written(one) + written(two)
        await out.wait_for_count(total)
        final = await offsets.read()

    assert not missing(sent, out), "inputs without a record"
    stopped = stopped_counts(one)
    assert stopped["drained"] is True and stopped["handed_back"] == 0, stopped
    dups = duplicated(out)
    # A graceful leave drains and commits first: its partitions resume where it stopped.
    assert {s[0] for s in dups} <= owned_by_one, f"duplicates outside the rebalance: {dups}"
    assert not dups, f"duplicates after a graceful leave: {sorted(dups)[:20]}"
    assert stopped_counts(two)["handed_back"] == 0
    assert total == len(out.records)
    assert final == end_offsets(sent)


KILLS = 3
KILL_STREAM = 9000
KILL_RATE_PER_S = 1500.0  # faster than this bridge: it is always full when it dies


async def test_repeated_kill_9_each_replays_within_the_stated_bound(
    kafka_bootstrap: str, topic_prefix: str, model_server: ModelServer, bridges: Bridges
) -> None:
    """README: a kill -9 replays at most MAX_PENDING plus two commit intervals of output."""
    topics = await make_topics(kafka_bootstrap, topic_prefix)
    env = bridge_env(
        kafka_bootstrap,
        topics.names,
        model_server,
        group=topics.group,
        BRIDGE_BATCH__MAX_SIZE="4",
        BRIDGE_BATCH__MAX_IN_FLIGHT="2",
        BRIDGE_BATCH__MAX_PENDING=str(MAX_PENDING),
        BRIDGE_DELIVERY__COMMIT_INTERVAL_MS=str(COMMIT_INTERVAL_MS),
        BRIDGE_KAFKA__SESSION_TIMEOUT_MS="6000",
    )
    items = payment_items(KILL_STREAM, seed=43, malformed_every=50)
    replays: list[tuple[int, float]] = []  # per kill: (replayed, bound)
    async with (
        Producer(kafka_bootstrap) as producer,
        Outputs.of(kafka_bootstrap, topics) as out,
        GroupOffsets.of(kafka_bootstrap, topics) as offsets,
    ):
        stream = asyncio.create_task(
            producer.send_all(topics.input, items, rate_per_s=KILL_RATE_PER_S)
        )
        for kill in range(KILLS):
            bridge = await bridges.start_assigned(env, f"killed-{kill}")
            before = len(out.records)
            await out.wait_until(
                lambda o, before=before: len(o.records) >= before + 400,
                "400 new outputs",
                60,
                bridge.output,
            )
            started = min(r.timestamp_s for r in out.records[before:])
            await asyncio.to_thread(bridge.kill)
            killed_at = time.time()
            committed = await offsets.read()
            while await out.poll(timeout_ms=500):
                pass  # everything the dead bridge wrote
            mine = out.records[before:]
            rate = len(mine) / max(killed_at - started, 0.001)
            replayed = sum(1 for r in mine if r.source[1] >= (committed[r.source[0]] or 0))
            replays.append((replayed, MAX_PENDING + rate * 2 * COMMIT_INTERVAL_MS / 1000))
        last = await bridges.start_assigned(env, "last")
        sent = await stream
        await wait_for_inputs(out, sent, offsets, 120, last.output)
        assert await asyncio.to_thread(last.stop) == 0, last.output()
        while await out.poll(timeout_ms=500):
            pass

    assert not missing(sent, out), "inputs without a record"
    for kill, (replayed, bound) in enumerate(replays):
        assert replayed <= bound * 1.1, f"kill {kill}: {replayed} replayed, bound {bound:.0f}"
    dups = duplicated(out)
    assert len(dups) <= sum(replayed for replayed, _ in replays)
    print("replayed per kill (replayed, bound):", [(r, round(b)) for r, b in replays])
