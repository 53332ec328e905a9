"""``make demo``: the whole pipeline on this machine, as an A/B test, with a summary.

Starts the dev broker, the local model server (the sidecar's configs: both fraud
versions loaded, labels ``stable`` -> 1 and ``canary`` -> 2, server-side batching) and
the bridge as a process (micro-batched, routes ``stable`` 90 / ``canary`` 10, sticky by
card). Produces synthetic payments keyed by card at a steady rate, with a few
malformed ones, and shows progress with the share each version served. Halfway
through it promotes the canary: label ``stable`` moves from version 1 to version 2 the
safe two-step way (``bridge.ops.labels.move_label``), on the model server's copy of
``serving/models.config`` in ``--out`` (the committed file is never written). Then it
waits until every event has its record, stops the bridge with SIGTERM and prints what
happened: the totals, latencies, a table per served version and per route x version
(events, latency p50/p99, share flagged) and the time of the move. Writes
``summary.json`` and ``ab_test.png`` (traffic share and latency per version over time)
and keeps the logs in ``--out``. Exit 0 only if every event got exactly one record of
the expected kind: no valid payment may fail, the label move included.

    python -m tools.demo [--rate 800] [--duration 12] [--events N] [--protocol grpc|rest]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bridge.ops.errors import CommandError
from bridge.ops.labels import LabelMove, move_label, read_models_config
from bridge.ops.models_config import ModelsConfigError, find_model
from bridge.ops.output import table
from tools import report
from tools.chart import AbChart, VersionSeries, write_ab_chart
from tools.harness.broker import DevBroker, free_port
from tools.harness.outputs import Output, Outputs, SourceKey
from tools.harness.payments import payments
from tools.harness.processes import REPO, BridgeProcess, ModelServer, bridge_env, create_topics_sync
from tools.harness.scrape import LagWatch
from tools.report import say

TOPICS = ("payments", "payments.scored", "payments.failed")
PARTITIONS = 3
ROUTES = {"stable": 90, "canary": 10}
MOVED_LABEL = "stable"  # promoting the canary: stable moves to canary's version
PROMOTED_VERSION = 2
MOVE_TIMEOUT_S = 30.0
MALFORMED_EVERY = 250
RATE = 800.0
DURATION_S = 12.0
BIN_S = 1.0
CHART = "ab_test.png"
# After the last record, how long the consumer lag may take to read 0: the commit
# interval (0.5 s) plus the lag reader's period (2 s), with room for a slow machine.
LAG_ZERO_TIMEOUT_S = 20.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.demo",
        description="Run broker, model server and bridge locally; score synthetic payments.",
    )
    parser.add_argument(
        "--events", type=int, default=None, help="payments to produce (default: rate x duration)"
    )
    parser.add_argument("--protocol", choices=("grpc", "rest"), default="grpc")
    parser.add_argument(
        "--batch-size", type=int, default=64, help="BRIDGE_BATCH__MAX_SIZE (1 = per event)"
    )
    parser.add_argument("--max-wait-ms", type=int, default=5, help="BRIDGE_BATCH__MAX_WAIT_MS")
    parser.add_argument(
        "--rate",
        type=float,
        default=RATE,
        help="events/s to produce at, steadily (0: as fast as possible; needs --events)",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=DURATION_S,
        help="seconds to produce for at --rate (sets --events when it is not given)",
    )
    parser.add_argument(
        "--move-at",
        type=float,
        default=0.5,
        help="move the label when this share of the events is produced (0 < x < 1)",
    )
    parser.add_argument(
        "--malformed-every", type=int, default=MALFORMED_EVERY, help="one malformed per N (0: none)"
    )
    parser.add_argument(
        "--timeout", type=float, default=180.0, help="seconds to wait for every record"
    )
    parser.add_argument("--out", type=Path, default=REPO / "out" / "demo", help="output folder")
    args = parser.parse_args(argv)
    if args.rate < 0 or args.duration <= 0:
        parser.error("--rate must be >= 0 and --duration > 0")
    if args.events is None:
        if args.rate == 0:
            parser.error("--rate 0 (as fast as possible) needs --events")
        args.events = max(1, round(args.rate * args.duration))
    if args.events < 1 or args.batch_size < 1:
        parser.error("--events and --batch-size must be at least 1")
    if not 0 < args.move_at < 1:
        parser.error("--move-at must be between 0 and 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report.check_models()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for name in ("bridge.log", "broker.log", "summary.json", CHART, report.LOCAL_MODELS_CONFIG):
        (out / name).unlink(missing_ok=True)
    report.unwind_on_sigterm()
    broker: DevBroker | None = None
    server: ModelServer | None = None
    bridge: BridgeProcess | None = None
    try:
        say("starting the dev broker (Tansu) ...")
        broker = DevBroker().start()
        say(
            f"  {broker.bootstrap_servers}; starting the model server "
            "(TensorFlow import and model load take a while) ..."
        )
        server = report.model_server(out)  # writes its models.config copy into out
        models_config = out / report.LOCAL_MODELS_CONFIG
        started = time.monotonic()
        server.start()
        say(
            f"  gRPC {server.grpc_target}, REST {server.rest_url}, "
            f"ready in {time.monotonic() - started:.1f} s; labels {_labels(models_config)} "
            f"from {models_config}"
        )
        create_topics_sync(broker.bootstrap_servers, TOPICS, PARTITIONS)
        env = bridge_env(
            broker.bootstrap_servers,
            TOPICS,
            server,
            model=report.MODEL,
            protocol=args.protocol,
            group="demo-bridge",
            BRIDGE_MODEL__ROUTES=orjson.dumps(ROUTES).decode(),
            BRIDGE_MODEL__COPY_FIELDS='["id"]',
            BRIDGE_BATCH__MAX_SIZE=str(args.batch_size),
            BRIDGE_BATCH__MAX_WAIT_MS=str(args.max_wait_ms),
            BRIDGE_METRICS__PORT=str(metrics_port := free_port()),
        )
        bridge = BridgeProcess(env, out / "bridge.log")
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        say(
            f"starting the bridge ({args.protocol}, batch {args.batch_size}, "
            f"routes {_routes_text()}) ..."
        )
        bridge.start()
        say(f"  metrics: {metrics_url} (health: /livez, /readyz)")
        bridge.wait_for_log("partitions_assigned")
        pace = f" at {args.rate:g}/s (~{args.events / args.rate:.1f} s)" if args.rate else ""
        say(
            f"  assigned {PARTITIONS} partitions; producing {args.events} payments{pace}; "
            f"label {MOVED_LABEL} moves to version {PROMOTED_VERSION} after "
            f"{_move_index(args)} of them"
        )
        summary = asyncio.run(
            _run(
                args,
                broker.bootstrap_servers,
                bridge,
                server.grpc_target,
                models_config,
                LagWatch(metrics_url),
            )
        )
    except KeyboardInterrupt:
        say("interrupted; stopping everything")
        return 130
    except (RuntimeError, TimeoutError) as exc:
        say(f"demo failed: {exc}")
        return 1
    finally:
        if bridge is not None:
            bridge.stop()
        if server is not None:
            server.stop()
        if broker is not None:
            with contextlib.suppress(OSError, ValueError):
                (out / "broker.log").write_text(broker.output())
            broker.stop()
    summary["logs"] = {name: str(out / name) for name in ("bridge.log", "server.log", "broker.log")}
    summary["models_config"] = str(models_config)
    chart = _write_chart(summary, out / CHART)
    summary["chart"] = str(chart) if chart is not None else None
    report.write_json(out / "summary.json", summary)
    print_summary(summary, out)
    if summary["ok"]:
        return 0
    say("FAILED: " + "; ".join(summary["problems"]))
    return 1


def _move_index(args: argparse.Namespace) -> int:
    """The label moves once this many events were produced."""
    events = int(args.events)
    return max(1, min(events, round(events * float(args.move_at))))


def _routes_text() -> str:
    return " / ".join(f"{target} {weight}" for target, weight in ROUTES.items())


def _labels(models_config: Path) -> dict[str, int]:
    """The model's version labels as the models.config says."""
    try:
        _, config = read_models_config(models_config)
        return dict(sorted(find_model(config, report.MODEL).version_labels.items()))
    except (CommandError, ModelsConfigError):
        return {}


