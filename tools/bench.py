"""``make bench``: the bridge's throughput, latency, memory and start time, beside the
two limits it cannot beat, all measured in the same run on the same broker and server.

Rows (one model server and one broker for all of them, same flags throughout):

- bridge: ``python -m bridge run`` as a process, per event (``MAX_SIZE=1``) and
  micro-batched, over gRPC and REST. Throughput: N events are produced before the
  bridge starts; events/s = N / (last output read - the bridge's ``consuming`` log
  line). Latency: afterwards, with the same process still running, events are
  produced at a modest fixed rate (``--rate``) and each result's arrival is
  compared with its input's CreateTime; per-event rows also get a slow run
  (``--slow-rate``) in which events reach the bridge one at a time.
- direct (limit 1): the same model server driven by the bridge's own
  ``GrpcModelClient``/``RestModelClient`` from this process, same batch sizes, same
  concurrency as the bridge (``MAX_IN_FLIGHT``), no Kafka.
- pass-through (limit 2): a bare consume -> produce loop as a process (aiokafka,
  the bridge's client settings, manual commits of acknowledged offsets, no model).
  Run once at the start (its events/s is the limit), and again, over the backlog
  only, just before each micro-batched bridge row: the CPU-per-event ratio divides
  by that one, as the machine's speed drifts over a run more than either row varies.

Targets are printed with PASS or MISS and never fail the run; the exit code is
nonzero only when a run is broken (an input without exactly one output, a process
that did not exit 0). Results go to ``out/bench/results.json``.

    python -m tools.bench [--events N] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import orjson
from aiokafka import ConsumerRebalanceListener, TopicPartition

from bridge.domain import Instance, Signature, Target
from bridge.ops.output import table
from bridge.pipeline.instances import InstanceBuilder
from bridge.serving.client import ModelClient
from tools import report
from tools.harness import processes
from tools.harness.broker import DevBroker
from tools.harness.outputs import Output, Outputs, SourceKey
from tools.harness.payments import payments
from tools.harness.processes import REPO, BridgeProcess, ModelServer, bridge_env, create_topics
from tools.report import say

LABEL = "stable"
PARTITIONS = 3
IN_FLIGHT = 4  # BRIDGE_BATCH__MAX_IN_FLIGHT's default; the direct loops use the same
WARMUP_CALLS = 50
Snapshot = dict[str, float | None]


@dataclass(frozen=True, slots=True)
class Plan:
    events: int  # per micro-batched bridge row
    limit_events: int  # per pass-through and direct batched row (they are faster)
    per_event: int  # per per-event row (bridge MAX_SIZE=1, direct batch 1)
    paced: int  # events per paced latency run
    rate: float  # events/s of the paced runs
    slow_paced: int  # events per slow paced run (per-event bridge rows)
    slow_rate: float  # events/s of that run: slow enough that events arrive alone
    batch: int
    max_wait_ms: int
    protocols: tuple[str, ...]
    timeout_s: float


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench",
        description="Bridge throughput/latency/RSS/start time beside direct calls and "
        "a Kafka pass-through, in one run.",
    )
    parser.add_argument(
        "--events",
        type=int,
        help="events per micro-batched row (default 30000; --quick 1500); the pass-through "
        "and direct batched rows, being faster, get three times as many",
    )
    parser.add_argument(
        "--per-event-events",
        type=int,
        help="events per per-event throughput row (default 3000; --quick 300)",
    )
    parser.add_argument(
        "--paced-events", type=int, help="events per paced latency run (default 400; --quick 60)"
    )
    parser.add_argument("--rate", type=float, default=50.0, help="events/s of the paced runs")
    parser.add_argument(
        "--slow-events",
        type=int,
        help="events of the slow paced run of the per-event rows (default 60; --quick 15; 0: none)",
    )
    parser.add_argument(
        "--slow-rate", type=float, default=5.0, help="events/s of the slow paced run"
    )
    parser.add_argument("--batch-size", type=int, default=64, help="micro-batched MAX_SIZE")
    parser.add_argument("--max-wait-ms", type=int, default=5, help="micro-batched MAX_WAIT_MS")
    parser.add_argument(
        "--protocols", default="grpc,rest", help="comma-separated: grpc, rest (default both)"
    )
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per row, at most")
    parser.add_argument("--out", type=Path, default=REPO / "out" / "bench", help="output folder")
    # Internal: this module is also the pass-through process (bootstrap,input,output,group).
    parser.add_argument("--passthrough", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    protocols = tuple(p.strip() for p in args.protocols.split(",") if p.strip())
    if not protocols or any(p not in ("grpc", "rest") for p in protocols):
        parser.error("--protocols takes grpc, rest or both")
    args.protocols = protocols
    if args.batch_size < 2:
        parser.error("--batch-size is the micro-batched size: at least 2")
    return args


def make_plan(args: argparse.Namespace) -> Plan:
    return Plan(
        events=args.events or (1500 if args.quick else 30000),
        limit_events=3 * (args.events or (1500 if args.quick else 30000)),
        per_event=args.per_event_events or (300 if args.quick else 3000),
        paced=args.paced_events if args.paced_events is not None else (60 if args.quick else 400),
        rate=args.rate,
        slow_paced=args.slow_events if args.slow_events is not None else (15 if args.quick else 60),
        slow_rate=args.slow_rate,
        batch=args.batch_size,
        max_wait_ms=args.max_wait_ms,
        protocols=args.protocols,
        timeout_s=args.timeout,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.passthrough:
        return passthrough_main(args.passthrough)
    report.check_models()
    plan = make_plan(args)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.log"):
        stale.unlink()
    (out / "results.json").unlink(missing_ok=True)
    report.unwind_on_sigterm()
    setup = describe_setup(plan)
    print_setup(setup)
    broker: DevBroker | None = None
    server: ModelServer | None = None
    try:
        broker = DevBroker().start()
        server = report.model_server(out)
        started = time.monotonic()
        server.start()
        setup["server_start_s"] = round(time.monotonic() - started, 2)
        say(f"broker {broker.bootstrap_servers}; model server ready in {setup['server_start_s']} s")
        bench = Bench(plan, broker, server, out)
        results = asyncio.run(bench.run())
    except KeyboardInterrupt:
        say("interrupted; stopping everything")
        return 130
    except (RuntimeError, TimeoutError) as exc:
        say(f"bench failed: {exc}")
        return 1
    finally:
        if server is not None:
            server.stop()
        if broker is not None:
            with contextlib.suppress(OSError, ValueError):
                (out / "broker.log").write_text(broker.output())
            broker.stop()
    setup["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["setup"] = setup | {"model": results.pop("model", None)}
    results["targets"] = targets(results, plan)
    report.write_json(out / "results.json", results)
    print_results(results, plan)
    say(f"\nresults: {out / 'results.json'}; logs: {out}/")
    broken = [
        row["name"]
        for row in results["rows"]
        if not row.get("accounted", True) or row.get("exit_code") != 0
    ]
    if broken:
        say(
            "BROKEN RUN: an input without exactly one output, or a nonzero exit, in: "
            + ", ".join(broken)
        )
        return 1
    return 0


# -- setup -----------------------------------------------------------------------------------


def describe_setup(plan: Plan) -> dict[str, Any]:
    batching = {}
    text = (report.SERVING / "batching.config").read_text()
    for key in ("max_batch_size", "batch_timeout_micros", "num_batch_threads"):
        match = re.search(rf"^{key}\s*{{\s*value:\s*(\d+)", text, re.MULTILINE)
        if match:
            batching[key] = int(match.group(1))
    return report.machine() | {
        "partitions": PARTITIONS,
        "server": "local TF Serving-compatible server (python -m serving), sidecar flags: "
        "models.config, labels, --enable_batching with serving/batching.config",
        "server_batching": batching,
        "plan": asdict(plan),
        "in_flight": IN_FLIGHT,
    }


def print_setup(setup: dict[str, Any]) -> None:
    plan = setup["plan"]
    batching = setup["server_batching"]
    say("tfs-kafka-bridge bench")
    say(f"  date        {setup['date']}, commit {setup['commit'] or 'unknown'}")
    say(
        f"  machine     {setup['cpus']} CPUs ({setup['cpu_model'] or 'unknown model'}), "
        f"load average {setup['load_average_at_start']}, Python {setup['python']}"
    )
    say(f"  broker      {setup['broker']}, {setup['partitions']} partitions per topic")
    say(
        "  server      local TF Serving-compatible server, one process for every row, "
        f"server-side batching ON (max {batching.get('max_batch_size')}, "
        f"timeout {batching.get('batch_timeout_micros', 0) / 1000:g} ms, "
        f"{batching.get('num_batch_threads')} threads)"
    )
    say(
        f"  bridge      one process per row, MAX_IN_FLIGHT {IN_FLIGHT}, per event: MAX_SIZE 1; "
        f"micro-batched: MAX_SIZE {plan['batch']}, MAX_WAIT_MS {plan['max_wait_ms']}"
    )
    say(
        f"  N           {plan['events']} events per micro-batched row, {plan['limit_events']} per "
        f"pass-through and direct batched row, {plan['per_event']} per per-event row; a "
        f"pass-through of {plan['limit_events']} just before each micro-batched row"
    )
    say(
        f"  latency     paced runs after the throughput run, same process: {plan['paced']} events "
        f"at {plan['rate']:g}/s; per-event bridge rows also {plan['slow_paced']} events at "
        f"{plan['slow_rate']:g}/s"
    )
    say()


# -- processes ---------------------------------------------------------------------------------


class Process(Protocol):
    """What the bench needs of the bridge or pass-through process."""

    log_path: Path

    @property
    def pid(self) -> int | None: ...

    def running(self) -> bool: ...

    def output(self) -> str: ...

    def stop(self, timeout_s: float = 60.0) -> int | None: ...


class BridgeRun:
    def __init__(self, bridge: BridgeProcess) -> None:
        self.bridge = bridge
        self.log_path = bridge.log_path

    @property
    def pid(self) -> int | None:
        return self.bridge.pid

    def running(self) -> bool:
        return self.bridge.process is not None and self.bridge.process.poll() is None

    def output(self) -> str:
        return self.bridge.output()

    def stop(self, timeout_s: float = 60.0) -> int | None:
        return self.bridge.stop(timeout_s)


class PassThroughProcess:
    """``python -m tools.bench --passthrough ...``, stopped by its pid."""

    def __init__(self, spec: str, log_path: Path) -> None:
        self.log_path = log_path
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tools.bench", "--passthrough", spec],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self, timeout_s: float = 60.0) -> int | None:
        return processes.stop_process(self.process, timeout_s)


# -- the bench ---------------------------------------------------------------------------------


class Bench:
    def __init__(self, plan: Plan, broker: DevBroker, server: ModelServer, out: Path) -> None:
        self.plan = plan
        self.broker = broker
        self.server = server
        self.out = out
        self.bootstrap = broker.bootstrap_servers
        self.rows: list[dict[str, Any]] = []

    async def run(self) -> dict[str, Any]:
        plan = self.plan
        direct: dict[str, Any] = {}
        model: dict[str, Any] | None = None
        for protocol in plan.protocols:
            say(f"direct {protocol}: the model server without Kafka ...")
            direct[protocol], model = await self.direct(protocol)
        say("pass-through: consume -> produce, no model ...")
        self.rows.append(await self.kafka_row("pass-through", "pass-through", plan.limit_events))
        for protocol in plan.protocols:
            for size in (1, plan.batch):
                mode = "per-event" if size == 1 else f"batched {size}"
                if size != 1:
                    # The ratio's denominator, measured just before its numerator: the
                    # machine's speed drifts over a run more than either row varies.
                    say(f"pass-through beside bridge {protocol} {mode} ...")
                    self.rows.append(
                        await self.kafka_row(
                            _beside(protocol), "pass-through", plan.limit_events, paced=False
                        )
                    )
                say(f"bridge {protocol} {mode} ...")
                count = plan.per_event if size == 1 else plan.events
                self.rows.append(
                    await self.kafka_row(f"bridge {protocol} {mode}", protocol, count, size)
                )
        return {"rows": self.rows, "direct": direct, "model": model}

    # -- Kafka rows: the bridge and the pass-through ------------------------------------------

    def _topics(self, name: str) -> tuple[str, str, str]:
        base = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        return (f"{base}.in", f"{base}.out", f"{base}.failed")

    def _spawn(
        self, name: str, kind: str, topics: tuple[str, str, str], size: int
    ) -> tuple[Process, float]:
        base = topics[0].removesuffix(".in")
        log = self.out / f"{base}.log"
        group = f"{base}-group"
        started = time.time()
        if kind == "pass-through":
            spec = ",".join((self.bootstrap, topics[0], topics[1], group))
            return PassThroughProcess(spec, log), started
        env = bridge_env(
            self.bootstrap,
            topics,
            self.server,
            model=report.MODEL,
            protocol=kind,
            group=group,
            BRIDGE_MODEL__LABEL=LABEL,
            BRIDGE_MODEL__COPY_FIELDS='["id"]',
            BRIDGE_BATCH__MAX_SIZE=str(size),
            BRIDGE_BATCH__MAX_WAIT_MS=str(self.plan.max_wait_ms),
            BRIDGE_BATCH__MAX_IN_FLIGHT=str(IN_FLIGHT),
        )
        return BridgeRun(BridgeProcess(env, log).start()), started

    def _cpu(self, pid: int | None) -> Snapshot:
        return {
            "wall": time.monotonic(),
            "process": report.cpu_seconds(pid),
            "server": report.cpu_seconds(self.server.pid),
            "broker": report.cpu_seconds(self.broker.pid),
            "bench": time.process_time(),
            "machine": report.machine_busy_seconds(),
        }

    async def kafka_row(
        self, name: str, kind: str, count: int, size: int = 1, *, paced: bool = True
    ) -> dict[str, Any]:
        """``paced=False``: the backlog only (a pass-through beside a bridge row)."""
        plan = self.plan
        topics = self._topics(name)
        await create_topics(self.bootstrap, topics, PARTITIONS)
        kafka = report.producer(self.bootstrap, linger_ms=0)
        await kafka.start()
        reader: Outputs | None = None
        process: Process | None = None
        try:
            sent = await report.produce(kafka, topics[0], payments(count, seed=11))
            reader = (await report.reader(self.bootstrap, topics[1], topics[2]).start()).follow()
            process, started = self._spawn(name, kind, topics, size)
            first = await self._wait(process, reader, count, started)
            after = self._cpu(process.pid)
            backlog = list(reader.records)
            latency: dict[SourceKey, report.Sent] = {}
            if paced and plan.paced and (size == 1 or kind == "pass-through"):
                say(f"  latency: {plan.paced} events at {plan.rate:g}/s ...")
                latency = await report.produce(
                    kafka, topics[0], payments(plan.paced, seed=12), rate=plan.rate
                )
                await self._wait(process, reader, count + plan.paced, started)
            slow: dict[SourceKey, report.Sent] = {}
            if plan.slow_paced and size == 1 and kind != "pass-through":
                say(f"  latency: {plan.slow_paced} events at {plan.slow_rate:g}/s ...")
                slow = await report.produce(
                    kafka, topics[0], payments(plan.slow_paced, seed=13), rate=plan.slow_rate
                )
                await self._wait(process, reader, count + len(latency) + len(slow), started)
            rss = report.peak_rss_mb(process.pid)
            exit_code = await asyncio.to_thread(process.stop)
            await reader.settle(quiet_s=0.3)
        finally:
            if process is not None:
                await asyncio.to_thread(process.stop)
            await kafka.stop()
            if reader is not None:
                await reader.stop()
        row = self._row(name, kind, size, sent, backlog, started, first, after, process.log_path)
        row["peak_rss_mb"] = None if rss is None else round(rss, 1)
        row["exit_code"] = exit_code
        accounting = report.account(sent | latency | slow, reader.records)
        row["accounted"] = accounting.ok
        row["accounting_problems"] = accounting.problems()
        if latency:
            row["latency"] = self._latency(latency, reader.records, plan.rate)
        if slow:
            row["latency_slow"] = self._latency(slow, reader.records, plan.slow_rate)
        say(
            f"  {row['events_per_s'] or 0:,.0f} events/s, peak RSS {row['peak_rss_mb']} MB, "
            f"start -> consuming {report.ms(row['start_s'].get('consuming'), 2)} s, "
            f"CPU us/event {_cpu_text(row['cpu_us_per_event'])}"
        )
        return row

    async def _wait(
        self, process: Process, reader: Outputs, count: int, started: float
    ) -> Snapshot:
        """Until ``count`` outputs were read; the CPU snapshot taken at the first output."""
        deadline = time.monotonic() + self.plan.timeout_s
        first: Snapshot = {}
        idle: float | None = None  # RSS once started, before the group join ends
        assigned = False
        while reader.count < count:
            if not process.running():
                raise RuntimeError(f"{process.log_path.name}: exited early:\n{process.output()}")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{process.log_path.name}: {reader.count} of {count} outputs in "
                    f"{self.plan.timeout_s:.0f} s:\n{process.output()}"
                )
            if not first and reader.count:
                first = self._cpu(process.pid) | {"count": float(reader.count), "rss": idle}
            elif not first and not assigned:
                assigned = '"event":"partitions_assigned"' in process.output()
                if not assigned:
                    idle = report.rss_mb(process.pid) or idle
            await asyncio.sleep(0.01)
        return first or self._cpu(process.pid) | {"count": float(reader.count), "rss": idle}

    def _row(
        self,
        name: str,
        kind: str,
        size: int,
        sent: dict[SourceKey, report.Sent],
        outputs: list[Output],
        started: float,
        first: Snapshot,
        after: Snapshot,
        log: Path,
    ) -> dict[str, Any]:
        events = {key: report.log_time(log, key) for key in ("joining_group", "consuming")}
        events["partitions_assigned"] = report.log_time(log, "partitions_assigned")
        first_read = min((o.read_at for o in outputs), default=None)
        last_read = max((o.read_at for o in outputs), default=None)
        consuming = events["consuming"]
        span = None if last_read is None or consuming is None else last_read - consuming
        start_s = {k: None if v is None else round(v - started, 3) for k, v in events.items()}
        start_s["first_output"] = None if first_read is None else round(first_read - started, 3)
        cpu: dict[str, float | None] = {}
        wall = (after["wall"] or 0) - (first.get("wall") or 0)
        for part in ("process", "server", "broker", "bench", "machine"):
            a, b = first.get(part), after.get(part)
            cpu[part] = None if a is None or b is None or wall <= 0 else round((b - a) / wall, 3)
        known = [cpu[part] for part in ("process", "server", "broker", "bench")]
        machine = cpu.pop("machine")
        cpu["others"] = (
            None if machine is None else round(max(0.0, machine - sum(k or 0 for k in known)), 3)
        )
        steady = (len(outputs) - (first.get("count") or 0)) / wall if wall > 0 else None
        return {
            "name": name,
            "kind": "pass-through" if kind == "pass-through" else "bridge",
            "protocol": None if kind == "pass-through" else kind,
            "batch_size": size,
            "events": len(sent),
            "outputs": len(outputs),
            "failures": sum(1 for o in outputs if o.kind == "failure"),
            "events_per_s": round(len(sent) / span, 1) if span and span > 0 else None,
            "throughput_window_s": None if span is None else round(span, 3),
            "steady_events_per_s": None if steady is None else round(steady, 1),
            "cpu_share": cpu,
            # CPU time each process spent per event: what a 2-core machine shares out.
            "cpu_us_per_event": {
                part: None if share is None or not steady else round(share / steady * 1e6, 1)
                for part, share in cpu.items()
            },
            "idle_rss_mb": None if first.get("rss") is None else round(first["rss"] or 0, 1),
            "start_s": start_s,
        }

    def _latency(
        self,
        paced: dict[SourceKey, report.Sent],
        outputs: list[Output],
        rate: float,
    ) -> dict[str, Any]:
        mine = [o for o in outputs if o.source in paced and o.kind == "result"]
        e2e, kafka_in, kafka_out, bridge, model, queued, overhead, own = ([] for _ in range(8))
        for o in mine:
            created = paced[o.source].timestamp_ms
            read = o.read_at * 1000
            e2e.append(read - created)
            kafka_out.append(read - o.timestamp_ms)
            if o.timings:
                bridge_ms = o.timings.get("bridge_ms", 0.0)
                model_ms = o.timings.get("model_ms", 0.0)
                bridge.append(bridge_ms)
                model.append(model_ms)
                queued.append(o.timings.get("queued_ms", 0.0))
                overhead.append(bridge_ms - model_ms)
                own.append(bridge_ms - model_ms - o.timings.get("queued_ms", 0.0))
                kafka_in.append(o.timestamp_ms - bridge_ms - created)
            else:
                kafka_in.append(o.timestamp_ms - created)  # pass-through: hop in + the loop
        d = report.distribution
        return {
            "count": len(mine),
            "rate": rate,
            "end_to_end_ms": d(e2e),
            "kafka_in_ms": d(kafka_in),
            "bridge_ms": d(bridge),
            "queued_ms": d(queued),
            "model_ms": d(model),
            "bridge_minus_model_ms": d(overhead),
            "own_work_ms": d(own),
            "kafka_out_ms": d(kafka_out),
        }

    # -- limit 1: direct calls -----------------------------------------------------------------

    def _client(self, protocol: str) -> ModelClient:
        if protocol == "grpc":
            from bridge.serving.grpc_client import GrpcModelClient

            return GrpcModelClient(self.server.grpc_target, 5.0, 256 * 1024 * 1024)
        from bridge.serving.rest_client import RestModelClient

        return RestModelClient(self.server.rest_url, 5.0, 1.0)

    async def direct(self, protocol: str) -> tuple[dict[str, Any], dict[str, Any]]:
        plan = self.plan
        client = self._client(protocol)
        try:
            target = Target(report.MODEL, LABEL)
            signature = await client.get_signature(target)
            builder = InstanceBuilder(signature, {}, ["id"])
            events = payments(max(plan.limit_events, plan.per_event, plan.paced), seed=11)
            instances = [builder.build(orjson.loads(p.value)) for p in events]
            for i in range(WARMUP_CALLS):
                await client.predict(target, signature, instances[i : i + 1])
            result: dict[str, Any] = {}
            for size, count in ((1, plan.per_event), (plan.batch, plan.limit_events)):
                result[f"batch_{size}"] = await _direct_throughput(
                    client, target, signature, instances[:count], size
                )
                say(
                    f"  batch {size} x{IN_FLIGHT}: "
                    f"{result[f'batch_{size}']['instances_per_s']:,.0f} instances/s"
                )
            if plan.paced:
                result["paced_batch_1"] = await _direct_paced(
                    client, target, signature, instances[: plan.paced], plan.rate
                )
                call = result["paced_batch_1"]["call_ms"]
                say(f"  paced batch 1: p50 {call['p50']} ms, p99 {call['p99']} ms")
        finally:
            await client.aclose()
        model = {
            "name": signature.model,
            "target": str(target),
            "version": signature.version,
            "signature": signature.name,
            "inputs": {k: [v.dtype.tf_name, v.shape] for k, v in signature.inputs.items()},
            "outputs": sorted(signature.outputs),
        }
        return result, model


async def _direct_throughput(
    client: ModelClient,
    target: Target,
    signature: Signature,
    instances: Sequence[Instance],
    size: int,
) -> dict[str, Any]:
    """``IN_FLIGHT`` loops sharing the batches, like the bridge's workers."""
    batches = iter([instances[i : i + size] for i in range(0, len(instances), size)])
    calls: list[float] = []

    async def loop() -> None:
        for batch in batches:
            began = time.perf_counter()
            await client.predict(target, signature, batch)
            calls.append((time.perf_counter() - began) * 1000)

    began = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(IN_FLIGHT)))
    elapsed = time.perf_counter() - began
    return {
        "batch_size": size,
        "in_flight": IN_FLIGHT,
        "instances": len(instances),
        "seconds": round(elapsed, 3),
        "instances_per_s": round(len(instances) / elapsed, 1),
        "call_ms": report.distribution(calls),
    }


