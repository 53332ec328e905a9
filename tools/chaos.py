"""``make chaos``: the long versions of the integration tests' faults, one table at the end.

What it proves: README "The promise" and "Faults, and what each one costs", over runs
too long for CI. Every input ends as a record (nothing missing); duplicates appear
only where the README says a fault may cause them, and within its bound; a fault
never turns into failure records; after a fault ends the bridge writes again by
itself within about two seconds; bad input never stops it. Each scenario is one row:

- kill -9 x10: a 100k-payment stream (some malformed), one bridge at a time, SIGKILLed
  at spread-out points and restarted. Each kill's replay (what the dead bridge wrote at
  or after its group's committed offset) must be <= MAX_PENDING + two
  COMMIT_INTERVAL_MS of that bridge's measured output rate (+10 % for the measurement).
- model server outages x5 (5, 10, 20, 30, 60 s) under a gRPC and a REST bridge at
  once: no failure records from the outages, no duplicates.
- broker stalls x3 (12, 20, 30 s, SIGSTOP of a broker of its own) past the request
  timeout and the session: duplicates <= MAX_PENDING per stall + the outputs the
  bridge resent (the broker may have written them without acknowledging).
- churn x48: three bridges in one group, one replaced every 2.5 s (SIGTERM, every fourth
  SIGKILL): a duplicate must be explained by a SIGKILL (test_churn.py's rule, and its
  first copy was written before that kill). Seen to miss on the dev broker: Tansu may
  form a new generation without waiting for a member that has not yet heard of the
  rebalance; that member's next commit is rejected, and the partition's new owner
  writes again what it wrote since its last landed commit.
- fuzz: 100k inputs of test_fuzz.py's malformed kinds, via aiokafka and librdkafka
  (lz4), with broken raw batches (non-UTF-8 header keys, CRC mismatches): one record
  each with the reason the input earned, no ``internal_error``, the bridge never exits.

How to read the table: ``events`` inputs produced; ``missing`` inputs without a
record; ``duplicates`` inputs with more than one record, then ``<=`` the bound they
must stay within (for churn: how many of them a SIGKILL explains); ``fault failures``
failure records whose reason the input did not earn (malformed inputs earn theirs);
``resume s`` the worst time from a fault ending to the first new output the bridge
wrote (its Kafka timestamp), then ``<=`` the bound, blank where no fault ends (for
kill -9: from the restart, which includes the dead member's session expiring and the
group's join wait; shown, no bound); ``peak RSS`` the largest VmHWM of the scenario's
bridges; ``took`` its wall time.
A row is MISS if any check failed; the reasons are printed under the table.
Results go to ``out/chaos/summary.json``; logs to ``out/chaos/<scenario>/``.

    python -m tools.chaos [--only kill9,outages,stalls,churn,fuzz] [--scale 0.05]

``--scale`` multiplies event counts, fault counts and fault lengths (each with a
floor that keeps the scenario meaningful); 0.05 runs everything in about 2 minutes,
1 (the default) in about 15 (up to 20) on two cores. Exit 0 only if every row passes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bridge.ops.output import table
from tools import report
from tools.chaos_kit import Row, Stage
from tools.chaos_outages import OUTAGE_SETTINGS, STALL_SETTINGS, outages, stalls
from tools.chaos_scenarios import (
    CHURN_SETTINGS,
    FUZZ_SETTINGS,
    KILL_SETTINGS,
    churn,
    fuzz,
    kill9,
)
from tools.harness.broker import DevBroker
from tools.harness.processes import REPO
from tools.report import say

Scenario = Callable[[Stage, Row], Coroutine[Any, Any, None]]
SCENARIOS: dict[str, Scenario] = {
    "kill9": kill9,
    "outages": outages,
    "stalls": stalls,
    "churn": churn,
    "fuzz": fuzz,
}
SETTINGS = {  # BRIDGE_... variables over the defaults, per scenario
    "kill9": KILL_SETTINGS,
    "outages": OUTAGE_SETTINGS,
    "stalls": STALL_SETTINGS,
    "churn": CHURN_SETTINGS,
    "fuzz": FUZZ_SETTINGS,
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.chaos",
        description="Long fault runs (kill -9, model server outages, broker stalls, churn, "
        "fuzz) with one summary table.",
    )
    parser.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help=f"comma-separated scenarios to run (default all: {', '.join(SCENARIOS)})",
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiplies event counts, fault counts and fault lengths (0.05: a ~3 min run)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "out" / "chaos", help="output folder")
    args = parser.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in args.only if name not in SCENARIOS]
    if unknown or not args.only:
        parser.error(f"--only takes {', '.join(SCENARIOS)} (got {args.only})")
    if not 0 < args.scale <= 10:
        parser.error("--scale must be in (0, 10]")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report.check_models()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").unlink(missing_ok=True)
    report.unwind_on_sigterm()
    started = time.monotonic()
    setup = describe_setup(args)
    print_setup(setup)
    rows: list[Row] = []
    broker: DevBroker | None = None
    server = report.model_server(out)
    try:
        broker = DevBroker().start()
        began = time.monotonic()
        server.start()
        setup["server_start_s"] = round(time.monotonic() - began, 2)
        setup["broker_bootstrap"] = broker.bootstrap_servers
        say(f"broker {broker.bootstrap_servers}; model server ready in {setup['server_start_s']} s")
        stage = Stage(args.scale, out, broker.bootstrap_servers, server, setup["server_start_s"])
        for name in args.only:
            if server.process is None or server.process.poll() is not None:
                server.start()  # an outage scenario that broke off left it down
            rows.append(run_scenario(stage, name, SCENARIOS[name]))
    except KeyboardInterrupt:
        say("interrupted; stopping everything")
        return 130
    finally:
        server.stop()
        if broker is not None:
            with contextlib.suppress(OSError, ValueError):
                (out / "broker.log").write_text(broker.output())
            broker.stop()
    wall_s = round(time.monotonic() - started, 1)
    setup["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    ok = all(row.ok for row in rows)
    summary = {
        "ok": ok,
        "wall_s": wall_s,
        "setup": setup,
        "rows": [
            asdict(row) | {"name": name, "ok": row.ok}
            for name, row in zip(args.only, rows, strict=True)
        ],
    }
    report.write_json(out / "summary.json", jsonable(summary))
    print_table(rows, wall_s)
    say(f"\nsummary: {out / 'summary.json'}; logs: {out}/")
    return 0 if ok else 1


def jsonable(value: Any) -> Any:
    """JSON as orjson writes it: string keys (partitions are ints), no infinities."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def run_scenario(stage: Stage, name: str, scenario: Scenario) -> Row:
    """One scenario in an event loop of its own; a scenario that breaks is a MISS row."""
    row = Row(name)
    say(f"\n== {name}")
    began = time.monotonic()
    try:
        asyncio.run(scenario(stage, row))
    except Exception as exc:  # noqa: BLE001 - a broken scenario is a MISS row; the rest still run
        row.problems.append(f"did not finish: {type(exc).__name__}: {str(exc)[:2000]}")
    else:
        row.judge()
    row.wall_s = round(time.monotonic() - began, 1)
    say(f"== {row.scenario}: {report.verdict(row.ok)} in {row.wall_s:.0f} s")
    for problem in row.problems:
        say(f"   {problem[:400]}")
    return row