@dataclass(slots=True)
class Move:
    """The label move in the middle of the run; times are wall-clock seconds."""

    label: str
    to_version: int
    from_version: int | None
    at_event: int
    started: float | None = None
    done: float | None = None
    said: list[str] = field(default_factory=list)
    error: str | None = None


async def _run(
    args: argparse.Namespace,
    bootstrap: str,
    bridge: BridgeProcess,
    grpc_target: str,
    models_config: Path,
    lag: LagWatch,
) -> dict[str, Any]:
    source, results, failures = TOPICS
    # A generator, not a list: orjson's output bytes hold a few KiB each while alive.
    events = payments(args.events, malformed_every=args.malformed_every)
    reader = (await report.reader(bootstrap, results, failures).start()).follow()
    kafka = report.producer(bootstrap)
    await kafka.start()
    move = Move(
        MOVED_LABEL,
        PROMOTED_VERSION,
        _labels(models_config).get(MOVED_LABEL),
        _move_index(args),
    )
    produced = 0
    mover: asyncio.Task[None] | None = None
    first_produce = time.time()

    def on_sent(count: int) -> None:
        nonlocal produced, mover
        produced = count
        if count >= move.at_event and mover is None:
            # A task: production goes on at its pace while the label moves.
            mover = asyncio.create_task(
                _move(move, grpc_target, models_config, first_produce), name="label-move"
            )

    progress = asyncio.create_task(_progress(reader, lambda: produced, args.events, first_produce))
    watching = asyncio.create_task(lag.run(), name="lag-watch")
    lag_zero_after: float | None = None
    try:
        sent = await report.produce(kafka, source, events, rate=args.rate, on_sent=on_sent)
        if mover is not None:
            await mover
        deadline = time.monotonic() + args.timeout
        complete = False
        while not complete and time.monotonic() < deadline and _alive(bridge):
            complete = await reader.wait_for(len(sent), min(1.0, deadline - time.monotonic()))
        progress.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await progress
        _progress_line(reader, produced, args.events, first_produce, None, [])
        if not _alive(bridge):
            say("  the bridge exited before every event had a record (see bridge.log)")
        elif not complete:
            say(f"  timed out after {args.timeout:.0f} s waiting for records")
        else:
            watching.cancel()
            lag_zero_after = await lag.wait_for_zero(LAG_ZERO_TIMEOUT_S)
            say(
                f"  consumer lag: peak {lag.peak:.0f}, "
                + (
                    f"0 again {lag_zero_after:.1f} s after the last record"
                    if lag_zero_after is not None
                    else f"still {lag.last} after {LAG_ZERO_TIMEOUT_S:.0f} s"
                )
            )
        say("stopping the bridge (SIGTERM) ...")
        exit_code = await asyncio.to_thread(bridge.stop)
        await reader.settle()
    finally:
        progress.cancel()
        watching.cancel()
        if mover is not None and not mover.done():
            mover.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await mover
        await kafka.stop()
        await reader.stop()
    summary = summarize(args, sent, reader.records, first_produce, exit_code, bridge, move)
    summary["lag"] = {
        "metric": "bridge_consumer_lag, summed over the partitions, read every second",
        "peak": lag.peak,
        "peak_oldest_in_flight_s": round(lag.peak_oldest_s, 3),
        "final": lag.last,
        "zero_after_last_record_s": None if lag_zero_after is None else round(lag_zero_after, 2),
        "scrape_error": lag.error,
    }
    if lag_zero_after is None:
        summary["problems"].append(
            f"the consumer lag did not return to 0 (last read: {lag.last}; "
            f"scrape error: {lag.error or 'none'})"
        )
        summary["ok"] = False
    return summary