async def _direct_paced(
    client: ModelClient,
    target: Target,
    signature: Signature,
    instances: Sequence[Instance],
    rate: float,
) -> dict[str, Any]:
    """One instance per call at ``rate`` per second: the call a per-event bridge makes."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    calls: list[float] = []
    for index, instance in enumerate(instances):
        delay = start + index / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        began = time.perf_counter()
        await client.predict(target, signature, [instance])
        calls.append((time.perf_counter() - began) * 1000)
    return {"rate": rate, "calls": len(calls), "call_ms": report.distribution(calls)}


# -- limit 2: the pass-through process -------------------------------------------------------


def _log(event: str, **fields: Any) -> None:
    line = {"event": event, "timestamp": datetime.now(UTC).isoformat(), **fields}
    sys.stdout.buffer.write(orjson.dumps(line) + b"\n")
    sys.stdout.flush()


class _Logged(ConsumerRebalanceListener):  # type: ignore[misc]
    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        _log("partitions_revoked", partitions=sorted(tp.partition for tp in revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        _log("partitions_assigned", partitions=sorted(tp.partition for tp in assigned))


def passthrough_main(spec: str) -> int:
    bootstrap, source, destination, group = spec.split(",")
    return asyncio.run(_passthrough(bootstrap, source, destination, group))


async def _passthrough(bootstrap: str, source: str, destination: str, group: str) -> int:
    """Consume -> produce a small JSON per record -> commit what was acknowledged."""
    from bridge.kafka.clients import make_consumer, make_producer
    from bridge.settings import KafkaSettings

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    kafka = KafkaSettings(
        bootstrap_servers=bootstrap, group_id=group, client_id="bench-passthrough"
    )
    producer = make_producer(kafka)
    await producer.start()
    consumer = make_consumer(kafka)
    pending: dict[TopicPartition, list[tuple[int, asyncio.Future[Any]]]] = {}
    count = 0
    try:
        partitions = len(await producer.partitions_for(destination))
        consumer.subscribe([source], listener=_Logged())
        _log("joining_group", group=group, topic=source)
        await consumer.start()
        committed = loop.time()
        while not stop.is_set():
            fetched = await consumer.getmany(timeout_ms=200, max_records=2000)
            for tp, records in fetched.items():
                if not count:
                    _log("consuming", topic=tp.topic)
                queue = pending.setdefault(tp, [])
                for record in records:
                    count += 1
                    body = {
                        "source": {
                            "topic": record.topic,
                            "partition": record.partition,
                            "offset": record.offset,
                            "timestamp": record.timestamp,
                        }
                    }
                    future = await producer.send(
                        destination,
                        orjson.dumps(body),
                        key=record.key,
                        partition=record.partition % partitions,
                        headers=list(record.headers),
                    )
                    queue.append((record.offset, future))
            if loop.time() - committed >= 0.5:
                await _commit(consumer, pending)
                committed = loop.time()
        await producer.flush()
        await _commit(consumer, pending)
    finally:
        await consumer.stop()
        await producer.stop()
    _log("stopped", events=count)
    return 0


async def _commit(
    consumer: Any, pending: dict[TopicPartition, list[tuple[int, asyncio.Future[Any]]]]
) -> None:
    offsets = {}
    for tp, queue in pending.items():
        done = 0
        while done < len(queue) and queue[done][1].done():
            queue[done][1].result()  # a failed send stops the loop, uncommitted
            done += 1
        if done:
            offsets[tp] = queue[done - 1][0] + 1
            del queue[:done]
    if offsets:
        await consumer.commit(offsets)


# -- results -----------------------------------------------------------------------------------


def _cpu_text(per_event: dict[str, float | None]) -> str:
    return " ".join(f"{part} {value:g}" for part, value in per_event.items() if value)


def _beside(protocol: str) -> str:
    """The pass-through row run just before the protocol's micro-batched row."""
    return f"pass-through beside {protocol}"


