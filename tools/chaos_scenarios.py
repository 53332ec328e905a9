"""The ``make chaos`` scenarios of members that die or leave, and of bad input: kill -9,
churn, fuzz. Each takes the stage and fills one row of the table.

Every scenario has its own topics (and group) on the run's broker. Full-scale numbers
are the constants below; ``Stage.count`` and ``Stage.seconds`` scale them.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from bridge.kafka.records import BRIDGE
from tools.chaos_io import (
    RssPeaks,
    ScenarioError,
    Seen,
    Stream,
    alive,
    bridge_pool,
    clock,
    first_output_after,
    kill,
    poll_until,
    reached,
    settle,
    tail,
    wait_all,
)
from tools.chaos_kit import (
    MALFORMED_EVERY,
    RATE_SLACK,
    Kill,
    Row,
    Stage,
    account,
    commits_reached_end,
    describe_kills,
    duplicate_ranges,
    env_for,
    fences_in,
    loosely_unexplained,
    runs_text,
    stop,
    topic_prefix,
    unexplained_duplicates,
    worst,
)
from tools.harness import kafka_io, processes
from tools.harness.batches import Entry, build, with_header_key
from tools.harness.fuzz import MAX_EVENT_BYTES, SEED, fuzz_items, valid
from tools.harness.outputs import Outputs
from tools.harness.processes import BridgeProcess
from tools.report import say

# -- 1. kill -9 ------------------------------------------------------------------------------

KILL_EVENTS = 100_000
KILLS = 10
KILL_RATE = 2000.0  # events/s produced; the bridge is behind after every restart
KILL_SETTINGS = {
    "BRIDGE_BATCH__MAX_SIZE": "16",
    "BRIDGE_BATCH__MAX_PENDING": "1000",
    "BRIDGE_DELIVERY__COMMIT_INTERVAL_MS": "500",
    # A killed member never leaves the group: its session has to expire first.
    "BRIDGE_KAFKA__SESSION_TIMEOUT_MS": "6000",
}
MIN_WRITTEN_BEFORE_KILL = 200


async def kill9(stage: Stage, row: Row) -> None:
    """One bridge at a time, killed at spread-out points and restarted; every replay must
    be within MAX_PENDING + two commit intervals of that bridge's output, nothing lost."""
    events = stage.count(KILL_EVENTS, 3000)
    kills = stage.count(KILLS, 1)
    row.scenario = f"kill -9 x{kills}"
    row.settings = dict(KILL_SETTINGS)
    pending = int(KILL_SETTINGS["BRIDGE_BATCH__MAX_PENDING"])
    interval_s = int(KILL_SETTINGS["BRIDGE_DELIVERY__COMMIT_INTERVAL_MS"]) / 1000
    say(f"  {events:,} payments at {KILL_RATE:,.0f}/s, {kills} SIGKILLs")
    folder = stage.folder("kill9")
    topics = await kafka_io.make_topics(stage.bootstrap, topic_prefix("kill9"))
    env = env_for(stage, topics, row.settings)
    items = kafka_io.payment_items(events, seed=101, malformed_every=MALFORMED_EVERY)
    rng = random.Random(1009)
    rss = RssPeaks()
    per_kill: list[dict[str, Any]] = []
    dead: list[Kill] = []
    restarts: list[float | None] = []
    async with (
        bridge_pool(folder, rss) as bridges,
        kafka_io.Producer(stage.bootstrap) as producer,
        Outputs.of(stage.bootstrap, topics) as out,
        kafka_io.GroupOffsets.of(stage.bootstrap, topics) as offsets,
    ):
        seen = Seen(out)
        stream = Stream(producer, topics.input, items, KILL_RATE).start()
        for k in range(kills):
            started = time.time()
            bridge = await bridges.start_assigned(env, f"kill-{k}")
            before = len(out.records)
            # Spread out, with jitter: the kills land at different phases of the work.
            target = int(events * (k + 1 + rng.uniform(-0.4, 0.4)) / (kills + 1))
            await poll_until(
                [out],
                reached(seen, target, before + MIN_WRITTEN_BEFORE_KILL),
                f"{target:,} inputs done before kill {k}",
                180,
                stream.check,
                tail(bridge),
            )
            killed_at = await kill(bridge, rss)
            committed = await offsets.read()
            await settle(out)  # everything the dead bridge wrote
            mine = out.records[before:]
            restarts.append(first_output_after(out, started))
            first = min(r.timestamp_s for r in mine)
            rate = len(mine) / max(killed_at - first, 0.001)
            replayed = sum(1 for r in mine if r.source[1] >= (committed[r.source[0]] or 0))
            bound = pending + rate * 2 * interval_s
            per_kill.append(
                {
                    "at_inputs_done": seen.count(),
                    "written": len(mine),
                    "output_rate": round(rate),
                    "replayed": replayed,
                    "bound": round(bound),
                    "committed": committed,
                }
            )
            dead.append(Kill(frozenset(range(topics.input_partitions)), committed, killed_at))
            say(
                f"  kill {k + 1}/{kills} at {seen.count():,} inputs done: wrote {len(mine):,} "
                f"at {rate:,.0f}/s, {replayed:,} to replay (bound {bound:,.0f})"
            )
        started = time.time()
        last = await bridges.start_assigned(env, "last")
        sent = await stream.wait()
        await wait_all(out, sent, offsets, 300, explain=tail(last))
        restarts.append(first_output_after(out, started))
        await stop(last, rss, row)
        await settle(out)
        final = await offsets.read()

    account(row, sent, out, topics)
    commits_reached_end(row, sent, final)
    row.duplicate_bound = int(sum(k["bound"] for k in per_kill) * RATE_SLACK)
    for k, measured in enumerate(per_kill):
        row.check(
            measured["replayed"] <= measured["bound"] * RATE_SLACK,
            f"kill {k + 1}: {measured['replayed']} replayed, bound {measured['bound']}",
        )
    replays = sum(k["replayed"] for k in per_kill)
    row.check(row.duplicates <= replays, f"{row.duplicates} duplicates, {replays} replayed")
    wrong = unexplained_duplicates(out, dead)
    row.check(
        not wrong,
        f"{len(wrong)} duplicates no kill explains: {runs_text(duplicate_ranges(out, wrong))}",
    )
    row.details["unexplained_duplicates"] = duplicate_ranges(out, wrong)
    # From a restart to its first output: the dead member's session expiring and the
    # group's join wait, not a bridge delay; shown, no target.
    row.resume_s = worst(restarts)
    row.peak_rss_mb = rss.peak
    row.details |= {"kills": per_kill, "restart_to_first_output_s": restarts, "rss": rss.by_log}


