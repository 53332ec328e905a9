"""The ``make chaos`` scenarios of outages: the model server stopped and started again,
the broker frozen. Each takes the stage and fills one row of the table.

The outages share the run's model server (restarted on the same ports) and broker;
the stalls freeze a broker of their own. Full-scale numbers are the constants below;
``Stage.count`` and ``Stage.seconds`` scale them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from functools import partial
from typing import Any

import httpx

from tools.chaos_io import (
    RssPeaks,
    ScenarioError,
    Seen,
    Stream,
    alive,
    bridge_pool,
    first_output_after,
    keep_reading,
    poll_until,
    reached,
    settle,
    tail,
    wait_all,
)
from tools.chaos_kit import (
    MALFORMED_EVERY,
    RESUME_BOUND_S,
    STEADY_S,
    Kill,
    Row,
    Stage,
    account,
    commits_reached_end,
    duplicate_ranges,
    env_for,
    runs_text,
    secs,
    stop,
    topic_prefix,
    unexplained_duplicates,
    worst,
)
from tools.harness import kafka_io, processes
from tools.harness.broker import DevBroker, free_port
from tools.harness.outputs import Outputs
from tools.harness.processes import BridgeProcess, bridge_env
from tools.report import say

# -- 2. model server outages -----------------------------------------------------------------

OUTAGES_S = (5.0, 10.0, 20.0, 30.0, 60.0)
MIN_OUTAGE_S = 3.0
OUTAGE_RATE = 200.0  # events/s per protocol; a 60 s outage piles up 12,000
OUTAGE_SETTINGS = {"BRIDGE_BATCH__MAX_SIZE": "16"}  # the rest: defaults (probe backoff 2 s)
NOTICE_TIMEOUT_S = 20.0


async def outages(stage: Stage, row: Row) -> None:
    """The model server stopped and started again (same ports) under a gRPC and a REST
    bridge: no failure from the outages, no duplicates, resume within the bound."""
    count = stage.count(len(OUTAGES_S), 1)
    lengths = [stage.seconds(s, MIN_OUTAGE_S) for s in OUTAGES_S[:count]]
    row.scenario = f"model server outages x{count}"
    row.settings = dict(OUTAGE_SETTINGS)
    say(
        f"  outages of {', '.join(f'{s:g}' for s in lengths)} s, {OUTAGE_RATE:g} payments/s "
        f"per bridge (gRPC and REST)"
    )
    folder = stage.folder("outages")
    server = stage.server
    startup_s = stage.server_start_s
    planned_s = sum(lengths) + count * (startup_s + 40) + 60
    items = kafka_io.payment_items(
        int(OUTAGE_RATE * planned_s * 2), seed=202, malformed_every=MALFORMED_EVERY
    )
    rss = RssPeaks()
    resumes: list[dict[str, Any]] = []
    sides: dict[str, dict[str, Any]] = {}
    async with bridge_pool(folder, rss) as bridges, contextlib.AsyncExitStack() as stack:
        for protocol in ("grpc", "rest"):
            topics = await kafka_io.make_topics(stage.bootstrap, topic_prefix(f"out-{protocol}"))
            env = env_for(stage, topics, row.settings, protocol=protocol)
            producer = await stack.enter_async_context(kafka_io.Producer(stage.bootstrap))
            sides[protocol] = {
                "topics": topics,
                "bridge": bridges.start(env, f"bridge-{protocol}"),
                "out": await stack.enter_async_context(Outputs.of(stage.bootstrap, topics)),
                "offsets": await stack.enter_async_context(
                    kafka_io.GroupOffsets.of(stage.bootstrap, topics)
                ),
                "stream": Stream(producer, topics.input, items, OUTAGE_RATE),
            }
        both: list[BridgeProcess] = [s["bridge"] for s in sides.values()]
        explain = tail(*both)
        for bridge in both:
            await asyncio.to_thread(bridge.wait_for_log, "partitions_assigned", 60)
        for side in sides.values():
            side["stream"].start()
            side["seen"] = Seen(side["out"])
        outs = [s["out"] for s in sides.values()]

        def check() -> None:
            for side in sides.values():
                side["stream"].check()
                if not alive(side["bridge"]):
                    raise ScenarioError(f"a bridge exited\n{explain()}")

        def caught_up(marks: dict[str, int]) -> bool:
            return all(s["seen"].count() >= marks[p] for p, s in sides.items())

        def noticed(downs: dict[str, int]) -> bool:
            return all(
                len(processes.log_events(s["bridge"], "model_server_down")) > downs[p]
                for p, s in sides.items()
            )

        def served(back: float) -> bool:
            return all(
                first_output_after(s["out"], back, "result") is not None for s in sides.values()
            )

        first = dict.fromkeys(sides, 200)
        await poll_until(outs, partial(caught_up, first), "200 outputs each", 90, check)
        for n, length in enumerate(lengths):
            downs = {
                p: len(processes.log_events(s["bridge"], "model_server_down"))
                for p, s in sides.items()
            }
            stopped = time.monotonic()
            await asyncio.to_thread(server.stop)
            await poll_until(
                outs,
                partial(noticed, downs),
                "both bridges to notice the outage",
                NOTICE_TIMEOUT_S,
                check,
                explain,
            )
            # The server is unreachable until it is ready again: start it so that
            # the outage lasts about ``length`` (at least its own start time).
            await asyncio.sleep(max(0.0, stopped + length - startup_s - time.monotonic()))
            began = time.monotonic()
            await asyncio.to_thread(server.start)
            back = time.time()
            startup_s = time.monotonic() - began
            down_s = time.monotonic() - stopped
            marks = {p: len(s["stream"].sent) for p, s in sides.items()}
            with contextlib.suppress(ScenarioError):
                await poll_until(
                    outs,
                    partial(served, back),
                    "a result from each bridge",
                    60,
                    check,
                )
            measured = {p: first_output_after(s["out"], back, "result") for p, s in sides.items()}
            resumes.append({"planned_s": length, "down_s": round(down_s, 1)} | measured)
            say(
                f"  outage {n + 1}/{count}: down {down_s:.1f} s; first new result "
                + ", ".join(f"{p} {secs(v)}" for p, v in measured.items())
            )
            await poll_until(outs, partial(caught_up, marks), "catching up", 180, check)
            await keep_reading(outs, STEADY_S, check)  # flowing before the next outage
        sent = {p: await s["stream"].finish() for p, s in sides.items()}
        for p, side in sides.items():
            await wait_all(side["out"], sent[p], side["offsets"], 180, check, explain)
        for bridge in both:
            await stop(bridge, rss, row)
        finals = {}
        for p, side in sides.items():
            await settle(side["out"])
            finals[p] = await side["offsets"].read()

    for p, side in sides.items():
        part = Row(p)
        account(part, sent[p], side["out"], side["topics"])
        commits_reached_end(part, sent[p], finals[p])
        row.events += part.events
        row.missing += part.missing
        row.duplicates += part.duplicates
        row.fault_failures += part.fault_failures
        row.problems += [f"{p}: {problem}" for problem in part.problems]
        row.details[p] = part.details
        paused = {e["reason"] for e in processes.log_events(side["bridge"], "paused")}
        row.check("model server down" in paused, f"{p}: never paused for the outage ({paused})")
    row.resume_s = worst(v for r in resumes for k, v in r.items() if k in sides)
    row.resume_bound_s = RESUME_BOUND_S
    row.peak_rss_mb = rss.peak
    row.details |= {"outages": resumes, "rss": rss.by_log}


# -- 3. broker stalls ------------------------------------------------------------------------

STALLS_S = (12.0, 20.0, 30.0)
MIN_STALL_S = 10.0  # longer than the request timeout and the session, always
STALL_RATE = 1500.0  # faster than this bridge: outputs are in flight when it freezes
STALL_SETTINGS = {
    # tests/integration/test_broker_stall.py's: on Tansu the request timeout must exceed
    # the session timeout (aiokafka gives JoinGroup the request timeout as its deadline).
    "BRIDGE_BATCH__MAX_SIZE": "8",
    "BRIDGE_BATCH__MAX_PENDING": "300",
    "BRIDGE_KAFKA__REQUEST_TIMEOUT_MS": "7000",
    "BRIDGE_KAFKA__SESSION_TIMEOUT_MS": "6000",
    "BRIDGE_DELIVERY__COMMIT_INTERVAL_MS": "200",
}


async def stalls(stage: Stage, row: Row) -> None:
    """A broker of its own frozen (SIGSTOP) past the request timeout and the session, while
    a stream flows: nothing lost, duplicates within MAX_PENDING per stall plus what the
    bridge had to resend, resume within the bound, the bridge never exits."""
    count = stage.count(len(STALLS_S), 1)
    lengths = [stage.seconds(s, MIN_STALL_S) for s in STALLS_S[:count]]
    row.scenario = f"broker stalls x{count}"
    row.settings = dict(STALL_SETTINGS)
    pending = int(STALL_SETTINGS["BRIDGE_BATCH__MAX_PENDING"])
    say(
        f"  stalls of {', '.join(f'{s:g}' for s in lengths)} s, {STALL_RATE:,.0f} payments/s, "
        f"a broker of its own"
    )
    folder = stage.folder("stalls")
    rss = RssPeaks()
    stalled: list[dict[str, Any]] = []
    explaining: list[Kill] = []
    metrics_port = free_port()
    planned_s = sum(lengths) + count * 60 + 30
    items = kafka_io.payment_items(
        int(STALL_RATE * planned_s), seed=303, malformed_every=MALFORMED_EVERY
    )
    with DevBroker() as broker:
        bootstrap = broker.bootstrap_servers
        topics = await kafka_io.make_topics(bootstrap, topic_prefix("stall"))
        env = bridge_env(
            bootstrap,
            topics.names,
            stage.server,
            group=topics.group,
            **row.settings,
            BRIDGE_METRICS__PORT=str(metrics_port),
        )
        async with (
            bridge_pool(folder, rss) as bridges,
            kafka_io.Producer(bootstrap) as producer,
            Outputs.of(bootstrap, topics) as out,
            kafka_io.GroupOffsets.of(bootstrap, topics) as offsets,
        ):
            bridge = await bridges.start_assigned(env)
            explain = tail(bridge)
            seen = Seen(out)
            stream = Stream(producer, topics.input, items, STALL_RATE).start()

            def check() -> None:
                stream.check()
                if not alive(bridge):
                    raise ScenarioError(f"the bridge exited\n{explain()}")

            def wrote_after(wall: float) -> bool:
                return first_output_after(out, wall) is not None

            await poll_until([out], reached(seen, 1000), "1000 outputs", 90, check)
            for n, length in enumerate(lengths):
                committed = await offsets.read()
                sent_at_freeze = len(producer.sent)
                broker.freeze()
                try:
                    await asyncio.sleep(length)  # the fault's length, not a wait for anything
                    survived = alive(bridge)
                finally:
                    broker.thaw()
                thawed = time.time()
                thawed_mono = time.monotonic()
                if not survived:
                    raise ScenarioError(f"the bridge exited during stall {n + 1}\n{explain()}")
                with contextlib.suppress(ScenarioError):
                    await poll_until(
                        [out],
                        partial(wrote_after, thawed),
                        "a new output",
                        90,
                        check,
                    )
                resume = first_output_after(out, thawed)
                await poll_until([out], reached(seen, sent_at_freeze), "catching up", 180, check)
                caught_up = time.monotonic() - thawed_mono
                explaining.append(
                    Kill(frozenset(range(topics.input_partitions)), committed, thawed)
                )
                stalled.append({"length_s": length, "resume_s": resume, "caught_up_s": caught_up})
                say(
                    f"  stall {n + 1}/{count} ({length:g} s): first new output {secs(resume)}, "
                    f"caught up with what was produced before it in {caught_up:.1f} s"
                )
                await poll_until(
                    [out], reached(seen, len(producer.sent)), "steady again", 180, check
                )
                await keep_reading([out], STEADY_S, check)  # flowing before the next stall
            sent = await stream.finish()
            await wait_all(out, sent, offsets, 180, check, explain)
            resent = await _resent_records(metrics_port)
            await stop(bridge, rss, row)
            await settle(out)
            final = await offsets.read()

    account(row, sent, out, topics)
    commits_reached_end(row, sent, final)
    # README: a stall replays at most what the bridge held (MAX_PENDING), and duplicates
    # what the broker wrote without acknowledging (those outputs were resent).
    row.duplicate_bound = count * pending + (resent or 0)
    row.check(resent is not None, "could not read bridge_resent_records_total")
    wrong = unexplained_duplicates(out, explaining)
    row.check(
        not wrong,
        f"{len(wrong)} duplicates of work committed before a stall: "
        f"{runs_text(duplicate_ranges(out, wrong))}",
    )
    row.details["unexplained_duplicates"] = duplicate_ranges(out, wrong)
    held = {e["reason"] for e in processes.log_events(bridge, "paused")}
    row.check(
        bool(held & {"broker not taking outputs", "commits not landing"}),
        f"it never held for the broker ({held})",
    )
    row.resume_s = worst(s["resume_s"] for s in stalled)
    row.resume_bound_s = RESUME_BOUND_S
    row.peak_rss_mb = rss.peak
    row.details |= {"stalls": stalled, "resent_records": resent, "rss": rss.by_log}


async def _resent_records(port: int) -> int | None:
    """``bridge_resent_records_total`` from the bridge's /metrics."""
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith("bridge_resent_records_total"):
            return int(float(line.split()[-1]))
    return None