async def _move(move: Move, grpc_target: str, models_config: Path, t0: float) -> None:
    """Promote the canary: ``move_label`` on the server's models.config copy."""

    def said(line: str) -> None:
        move.said.append(line)
        say(f"  [{time.time() - t0:5.1f} s]   {line}")

    move.started = time.time()
    say(
        f"  [{move.started - t0:5.1f} s] promoting the canary after {move.at_event} events: "
        f"label {move.label} {_version_text(move.from_version)} -> v{move.to_version} "
        f"(move_label, rewrites {models_config})"
    )
    try:
        await move_label(
            LabelMove(
                report.MODEL,
                move.label,
                move.to_version,
                models_config,
                grpc_target,
                MOVE_TIMEOUT_S,
            ),
            said,
        )
    except (CommandError, OSError) as exc:
        move.error = exc.message if isinstance(exc, CommandError) else str(exc)
        say(f"  [{time.time() - t0:5.1f} s] the label move FAILED: {move.error}")
        return
    move.done = time.time()
    say(
        f"  [{move.done - t0:5.1f} s] label {move.label} -> v{move.to_version} done "
        f"(took {move.done - move.started:.2f} s); from now on every route serves "
        f"v{move.to_version}"
    )


def _version_text(version: int | None) -> str:
    return "(unset)" if version is None else f"v{version}"