# -- 4. churn --------------------------------------------------------------------------------

CHURN_STOPS = 48
# After a long churn the dev broker has been seen busy (1.5 cores) for minutes while the
# remaining members got almost no records; the bound says how long that may take.
FINISH_TIMEOUT_S = 480.0
STOP_EVERY_S = 2.5
CHURN_RATE = 600.0
KILL_EVERY = 4  # every fourth stop is a SIGKILL
CHURN_SETTINGS = {
    "BRIDGE_BATCH__MAX_SIZE": "16",
    "BRIDGE_BATCH__MAX_PENDING": "400",
    "BRIDGE_DELIVERY__COMMIT_INTERVAL_MS": "200",
    "BRIDGE_KAFKA__SESSION_TIMEOUT_MS": "6000",
}


async def churn(stage: Stage, row: Row) -> None:
    """Three bridges in a group; every few seconds one stops (SIGTERM, every fourth SIGKILL)
    and a new one starts. Only a SIGKILL may explain a duplicate; nothing lost."""
    stops = stage.count(CHURN_STOPS, KILL_EVERY)
    row.scenario = f"churn x{stops} ({stops // KILL_EVERY} SIGKILL)"
    row.settings = dict(CHURN_SETTINGS)
    say(
        f"  3 bridges, one replaced every {STOP_EVERY_S:g} s, {stops} times (every "
        f"{KILL_EVERY}th by SIGKILL), {CHURN_RATE:g} payments/s, 6 partitions"
    )
    folder = stage.folder("churn")
    topics = await kafka_io.make_topics(
        stage.bootstrap, topic_prefix("churn"), inputs=6, results=3, failures=1
    )
    env = env_for(stage, topics, row.settings)
    items = kafka_io.payment_items(
        int(CHURN_RATE * (stops * STOP_EVERY_S * 3 + 60)), seed=404, malformed_every=40
    )
    rss = RssPeaks()
    kills: list[Kill] = []
    timeline: list[dict[str, Any]] = []
    async with (
        bridge_pool(folder, rss) as bridges,
        kafka_io.Producer(stage.bootstrap) as producer,
        Outputs.of(stage.bootstrap, topics) as out,
        kafka_io.GroupOffsets.of(stage.bootstrap, topics) as offsets,
    ):
        live: list[BridgeProcess] = [bridges.start(env, f"m{i}") for i in range(3)]
        for bridge in live:
            await asyncio.to_thread(bridge.wait_for_log, "partitions_assigned", 60)
        stream = Stream(producer, topics.input, items, CHURN_RATE).start()
        for n in range(stops):
            await asyncio.sleep(STOP_EVERY_S)  # the churn's pace, not a wait for anything
            stream.check()
            await out.poll(timeout_ms=10)
            victim = live.pop(0)
            signalled = time.time()
            if n % KILL_EVERY == KILL_EVERY - 1:
                owned = frozenset(processes.assigned(victim) or ())
                killed_at = await kill(victim, rss)
                kills.append(Kill(owned, await offsets.read(), killed_at))
            else:
                await stop(victim, rss, row)
            timeline.append(
                {
                    "bridge": victim.log_path.stem,
                    "signal": "SIGKILL" if n % KILL_EVERY == KILL_EVERY - 1 else "SIGTERM",
                    "at": clock(signalled),
                    "took_s": round(time.time() - signalled, 2),
                }
            )
            live.append(bridges.start(env, f"m{len(bridges.started)}"))
        sent = await stream.finish()
        say(f"  churn over: {len(sent):,} produced, waiting for the group to finish them")
        over = time.monotonic()
        await wait_all(out, sent, offsets, FINISH_TIMEOUT_S, explain=tail(*live))
        row.details["finish_after_churn_s"] = round(time.monotonic() - over, 1)
        say(f"  the group finished {row.details['finish_after_churn_s']:.0f} s after the churn")
        for bridge in live:
            await stop(bridge, rss, row)
        await settle(out)
        final = await offsets.read()
        stopped = [e for b in bridges.started for e in processes.log_events(b, "stopped")]

    account(row, sent, out, topics)
    commits_reached_end(row, sent, final)
    # The dev broker may leave a member out of a new generation (see chaos_kit.Fence).
    window_s = 3 * int(CHURN_SETTINGS["BRIDGE_DELIVERY__COMMIT_INTERVAL_MS"]) / 1000 + 1.0
    fences = fences_in((processes.log_events(b) for b in bridges.started), window_s)
    wrong = unexplained_duplicates(out, kills, fences)
    row.check(
        not wrong,
        f"{len(wrong)} duplicates no SIGKILL or fenced member explains (a graceful stop or "
        f"its rebalance caused them): {runs_text(duplicate_ranges(out, wrong))}",
    )
    row.details["fences"] = [
        {"at": clock(f.at), "partitions": sorted(f.partitions)} for f in fences
    ]
    row.details["explained_by_kills_alone"] = row.duplicates - len(
        unexplained_duplicates(out, kills)
    )
    row.details["unexplained_duplicates"] = duplicate_ranges(out, wrong)
    row.details["unexplained_by_test_churn_rule_alone"] = len(loosely_unexplained(out, kills))
    row.details["kills"] = describe_kills(kills)
    row.details["stops"] = timeline
    row.duplicate_bound = row.duplicates - len(wrong)  # the explained ones
    uncommitted = [e for e in stopped if not e["committed"] and not (e.get("fenced") and fences)]
    row.check(not uncommitted, f"{len(uncommitted)} SIGTERM stops did not commit at the end")
    row.peak_rss_mb = rss.peak
    row.details |= {
        "sigkills": len(kills),
        "bridges_started": len(stopped) + len(kills),
        "rss": rss.by_log,
    }


