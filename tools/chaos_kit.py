"""What the ``make chaos`` scenarios share: the run's stage, a row of the table, and the
measurements (accounting, duplicates explained by kills, bounds).
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bridge.kafka.records import BRIDGE
from tools.chaos_io import RssPeaks, clock
from tools.harness.fuzz import FAILURE, REASONS
from tools.harness.kafka_io import Sent, Topics, end_offsets, missing
from tools.harness.outputs import Outputs, SourceKey, duplicated, order_violations
from tools.harness.processes import BridgeProcess, ModelServer, bridge_env

REASON = BRIDGE + "reason"
# From the fault ending to the first new output: README "resumes by itself within about
# two seconds". The bridge probes a down model server at most every 2 s
# (BRIDGE_RETRY__PROBE_MAX_BACKOFF_MS), then one Predict and one produce follow.
RESUME_BOUND_S = 3.0
# A kill's replays are measured against a bound computed from the bridge's measured
# output rate; 10 % for that measurement (as tests/integration/test_recovery.py).
RATE_SLACK = 1.1
STEADY_S = 5.0  # of normal flow between two faults
MALFORMED_EVERY = 50  # payments with a malformed one now and then: earned failures


@dataclass(frozen=True)
class Stage:
    """What every scenario gets: the scale, its folder, the shared broker and model server."""

    scale: float
    out: Path
    bootstrap: str
    server: ModelServer
    server_start_s: float

    def folder(self, name: str) -> Path:
        path = self.out / name
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.log"):
            stale.unlink()
        return path

    def count(self, full: int, minimum: int) -> int:
        return max(minimum, round(full * self.scale))

    def seconds(self, full: float, minimum: float) -> float:
        return max(minimum, full * self.scale)


@dataclass
class Row:
    """One scenario's line in the table (and its entry in summary.json)."""

    scenario: str
    events: int = 0
    missing: int = 0
    duplicates: int = 0  # inputs with more than one record
    duplicate_bound: int = 0
    fault_failures: int = 0  # failure records the input did not earn
    resume_s: float | None = None  # worst, fault end -> first new output; None: no fault ends
    resume_bound_s: float | None = None  # None: measured, no target
    peak_rss_mb: float | None = None
    wall_s: float = 0.0
    settings: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def check(self, ok: bool, problem: str) -> None:
        if not ok:
            self.problems.append(problem)

    def judge(self) -> None:
        """The checks every row has: nothing lost, duplicates and resume within bounds."""
        self.check(self.missing == 0, f"{self.missing} inputs without a record")
        self.check(
            self.duplicates <= self.duplicate_bound,
            f"{self.duplicates} duplicated inputs, bound {self.duplicate_bound}",
        )
        self.check(
            self.fault_failures == 0,
            f"{self.fault_failures} failure records the input did not earn",
        )
        if self.resume_s is not None and self.resume_bound_s is not None:
            self.check(
                self.resume_s <= self.resume_bound_s,
                f"resumed after {self.resume_s:.2f} s, bound {self.resume_bound_s:g} s",
            )


def topic_prefix(name: str) -> str:
    return f"chaos-{name}-{uuid.uuid4().hex[:6]}"


def env_for(stage: Stage, topics: Topics, settings: dict[str, str], **extra: str) -> dict[str, str]:
    return bridge_env(
        stage.bootstrap, topics.names, stage.server, group=topics.group, **settings, **extra
    )


async def stop(bridge: BridgeProcess, rss: RssPeaks, row: Row) -> None:
    """SIGTERM; the bridge must finish, commit and exit 0."""
    rss.sample([bridge])
    code = await asyncio.to_thread(bridge.stop)
    row.check(code == 0, f"{bridge.log_path.name} exited {code} on SIGTERM")


# -- accounting --------------------------------------------------------------------------


def earned(expected: str, reason: str | None) -> bool:
    """Did the input ask for this failure? (random bytes may fail with any listed reason)"""
    if expected == FAILURE:
        return reason in REASONS
    return reason == expected


def account(row: Row, sent: Sequence[Sent], out: Outputs, topics: Topics) -> None:
    """Events, missing, duplicates and unearned failures of ``sent``, and
    order per partition (on each input's first record, as the tests check it)."""
    expected = {s.source: s.item.expected for s in sent}
    row.events = len(sent)
    row.missing = len(missing(sent, out))
    dups = duplicated(out)
    row.duplicates = len(dups)
    row.details["extra_records"] = sum(n - 1 for n in dups.values())
    unearned: list[tuple[SourceKey, str, str | None]] = []
    wrong_results = unknown = 0
    for record in out.records:
        for source in record.sources:
            want = expected.get(source)
            if want is None:
                unknown += 1
            elif record.kind == "failure" and not earned(want, record.header(REASON)):
                unearned.append((source, want, record.header(REASON)))
            elif record.kind == "result" and want != "result":
                wrong_results += 1
    row.fault_failures = len(unearned)
    if unearned:
        reasons: dict[str, int] = {}
        for _, _, reason in unearned:
            reasons[str(reason)] = reasons.get(str(reason), 0) + 1
        row.details["unearned_failures"] = {"by_reason": reasons, "sample": unearned[:10]}
    row.check(wrong_results == 0, f"{wrong_results} results for inputs that must fail")
    row.check(unknown == 0, f"{unknown} records for inputs never produced")
    disorder = order_violations(out, topics.partitions)
    row.check(not disorder, f"{len(disorder)} records out of order: {disorder[:3]}")