def _alive(bridge: BridgeProcess) -> bool:
    return bridge.process is not None and bridge.process.poll() is None


async def _progress(reader: Outputs, produced: Any, total: int, started: float) -> None:
    last = 0
    while True:
        await asyncio.sleep(1.0)
        count = reader.count
        _progress_line(reader, produced(), total, started, count - last, reader.records[last:count])
        last = count


def _progress_line(
    reader: Outputs,
    produced: int,
    total: int,
    started: float,
    per_s: int | None,
    recent: Sequence[Output],
) -> None:
    say(
        f"  [{time.time() - started:5.1f} s] produced {produced:>6}/{total}  "
        f"results {len(reader.results):>6}  failures {len(reader.failures):>4}  "
        + ("done" if per_s is None else f"{per_s:>6} records/s" + _served(recent))
    )


def _served(outputs: Sequence[Output]) -> str:
    """The share of each version among these results, e.g. ``  served v1 90% v2 10%``."""
    versions = Counter(_version_key(o) for o in outputs if o.kind == "result")
    total = sum(versions.values())
    if not total:
        return ""
    shares = "  ".join(f"{_version_name(v)} {versions[v] / total:4.0%}" for v in _ordered(versions))
    return f"  served {shares}"


def _version_key(output: Output) -> str:
    return "unknown" if output.version is None else str(output.version)


def _version_name(key: str) -> str:
    return f"v{key}" if key.isdigit() else key


def _ordered(keys: Iterable[str]) -> list[str]:
    """Version keys in numeric order, ``unknown`` last."""
    return sorted(set(keys), key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else 0, k))


def summarize(
    args: argparse.Namespace,
    sent: dict[SourceKey, report.Sent],
    outputs: list[Output],
    first_produce: float,
    exit_code: int | None,
    bridge: BridgeProcess,
    move: Move,
) -> dict[str, Any]:
    accounting = report.account(sent, outputs)
    results = [o for o in outputs if o.kind == "result"]
    failures = [o for o in outputs if o.kind == "failure"]
    malformed = Counter(s.expected for s in sent.values() if s.expected != "result")
    by_reason = Counter(o.reason or "?" for o in failures)
    versions = Counter(_version_key(o) for o in results)
    flagged = sum(1 for o in results if o.flagged)
    last_read = max((o.read_at for o in outputs), default=first_produce)
    span = last_read - first_produce
    e2e = [o.read_at * 1000 - sent[o.source].timestamp_ms for o in results if o.source in sent]
    problems = accounting.problems()
    if exit_code != 0:
        problems.append(f"the bridge exited with {exit_code} (see bridge.log)")
    problems.extend(_move_problems(move, sent, failures, results, first_produce))
    stopped = report.stopped_counts(bridge)
    return {
        "ok": not problems,
        "problems": problems,
        "config": {
            "events": args.events,
            "protocol": args.protocol,
            "batch_size": args.batch_size,
            "max_wait_ms": args.max_wait_ms,
            "rate": args.rate or None,
            "routes": ROUTES,
            "move_at": args.move_at,
            "partitions": PARTITIONS,
            "topics": dict(zip(("input", "results", "failures"), TOPICS, strict=True)),
            "broker": "Tansu dev broker (memory storage)",
            "cpus": os.cpu_count(),
        },
        "events": len(sent),
        "malformed_produced": dict(sorted(malformed.items())),
        "outputs": len(outputs),
        "results": len(results),
        "failures": {"total": len(failures), "by_reason": dict(sorted(by_reason.items()))},
        "exactly_one_record_per_event": accounting.ok,
        "versions": dict(sorted(versions.items())),
        "throughput": {
            "events_per_s": round(len(sent) / span, 1) if span > 0 else None,
            "seconds": round(span, 3),
            "window": "first input produced -> last output read",
        },
        "latency_ms": {
            "end_to_end": report.distribution(e2e),
            "bridge_ms": report.distribution(o.timings.get("bridge_ms", 0.0) for o in results),
            "model_ms": report.distribution(o.timings.get("model_ms", 0.0) for o in results),
            "queued_ms": report.distribution(o.timings.get("queued_ms", 0.0) for o in results),
        },
        "flagged": {
            "count": flagged,
            "share": round(flagged / len(results), 5) if results else None,
        },
        "label_move": _move_summary(move, sent, results, first_produce),
        "ab": _ab(sent, results, first_produce),
        "bridge": {"exit_code": exit_code, "stopped": stopped},
    }