def _row(results: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((row for row in results["rows"] if row["name"] == name), None)


def _get(mapping: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(mapping, dict):
            return None
        mapping = mapping.get(key)
    return mapping


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 3)


DEFINITIONS = {
    "cpu per event": "CPU seconds of the bridge process / events, from its first output to "
    "its last, divided by the same for a pass-through process run just before it (both "
    "drain a backlog of the same events on the same broker)",
    "saturation": "per-event bridge (MAX_SIZE 1): its CPU per event, and which side is the "
    "limit: the model server when the bridge reaches >= 80 % of the direct batch-1 loop's "
    "instances/s with the same calls in flight, else the bridge's own loop",
    "throughput": "micro-batched bridge events/s / min(direct batched instances/s, "
    "pass-through events/s), same batch size and calls in flight",
    "in the bridge": "per result: timings.bridge_ms - timings.model_ms = time from the "
    "bridge's fetch to handing the result to its producer, minus the model call (so it "
    "includes waiting for a free worker, queued_ms)",
    "own work": "per result: bridge_ms - model_ms - queued_ms = parsing, building, "
    "ordering and emitting, without waiting for a worker",
    "end to end vs direct": "e2e quantile (input CreateTime -> result read) minus the same "
    "quantile of a direct call (same client, batch 1, paced at the same rate); includes "
    "both Kafka hops",
    "net of the pass-through": "e2e quantile - pass-through e2e quantile - direct call "
    "quantile: the Kafka hops taken out; quantiles of different runs, so noisy at p99",
    "rss": "VmHWM of the bridge process read before SIGTERM; idle = VmRSS once started, "
    "before its partitions were assigned",
    "start": "process start (Popen) -> the bridge's log line; 'consuming' includes the "
    "broker's group-join wait, 'joining_group' is the bridge's own start (imports, "
    "settings, model signature, producer)",
}


def targets(results: dict[str, Any], plan: Plan) -> list[dict[str, Any]]:
    """The project's promises, each with its measured value and PASS/MISS."""
    found: list[dict[str, Any]] = []

    def add(
        name: str,
        value: float | None,
        unit: str,
        limit: float | None,
        kind: str,
        detail: str = "",
    ) -> None:
        """``limit``: the goal (>= for %, <= for ms, < for MB and s); None = information."""
        if limit is None:
            goal, ok = "(info)", None
        elif unit == "%":
            goal, ok = f">= {limit:g} %", None if value is None else value >= limit
        elif unit in ("ms", "x"):
            goal, ok = f"<= {limit:g} {unit}", None if value is None else value <= limit
        else:
            goal, ok = f"< {limit:g} {unit}", None if value is None else value < limit
        found.append(
            {
                "target": name,
                "value": value,
                "unit": unit,
                "goal": goal,
                "pass": ok,
                "definition": kind,
                "detail": detail,
            }
        )

    passthrough = _row(results, "pass-through")
    pt_rate = passthrough["events_per_s"] if passthrough else None
    first_pt_cpu = _get(passthrough, "cpu_us_per_event", "process")
    for protocol, goal in (("grpc", 1.5), ("rest", 2.0)):
        if protocol not in plan.protocols:
            continue
        cpu = _get(_row(results, f"bridge {protocol} batched {plan.batch}"), "cpu_us_per_event")
        own = _get(cpu, "process")
        pt_cpu = _get(_row(results, _beside(protocol)), "cpu_us_per_event", "process")
        add(
            f"{protocol}: micro-batched CPU per event, x the pass-through's",
            round(own / pt_cpu, 2) if own and pt_cpu else None,
            "x",
            goal,
            "cpu per event",
            f"{report.ms(own, 1)} / {report.ms(pt_cpu, 1)} us "
            f"(first pass-through: {report.ms(first_pt_cpu, 1)})",
        )
    for protocol in plan.protocols:
        row = _row(results, f"bridge {protocol} per-event")
        own = _get(row, "cpu_us_per_event", "process")
        rate = row["events_per_s"] if row else None
        direct_1 = _get(results["direct"], protocol, "batch_1", "instances_per_s")
        side = "?"
        if rate and direct_1:
            side = "model server" if rate >= 0.8 * direct_1 else "the bridge's loop"
        add(
            f"{protocol}: per-event CPU per event at saturation, us",
            own,
            "us",
            None,
            "saturation",
            f"limited by {side}: {report.rate(rate)}/s, direct batch 1 {report.rate(direct_1)}/s",
        )
    for protocol in plan.protocols:
        batched = _row(results, f"bridge {protocol} batched {plan.batch}")
        direct = _get(results["direct"], protocol, f"batch_{plan.batch}", "instances_per_s")
        limits = [x for x in (direct, pt_rate) if x]
        limit = min(limits) if limits else None
        rate = batched["events_per_s"] if batched else None
        share = round(100 * rate / limit, 1) if rate and limit else None
        add(
            f"{protocol}: micro-batched throughput, % of min(direct, pass-through)",
            share,
            "%",
            60,
            "throughput",
            f"{report.rate(rate)} / min({report.rate(direct)}, {report.rate(pt_rate)})",
        )
    pt_e2e = _get(passthrough, "latency", "end_to_end_ms") if passthrough else None
    for protocol in plan.protocols:
        row = _row(results, f"bridge {protocol} per-event")
        latency = row.get("latency") if row else None
        call = _get(results["direct"], protocol, "paced_batch_1", "call_ms")
        runs = [(latency, plan.rate)]
        if row and row.get("latency_slow"):
            runs.append((row["latency_slow"], plan.slow_rate))
        for run, rate in runs:
            for q, goal in (("p50", 2.0), ("p99", 10.0)):
                add(
                    f"{protocol}: per-event added latency {q}, in the bridge, {rate:g}/s",
                    _get(run, "bridge_minus_model_ms", q),
                    "ms",
                    goal,
                    "in the bridge",
                    f"of which queued_ms {q} {report.ms(_get(run, 'queued_ms', q), 2)}",
                )
        for q in ("p50", "p99"):
            add(
                f"{protocol}: per-event added latency {q}, own work, {plan.rate:g}/s",
                _get(latency, "own_work_ms", q),
                "ms",
                None,
                "own work",
            )
        for q, goal in (("p50", 2.0), ("p99", 10.0)):
            e2e = _get(latency, "end_to_end_ms", q)
            direct_q = _get(call, q)
            add(
                f"{protocol}: per-event added latency {q}, end to end vs direct, {plan.rate:g}/s",
                _minus(e2e, direct_q),
                "ms",
                goal,
                "end to end vs direct",
                f"{report.ms(e2e)} - {report.ms(direct_q)}",
            )
        for q in ("p50", "p99"):
            e2e = _get(latency, "end_to_end_ms", q)
            add(
                f"{protocol}: per-event added latency {q}, net of pass-through, {plan.rate:g}/s",
                _minus(_minus(e2e, _get(pt_e2e, q)), _get(call, q)),
                "ms",
                None,
                "net of the pass-through",
                f"{report.ms(e2e)} - {report.ms(_get(pt_e2e, q))} - {report.ms(_get(call, q))}",
            )
    bridges = [row for row in results["rows"] if row["kind"] == "bridge"]

    def worst(values: list[Any]) -> tuple[float | None, str]:
        known = [(v, row["name"]) for v, row in zip(values, bridges, strict=True) if v is not None]
        if not known:
            return None, ""
        value, name = max(known)
        return value, name

    value, name = worst([row.get("peak_rss_mb") for row in bridges])
    add("bridge peak RSS (worst row)", value, "MB", 80, "rss", name)
    value, name = worst([row.get("idle_rss_mb") for row in bridges])
    add("bridge idle RSS (worst row)", value, "MB", 80, "rss", name)
    value, name = worst([_start_less_join(row) for row in bridges])
    add(
        "bridge start -> consuming, less the group-join wait (worst row)",
        value,
        "s",
        1,
        "start",
        name,
    )
    value, name = worst([_get(row, "start_s", "consuming") for row in bridges])
    add("bridge start -> consuming (worst row)", value, "s", None, "start", name)
    value, name = worst([_get(row, "start_s", "joining_group") for row in bridges])
    add("bridge start -> joining_group (worst row)", value, "s", 1, "start", name)
    return found


def _start_less_join(row: dict[str, Any]) -> float | None:
    """Start -> consuming without the broker's group-join wait (joining -> assigned)."""
    start = row.get("start_s") or {}
    joining, assigned, consuming = (
        start.get(k) for k in ("joining_group", "partitions_assigned", "consuming")
    )
    if joining is None or assigned is None or consuming is None:
        return None
    return round(float(consuming) - (float(assigned) - float(joining)), 3)


def print_results(results: dict[str, Any], plan: Plan) -> None:
    setup = results["setup"]
    model = setup.get("model") or {}
    say()
    say("Headline: the bridge's CPU per event beside a bare Kafka pass-through, same run")
    _targets_table([t for t in results["targets"] if t["definition"] in HEADLINE])
    say()
    say(
        f"model {model.get('target')} (version {model.get('version')}, signature "
        f"{model.get('signature')}), server start {setup.get('server_start_s')} s, "
        f"load average at the end {setup.get('load_average_at_end')}"
    )
    say()
    say(
        "Throughput: N events produced before the process starts; "
        "events/s = N / (last output read - 'consuming' log line)"
    )
    rows = []
    for row in results["rows"]:
        cpu = row["cpu_share"]
        start = row["start_s"]
        rows.append(
            [
                row["name"],
                row["events"],
                report.rate(row["events_per_s"]),
                report.ms((row.get("cpu_us_per_event") or {}).get("process"), 1),
                *(
                    _pct(cpu.get(part))
                    for part in ("process", "server", "broker", "bench", "others")
                ),
                report.ms(row.get("idle_rss_mb")),
                report.ms(row.get("peak_rss_mb")),
                report.ms(start.get("joining_group"), 2),
                report.ms(start.get("partitions_assigned"), 2),
                report.ms(start.get("consuming"), 2),
                report.ms(start.get("first_output"), 2),
                row.get("exit_code"),
            ]
        )
    say(
        table(
            [
                "row",
                "N",
                "events/s",
                "us/ev",
                "cpu proc",
                "server",
                "broker",
                "bench",
                "others",
                "RSS idle",
                "RSS peak",
                "->join s",
                "->assigned",
                "->consuming",
                "->1st out",
                "exit",
            ],
            rows,
            align="l" + "r" * 15,
            rule=True,
        )
    )
    say(
        "  cpu: share of one core used while outputs arrived (proc = the bridge or the loop; "
        "bench = this process reading outputs; others = everything else on the machine); "
        "us/ev: CPU microseconds the bridge (or pass-through) process spent per event"
    )
    say(
        "  RSS MB: idle = VmRSS once started, before partitions are assigned; peak = VmHWM; "
        "->: seconds from process start to the log line / the first output read"
    )
    say()
    say(f"Limit 1, direct: the bridge's own clients from this process, {IN_FLIGHT} calls in flight")
    rows = []
    for protocol, direct in results["direct"].items():
        for key in (f"batch_{1}", f"batch_{plan.batch}"):
            entry = direct.get(key)
            if entry:
                rows.append(
                    [
                        f"direct {protocol} batch {entry['batch_size']}",
                        entry["instances"],
                        report.rate(entry["instances_per_s"]),
                        report.ms(entry["call_ms"]["p50"], 2),
                        report.ms(entry["call_ms"]["p99"], 2),
                    ]
                )
        paced = direct.get("paced_batch_1")
        if paced:
            rows.append(
                [
                    f"direct {protocol} batch 1, paced {paced['rate']:g}/s, 1 in flight",
                    paced["calls"],
                    "-",
                    report.ms(paced["call_ms"]["p50"], 2),
                    report.ms(paced["call_ms"]["p99"], 2),
                ]
            )
    headers = ["limit", "instances", "instances/s", "call p50 ms", "call p99 ms"]
    say(table(headers, rows, align="lrrrr", rule=True))
    say()
    say(
        "Latency, per event, paced after the throughput run "
        "(input CreateTime -> result read by this process), ms"
    )
    rows = []
    parts = (
        ("end_to_end_ms", "end to end"),
        ("kafka_in_ms", "  kafka in (input created -> fetched by the bridge)"),
        ("bridge_ms", "  bridge_ms (fetched -> handed to the producer)"),
        ("queued_ms", "    queued_ms (fetched -> model call started)"),
        ("model_ms", "    model_ms (the model call)"),
        ("bridge_minus_model_ms", "    bridge_ms - model_ms"),
        ("own_work_ms", "    bridge_ms - model_ms - queued_ms"),
        ("kafka_out_ms", "  kafka out (handed to the producer -> read)"),
    )
    for row in results["rows"]:
        for run_key in ("latency", "latency_slow"):
            latency = row.get(run_key)
            if not latency:
                continue
            for key, label in parts:
                dist = latency[key]
                if not dist["count"]:
                    continue
                if row["kind"] == "pass-through" and key == "kafka_in_ms":
                    label = "  kafka in + the loop (input created -> output handed over)"
                rows.append(
                    [f"{row['name']} @{latency['rate']:g}/s: {label}"]
                    + [report.ms(dist[q], 2) for q in ("p50", "p95", "p99", "max")]
                    + [dist["count"]]
                )
    say(table(["", "p50", "p95", "p99", "max", "n"], rows, align="lrrrrr", rule=True))
    say()
    say("Targets")
    _targets_table(results["targets"])
    say()
    used = {t["definition"] for t in results["targets"]}
    for key, text in DEFINITIONS.items():
        if key in used:
            say(f"  {key}: {text}")


HEADLINE = ("cpu per event", "saturation", "throughput")


def _targets_table(targets: list[dict[str, Any]]) -> None:
    rows = [
        [
            t["target"],
            f"{report.ms(t['value'], 2)} {t['unit']}",
            t["goal"],
            report.verdict(t["pass"]) if t["goal"] != "(info)" else "",
            t["detail"],
        ]
        for t in targets
    ]
    say(table(["target", "measured", "goal", "", "detail"], rows, align="lrrll", rule=True))


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.0f}%"


if __name__ == "__main__":
    sys.exit(main())