# -- setup and table ---------------------------------------------------------------------


def describe_setup(args: argparse.Namespace) -> dict[str, Any]:
    machine = report.machine()
    return machine | {
        "broker": machine["broker"]
        + "; one for the run, the broker stalls freeze one of their own",
        "server": "local TF Serving-compatible server (python -m serving) with the sidecar's "
        "flags (models.config, labels, server-side batching); one for the run, restarted "
        "on the same ports for the outages",
        "scale": args.scale,
        "settings": {name: SETTINGS[name] for name in args.only},
        "scenarios": args.only,
        "out": str(args.out),
    }


def print_setup(setup: dict[str, Any]) -> None:
    say("tfs-kafka-bridge chaos")
    say(f"  date      {setup['date']}, commit {setup['commit'] or 'unknown'}")
    say(
        f"  machine   {setup['cpus']} cores ({setup['cpus_usable']} usable, "
        f"{setup['cpu_model'] or 'unknown model'}), load average "
        f"{setup['load_average_at_start']}, Python {setup['python']}"
    )
    say(f"  broker    {setup['broker']}")
    say(f"  server    {setup['server']}")
    say(f"  run       scale {setup['scale']:g}: {', '.join(setup['scenarios'])}")
    say("  settings  the bridge's defaults, and per scenario:")
    for name, settings in setup["settings"].items():
        shown = " ".join(f"{k.removeprefix('BRIDGE_')}={v}" for k, v in settings.items())
        say(f"    {name:<9} {shown}")
    say()


def print_table(rows: Sequence[Row], wall_s: float) -> None:
    headers = [
        "scenario",
        "events",
        "missing",
        "duplicates",
        "fault failures",
        "resume s",
        "peak RSS MB",
        "took s",
        "",
    ]
    lines = []
    for row in rows:
        resume = ""
        if row.resume_s is not None:
            resume = f"{row.resume_s:.2f}"
            if row.resume_bound_s is not None:
                resume += f" <= {row.resume_bound_s:g}"
        lines.append(
            [
                row.scenario,
                f"{row.events:,}",
                f"{row.missing:,}",
                f"{row.duplicates:,} <= {row.duplicate_bound:,}",
                f"{row.fault_failures:,}",
                resume,
                report.ms(row.peak_rss_mb),
                f"{row.wall_s:.0f}",
                report.verdict(row.ok),
            ]
        )
    say()
    say(f"Chaos summary ({wall_s / 60:.1f} min)")
    say(table(headers, lines, align="lrrrrrrrl", rule=True))
    for row in rows:
        for problem in row.problems:
            say(f"  MISS {row.scenario}: {problem[:600]}")


if __name__ == "__main__":
    raise SystemExit(main())