def _since(wall: float | None, t0: float) -> float | None:
    return None if wall is None else round(wall - t0, 3)


def _sent_after_move(
    move: Move, sent: dict[SourceKey, report.Sent], results: Sequence[Output]
) -> list[Output]:
    """Results of events whose send began after the move was done (the bridge cannot
    have fetched them before it; CreateTime is in whole ms, hence the margin)."""
    if move.done is None:
        return []
    after_ms = move.done * 1000 + 2
    return [o for o in results if o.source in sent and sent[o.source].timestamp_ms > after_ms]


def _move_summary(
    move: Move,
    sent: dict[SourceKey, report.Sent],
    results: Sequence[Output],
    t0: float,
) -> dict[str, Any]:
    after = _sent_after_move(move, sent, results)
    return {
        "label": move.label,
        "from_version": move.from_version,
        "to_version": move.to_version,
        "at_event": move.at_event,
        "started_s": _since(move.started, t0),
        "done_s": _since(move.done, t0),
        "took_s": None
        if move.started is None or move.done is None
        else round(move.done - move.started, 3),
        "ok": move.done is not None and move.error is None,
        "error": move.error,
        "said": move.said,
        "results_sent_after": len(after),
        "versions_sent_after": dict(sorted(Counter(_version_key(o) for o in after).items())),
        "clock": "seconds since the first payment was produced",
    }


def _move_problems(
    move: Move,
    sent: dict[SourceKey, report.Sent],
    failures: Sequence[Output],
    results: Sequence[Output],
    t0: float,
) -> list[str]:
    problems = []
    if move.error is not None:
        problems.append(f"the label move failed: {move.error}")
    elif move.done is None:
        problems.append("the label move did not run")
    unexpected = [o for o in failures if o.source in sent and sent[o.source].expected == "result"]
    if unexpected:
        reasons = Counter(o.reason or "?" for o in unexpected)
        times = sorted(sent[o.source].timestamp_ms / 1000 - t0 for o in unexpected)
        window = (
            f"the label move ran {move.started - t0:.2f}-{move.done - t0:.2f} s"
            if move.started is not None and move.done is not None
            else "the label move did not complete"
        )
        problems.append(
            f"{len(unexpected)} valid payments failed instead of getting a result "
            f"({', '.join(f'{k} {v}' for k, v in sorted(reasons.items()))}), sent between "
            f"{times[0]:.2f} s and {times[-1]:.2f} s; {window} (see bridge.log)"
        )
    stale = [o for o in _sent_after_move(move, sent, results) if o.version != move.to_version]
    if stale:
        served = Counter(_version_key(o) for o in stale)
        problems.append(
            f"{len(stale)} events sent after the label move was done were not served by "
            f"v{move.to_version}: {dict(sorted(served.items()))}"
        )
    return problems


def _group(items: Sequence[tuple[Output, float]], total: int) -> dict[str, Any]:
    """Events, share of ``total``, latency and flagged share of one group of results."""
    flagged = sum(1 for output, _ in items if output.flagged)
    return {
        "events": len(items),
        "share": round(len(items) / total, 5) if total else None,
        "latency_ms": {
            "end_to_end": report.distribution(e2e for _, e2e in items),
            "bridge_ms": report.distribution(o.timings.get("bridge_ms", 0.0) for o, _ in items),
        },
        "flagged": {
            "count": flagged,
            "share": round(flagged / len(items), 5) if items else None,
        },
    }


