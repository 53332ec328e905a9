"""``make demo``: the whole pipeline on this machine, with a summary at the end.

Starts the dev broker, the local model server (the sidecar's configs: both fraud
versions, labels, server-side batching) and the bridge as a process (micro-batched,
label ``stable``), produces synthetic payments keyed by card with a few malformed
ones, shows progress, waits until every event has its record, stops the bridge with
SIGTERM and prints what happened. Writes ``summary.json`` and keeps the logs in
``--out``. Exit 0 only if every event got exactly one record of the expected kind.

    python -m bridge.dev.demo [--events 5000] [--protocol grpc|rest] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from bridge.dev import report
from bridge.dev.broker import DevBroker
from bridge.dev.payments import payments
from bridge.dev.report import say
from bridge.dev.stack import REPO, BridgeProcess, ModelServer, bridge_env, create_topics_sync

TOPICS = ("payments", "payments.scored", "payments.failed")
PARTITIONS = 3
LABEL = "stable"
MALFORMED_EVERY = 250


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bridge.dev.demo",
        description="Run broker, model server and bridge locally; score synthetic payments.",
    )
    parser.add_argument("--events", type=int, default=5000, help="payments to produce")
    parser.add_argument("--protocol", choices=("grpc", "rest"), default="grpc")
    parser.add_argument(
        "--batch-size", type=int, default=64, help="BRIDGE_BATCH__MAX_SIZE (1 = per event)"
    )
    parser.add_argument("--max-wait-ms", type=int, default=5, help="BRIDGE_BATCH__MAX_WAIT_MS")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="events/s to produce at (0: as fast as possible)"
    )
    parser.add_argument(
        "--malformed-every", type=int, default=MALFORMED_EVERY, help="one malformed per N (0: none)"
    )
    parser.add_argument(
        "--timeout", type=float, default=180.0, help="seconds to wait for every record"
    )
    parser.add_argument("--out", type=Path, default=REPO / "out" / "demo", help="output folder")
    args = parser.parse_args(argv)
    if args.events < 1 or args.batch_size < 1:
        parser.error("--events and --batch-size must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report.check_models()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for name in ("bridge.log", "broker.log", "summary.json"):
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
        server = report.model_server(out)
        started = time.monotonic()
        server.start()
        say(
            f"  gRPC {server.grpc_target}, REST {server.rest_url}, "
            f"ready in {time.monotonic() - started:.1f} s"
        )
        create_topics_sync(broker.bootstrap_servers, TOPICS, PARTITIONS)
        env = bridge_env(
            broker.bootstrap_servers,
            TOPICS,
            server,
            model=report.MODEL,
            protocol=args.protocol,
            group="demo-bridge",
            BRIDGE_MODEL__LABEL=LABEL,
            BRIDGE_MODEL__COPY_FIELDS='["id"]',
            BRIDGE_BATCH__MAX_SIZE=str(args.batch_size),
            BRIDGE_BATCH__MAX_WAIT_MS=str(args.max_wait_ms),
        )
        bridge = BridgeProcess(env, out / "bridge.log")
        say(f"starting the bridge ({args.protocol}, batch {args.batch_size}, label {LABEL}) ...")
        bridge.start()
        bridge.wait_for_log("partitions_assigned")
        say(f"  assigned {PARTITIONS} partitions; producing {args.events} payments")
        summary = asyncio.run(_run(args, broker.bootstrap_servers, bridge))
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
    report.write_json(out / "summary.json", summary)
    print_summary(summary, out)
    if summary["ok"]:
        return 0
    say("FAILED: " + "; ".join(summary["problems"]))
    return 1


async def _run(args: argparse.Namespace, bootstrap: str, bridge: BridgeProcess) -> dict[str, Any]:
    source, results, failures = TOPICS
    # A generator, not a list: orjson's output bytes hold a few KiB each while alive.
    events = payments(args.events, malformed_every=args.malformed_every)
    reader = await report.OutputReader(bootstrap, results, failures).start()
    kafka = report.producer(bootstrap)
    await kafka.start()
    produced = 0

    def on_sent(count: int) -> None:
        nonlocal produced
        produced = count

    progress = asyncio.create_task(_progress(reader, lambda: produced, args.events))
    try:
        first_produce = time.time()
        sent = await report.produce(kafka, source, events, rate=args.rate, on_sent=on_sent)
        deadline = time.monotonic() + args.timeout
        complete = False
        while not complete and time.monotonic() < deadline and _alive(bridge):
            complete = await reader.wait_for(len(sent), min(1.0, deadline - time.monotonic()))
        progress.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await progress
        _progress_line(reader, produced, args.events, first_produce, None)
        if not _alive(bridge):
            say("  the bridge exited before every event had a record (see bridge.log)")
        elif not complete:
            say(f"  timed out after {args.timeout:.0f} s waiting for records")
        say("stopping the bridge (SIGTERM) ...")
        exit_code = await asyncio.to_thread(bridge.stop)
        await reader.settle()
    finally:
        progress.cancel()
        await kafka.stop()
        await reader.stop()
    return summarize(args, sent, reader.outputs, first_produce, exit_code, bridge)


def _alive(bridge: BridgeProcess) -> bool:
    return bridge.process is not None and bridge.process.poll() is None


async def _progress(reader: report.OutputReader, produced: Any, total: int) -> None:
    started = time.time()
    last = 0
    while True:
        await asyncio.sleep(1.0)
        _progress_line(reader, produced(), total, started, reader.count - last)
        last = reader.count


def _progress_line(
    reader: report.OutputReader, produced: int, total: int, started: float, per_s: int | None
) -> None:
    say(
        f"  [{time.time() - started:5.1f} s] produced {produced:>6}/{total}  "
        f"results {reader.results:>6}  failures {reader.failures:>4}  "
        + ("done" if per_s is None else f"{per_s:>6} records/s")
    )


def summarize(
    args: argparse.Namespace,
    sent: dict[report.SourceKey, report.Sent],
    outputs: list[report.Output],
    first_produce: float,
    exit_code: int | None,
    bridge: BridgeProcess,
) -> dict[str, Any]:
    accounting = report.account(sent, outputs)
    results = [o for o in outputs if o.kind == "result"]
    failures = [o for o in outputs if o.kind == "failure"]
    malformed = Counter(s.expected for s in sent.values() if s.expected != "result")
    by_reason = Counter(o.reason or "?" for o in failures)
    versions = Counter("unknown" if o.version is None else str(o.version) for o in results)
    flagged = sum(1 for o in results if o.flagged)
    last_read = max((o.read_at for o in outputs), default=first_produce)
    span = last_read - first_produce
    e2e = [o.read_at * 1000 - sent[o.source].timestamp_ms for o in results if o.source in sent]
    problems = accounting.problems()
    if exit_code != 0:
        problems.append(f"the bridge exited with {exit_code} (see bridge.log)")
    stopped = _stopped_counts(bridge)
    return {
        "ok": not problems,
        "problems": problems,
        "config": {
            "events": args.events,
            "protocol": args.protocol,
            "batch_size": args.batch_size,
            "max_wait_ms": args.max_wait_ms,
            "rate": args.rate or None,
            "label": LABEL,
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
        "bridge": {"exit_code": exit_code, "stopped": stopped},
    }


def _stopped_counts(bridge: BridgeProcess) -> dict[str, Any]:
    """The bridge's own counts from its final ``stopped`` log line."""
    for line in reversed(bridge.log_path.read_text(errors="replace").splitlines()):
        if '"event":"stopped"' in line:
            with contextlib.suppress(orjson.JSONDecodeError):
                entry = orjson.loads(line)
                keys = ("events", "results", "failures", "drained", "handed_back")
                return {key: entry.get(key) for key in keys}
    return {}


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
        f"wait {config['max_wait_ms']} ms, label {config['label']}, "
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
    say(report.table(["latency, ms", "p50", "p95", "p99", "max"], rows))
    say("")
    say(f"  summary: {out / 'summary.json'}; logs: {out}/")


if __name__ == "__main__":
    sys.exit(main())