def commits_reached_end(row: Row, sent: Sequence[Sent], final: Mapping[int, int | None]) -> None:
    ends = end_offsets(sent)
    row.check(dict(final) == ends, f"the group committed {dict(final)}, the inputs end at {ends}")


def worst(values: Iterable[float | None]) -> float | None:
    """The largest value; inf if one is missing (never came), None if there are none."""
    found = [math.inf if v is None else v for v in values]
    return max(found) if found else None


def runs_text(runs: list[dict[str, Any]], shown: int = 4) -> str:
    """Runs of duplicated inputs, briefly: partition[first-last] written at ..."""
    text = "; ".join(
        f"p{r['partition']}[{r['first']}-{r['last']}] written at {', '.join(r['written_at'])}"
        for r in runs[:shown]
    )
    return text + (f"; ... ({len(runs)} runs)" if len(runs) > shown else "")


def secs(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f} s"


# -- kills -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kill:
    """A SIGKILL: what the bridge owned, what its group had committed, when it was dead."""

    partitions: frozenset[int]
    committed: Mapping[int, int | None]
    at: float  # wall clock

    def explains(self, source: tuple[int, int], first_written: float) -> bool:
        """A replay after this kill: a partition it owned, at or after the committed offset,
        first written before it died."""
        partition, offset = source
        return (
            partition in self.partitions
            and offset >= (self.committed.get(partition) or 0)
            and first_written <= self.at
        )


@dataclass(frozen=True)
class Fence:
    """A member whose commit the group rejected, on the dev broker.

    Tansu may form a new generation without waiting for a member that has not yet heard
    of the rebalance (Apache Kafka waits for it, up to the rebalance timeout). That
    member's next commit is rejected and it stops writing (``fenced``), but the
    partition's new owner writes again what it wrote since its last landed commit: at
    most a few commit intervals before the rejection.
    """

    partitions: frozenset[int]
    at: float  # wall clock of the ``fenced`` log line
    window_s: float

    def explains(self, source: tuple[int, int], first_written: float) -> bool:
        return source[0] in self.partitions and self.at - self.window_s <= first_written <= self.at


def fences_in(logs: Iterable[Sequence[Mapping[str, Any]]], window_s: float) -> list[Fence]:
    """The ``fenced`` lines of each bridge's log, with the partitions it held then."""
    fences = []
    for events in logs:
        held: frozenset[int] = frozenset()
        for event in events:
            if event.get("event") == "partitions_assigned":
                held = frozenset(event["partitions"])
            elif event.get("event") == "fenced":
                at = datetime.fromisoformat(event["timestamp"]).timestamp()
                fences.append(Fence(held, at, window_s))
    return fences


def loosely_unexplained(out: Outputs, kills: Sequence[Kill]) -> list[tuple[int, int]]:
    """Duplicates test_churn.py's rule alone leaves unexplained (for comparison)."""
    return sorted(
        (partition, offset)
        for partition, offset in duplicated(out)
        if not any(
            partition in k.partitions and offset >= (k.committed.get(partition) or 0) for k in kills
        )
    )


def duplicate_ranges(out: Outputs, sources: Iterable[tuple[int, int]]) -> list[dict[str, Any]]:
    """Duplicated inputs as runs of consecutive offsets per partition, with when each copy
    of the run's first input was written (UTC): what to look for in the bridges' logs."""
    copies: dict[tuple[int, int], list[float]] = {}
    wanted = set(sources)
    for record in out.records:
        for source in record.sources:
            if source in wanted:
                copies.setdefault(source, []).append(record.timestamp_s)
    runs: list[dict[str, Any]] = []
    for partition, offset in sorted(wanted):
        last = runs[-1] if runs else None
        if last and last["partition"] == partition and last["last"] == offset - 1:
            last["last"] = offset
            last["inputs"] += 1
            continue
        written = sorted(copies.get((partition, offset), []))
        runs.append(
            {
                "partition": partition,
                "first": offset,
                "last": offset,
                "inputs": 1,
                "written_at": [clock(t) for t in written],
            }
        )
    return runs


def describe_kills(kills: Sequence[Kill]) -> list[dict[str, Any]]:
    return [
        {"at": clock(k.at), "partitions": sorted(k.partitions), "committed": dict(k.committed)}
        for k in kills
    ]


def unexplained_duplicates(
    out: Outputs, kills: Sequence[Kill], fences: Sequence[Fence] = ()
) -> list[tuple[int, int]]:
    """Duplicated inputs whose extra copies are more than the SIGKILLs (and, on the dev
    broker, the fenced members) that explain them.

    tests/integration/test_churn.py's rule (a partition the killed bridge owned, at or
    after the offset committed when it died), plus: the first copy was written before
    that kill. Without it, one early kill would excuse every later duplicate of its
    partitions, and a long run has many kills.
    """
    copies: dict[tuple[int, int], list[float]] = {}
    for record in out.records:
        for source in record.sources:
            copies.setdefault(source, []).append(record.timestamp_s)
    wrong = []
    for source, written in copies.items():
        if len(written) < 2:
            continue
        first = min(written)
        explaining = sum(1 for k in kills if k.explains(source, first))
        explaining += sum(1 for f in fences if f.explains(source, first))
        if len(written) - 1 > explaining:
            wrong.append(source)
    return sorted(wrong)