# -- 5. fuzz ---------------------------------------------------------------------------------

FUZZ_EVENTS = 100_000
RAW_BATCHES = 100  # broken batches, one after each segment
FUZZ_SETTINGS = {
    "BRIDGE_BATCH__MAX_SIZE": "16",
    "BRIDGE_MODEL__MAX_EVENT_BYTES": str(MAX_EVENT_BYTES),
    "BRIDGE_MODEL__COPY_FIELDS": '["id", "meta"]',
}


async def fuzz(stage: Stage, row: Row) -> None:
    """The malformed kinds of ``tools.harness.fuzz`` (test_fuzz.py's), through aiokafka and
    librdkafka (lz4), with broken raw batches (non-UTF-8 header keys, CRC mismatches) in between:
    one record each, the reason the input earned, never internal_error, never an exit."""
    events = stage.count(FUZZ_EVENTS, 2000)
    raws = stage.count(RAW_BATCHES, 10)
    row.scenario = f"fuzz ({raws} broken batches)"
    row.settings = dict(FUZZ_SETTINGS)
    say(f"  {events:,} fuzzed inputs in {raws} segments, a broken batch after each")
    folder = stage.folder("fuzz")
    rng = random.Random(SEED)
    items = fuzz_items(rng, events)
    topics = await kafka_io.make_topics(stage.bootstrap, topic_prefix("fuzz"))
    env = env_for(stage, topics, row.settings)
    rss = RssPeaks()
    sent: list[Any] = []
    async with (
        bridge_pool(folder, rss) as bridges,
        kafka_io.Producer(stage.bootstrap) as producer,
        Outputs.of(stage.bootstrap, topics) as out,
        kafka_io.GroupOffsets.of(stage.bootstrap, topics) as offsets,
    ):
        bridge = await bridges.start_assigned(env)
        explain = tail(bridge)

        def check() -> None:
            if not alive(bridge):
                raise ScenarioError(f"the bridge exited\n{explain()}")

        size = -(-events // raws)
        for n in range(raws):
            segment = items[n * size : (n + 1) * size]
            if n % 2 == 0:
                sent += await producer.send_all(topics.input, segment)
            else:
                sent += await asyncio.to_thread(
                    kafka_io.produce_with_librdkafka, stage.bootstrap, topics.input, segment, "lz4"
                )
            sent += await _broken_batch(stage.bootstrap, topics.input, n, rng)
            check()
            await out.poll(timeout_ms=10)
        await wait_all(out, sent, offsets, 300, check, explain)
        await stop(bridge, rss, row)
        await settle(out)
        final = await offsets.read()

    account(row, sent, out, topics)
    commits_reached_end(row, sent, final)
    internal = processes.log_events(bridge, "internal_error")
    row.check(not internal, f"{len(internal)} internal_error log lines")
    fatal = processes.log_events(bridge, "stopped_on_error") + processes.log_events(
        bridge, "task_failed"
    )
    row.check(not fatal, f"the bridge logged {[e['event'] for e in fatal]}")
    reasons: dict[str, int] = {}
    for record in out.failures:
        reason = str(record.header(BRIDGE + "reason"))
        reasons[reason] = reasons.get(reason, 0) + 1
    row.peak_rss_mb = rss.peak
    row.details |= {"failure_reasons": reasons, "rss": rss.by_log}


async def _broken_batch(
    bootstrap: str, topic: str, n: int, rng: random.Random
) -> list[kafka_io.Sent]:
    """Three valid payments in one raw batch, broken as test_fuzz.py breaks them: even n,
    the middle record's header key is not UTF-8; odd n, the CRC no longer matches."""
    partition = n % 3
    values = [valid(rng, k)[0] for k in range(3)]
    keys = [f"raw-{n}-{k}".encode() for k in range(3)]
    entries: list[Entry] = [
        (key, value, [("h", b"1")]) for key, value in zip(keys, values, strict=True)
    ]
    if n % 2 == 0:
        entries[1] = (keys[1], values[1], [("XX", b"1")])
        raw = with_header_key(build(entries), b"XX", b"\xc3\x28")
        expected = ["result", "bad_header", "result"]
    else:
        raw = build(entries)
        at = raw.index(b'"amount"')
        raw[at + 1] ^= 0x20  # "amount" -> "Amount": the CRC no longer matches
        expected = ["corrupt_batch"] * 3
    base = await kafka_io.produce_raw_batch(bootstrap, topic, partition, bytes(raw))
    return [
        kafka_io.Sent(partition, base + k, kafka_io.Item(keys[k], values[k], (), expected[k]))
        for k in range(3)
    ]