def _median(values: list[float]) -> float | None:
    return round(report.percentile(sorted(values), 50), 3) if values else None


def _ab(sent: dict[SourceKey, report.Sent], results: Sequence[Output], t0: float) -> dict[str, Any]:
    """Per served version, per route x version, and per second of send time."""
    scored = [
        (o, o.read_at * 1000 - sent[o.source].timestamp_ms) for o in results if o.source in sent
    ]
    by_version: dict[str, list[tuple[Output, float]]] = {}
    by_route: dict[str, dict[str, list[tuple[Output, float]]]] = {}
    for item in scored:
        key = _version_key(item[0])
        by_version.setdefault(key, []).append(item)
        by_route.setdefault(item[0].route or "?", {}).setdefault(key, []).append(item)
    total = len(scored)

    bins = 1 + max(
        (int((sent[o.source].timestamp_ms / 1000 - t0) // BIN_S) for o, _ in scored), default=0
    )
    binned: dict[str, list[list[tuple[Output, float]]]] = {
        key: [[] for _ in range(bins)] for key in by_version
    }
    for item in scored:
        index = max(0, int((sent[item[0].source].timestamp_ms / 1000 - t0) // BIN_S))
        binned[_version_key(item[0])][index].append(item)
    timeline = {
        "bin_s": BIN_S,
        "starts": [round(i * BIN_S, 3) for i in range(bins)],
        "clock": "input send time (CreateTime), seconds since the first payment was produced",
        "versions": {
            key: {
                "events": [len(b) for b in binned[key]],
                "end_to_end_p50_ms": [_median([e2e for _, e2e in b]) for b in binned[key]],
                "bridge_ms_p50": [
                    _median([o.timings.get("bridge_ms", 0.0) for o, _ in b]) for b in binned[key]
                ],
            }
            for key in _ordered(by_version)
        },
    }
    return {
        "routes": ROUTES,
        "by_version": {key: _group(by_version[key], total) for key in _ordered(by_version)},
        "by_route_version": {
            route: {key: _group(groups[key], total) for key in _ordered(groups)}
            for route, groups in sorted(
                by_route.items(), key=lambda item: (-ROUTES.get(item[0], -1), item[0])
            )
        },
        "timeline": timeline,
    }


def _write_chart(summary: dict[str, Any], path: Path) -> Path | None:
    """``ab_test.png``: traffic share and latency p50 per version over time."""
    timeline = summary["ab"]["timeline"]
    if not timeline["versions"]:
        return None
    config = summary["config"]
    move = summary["label_move"]
    rate = f" at {config['rate']:g}/s" if config["rate"] else ""
    chart = AbChart(
        title=(
            f"A/B test: {report.MODEL}, routes {_routes_text()} ({summary['events']} payments"
            f"{rate}, {config['protocol']}, batch {config['batch_size']})"
        ),
        bin_s=timeline["bin_s"],
        starts=timeline["starts"],
        series=[
            VersionSeries(
                version=key,
                events=series["events"],
                e2e_p50_ms=series["end_to_end_p50_ms"],
                bridge_p50_ms=series["bridge_ms_p50"],
            )
            for key, series in timeline["versions"].items()
        ],
        move_started_s=move["started_s"],
        move_done_s=move["done_s"],
        move_text=(
            f"label {move['label']}: {_version_text(move['from_version'])} -> v{move['to_version']}"
        ),
    )
    try:
        return write_ab_chart(chart, path)
    except (OSError, ValueError, RuntimeError) as exc:
        summary["problems"].append(f"could not write the chart {path}: {exc}")
        summary["ok"] = False
        return None


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _ab_row(group: dict[str, Any]) -> list[str]:
    latency = group["latency_ms"]
    flagged = group["flagged"]
    return [
        str(group["events"]),
        _share(group["share"]),
        *(report.ms(latency["end_to_end"][p]) for p in ("p50", "p99")),
        *(report.ms(latency["bridge_ms"][p]) for p in ("p50", "p99")),
        str(flagged["count"]),
        "-" if flagged["share"] is None else f"{flagged['share']:.2%}",
    ]


AB_HEADERS = [
    "events",
    "share",
    "e2e p50",
    "e2e p99",
    "bridge p50",
    "bridge p99",
    "flagged",
    "flagged %",
]


def print_summary(summary: dict[str, Any], out: Path) -> None:
    config = summary["config"]
    failures = summary["failures"]
    malformed = summary["malformed_produced"]
    reasons = ", ".join(f"{k} {v}" for k, v in failures["by_reason"].items()) or "none"
    made = ", ".join(f"{k} {v}" for k, v in malformed.items()) or "none"
    versions = ", ".join(
        f"v{version}: {count}" if version != "unknown" else f"unknown ({count}; REST does not say)"
        for version, count in summary["versions"].items()
    )
    throughput = summary["throughput"]
    flagged = summary["flagged"]
    say("")
    say(
        f"demo summary ({config['protocol']}, batch {config['batch_size']}, "
        f"wait {config['max_wait_ms']} ms, routes {_routes_text()}, "
        f"{config['partitions']} partitions)"
    )
    say(f"  events in      {summary['events']}  (malformed produced: {made})")
    say(f"  results        {summary['results']}")
    say(f"  failures       {failures['total']}  ({reasons})")
    say(
        "  one record per event: "
        + ("yes" if summary["exactly_one_record_per_event"] else "NO")
        + f"  (bridge exit code {summary['bridge']['exit_code']})"
    )
    say(f"  served by      fraud {versions}")
    lag = summary.get("lag") or {}
    zero = lag.get("zero_after_last_record_s")
    say(
        f"  consumer lag   peak {lag.get('peak', 0):.0f} (oldest in flight up to "
        f"{lag.get('peak_oldest_in_flight_s', 0):.2f} s), "
        + (f"0 again {zero:.1f} s after the last record" if zero is not None else "NOT back to 0")
    )
    say(
        f"  throughput     {report.rate(throughput['events_per_s'])} events/s "
        f"({summary['events']} events in {throughput['seconds']:.2f} s, {throughput['window']})"
    )
    share = flagged["share"]
    say(
        f"  flagged        {flagged['count']} of {summary['results']} results"
        + (f" ({share:.2%})" if share is not None else "")
    )
    rows = []
    labels = {
        "end_to_end": "end to end (input CreateTime -> result read)",
        "bridge_ms": "bridge_ms (fetched -> handed to producer)",
        "model_ms": "model_ms (the model call)",
        "queued_ms": "queued_ms (fetched -> call started)",
    }
    for key, label in labels.items():
        d = summary["latency_ms"][key]
        rows.append([label, *(report.ms(d[p]) for p in ("p50", "p95", "p99", "max"))])
    say("")
    say(table(["latency, ms", "p50", "p95", "p99", "max"], rows, align="lrrrr", rule=True))
    print_ab(summary)
    say("")
    chart = summary.get("chart")
    say(f"  summary: {out / 'summary.json'}; chart: {chart or 'none'}; logs: {out}/")


def print_ab(summary: dict[str, Any]) -> None:
    move = summary["label_move"]
    ab = summary["ab"]
    say("")
    if move["ok"]:
        after = ", ".join(f"{_version_name(k)} {v}" for k, v in move["versions_sent_after"].items())
        say(
            f"A/B test, routes {_routes_text()}: label {move['label']} moved "
            f"{_version_text(move['from_version'])} -> v{move['to_version']} at "
            f"{move['done_s']:.2f} s (started {move['started_s']:.2f} s, took "
            f"{move['took_s']:.2f} s, after {move['at_event']} events)"
        )
        say(
            f"  events sent after the move: {move['results_sent_after']} results, "
            f"served by {after or 'none'}"
        )
    else:
        say(f"A/B test, routes {_routes_text()}: the label move FAILED: {move['error']}")
    say("  times: seconds since the first payment; latency in ms (e2e: end to end)")
    say("")
    rows = [[_version_name(k), *_ab_row(g)] for k, g in ab["by_version"].items()]
    say(table(["served by", *AB_HEADERS], rows, align="l" + "r" * len(AB_HEADERS), rule=True))
    say("")
    rows = [
        [route, _version_name(k), *_ab_row(g)]
        for route, groups in ab["by_route_version"].items()
        for k, g in groups.items()
    ]
    headers = ["route", "version", *AB_HEADERS]
    say(table(headers, rows, align="ll" + "r" * len(AB_HEADERS), rule=True))


if __name__ == "__main__":
    sys.exit(main())
