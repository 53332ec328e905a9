"""What ``GET /livez`` and ``GET /readyz`` answer, read from the state the pipeline keeps.

Liveness (restart me if it fails): the event loop answers (the responder runs on
the loop, so any answer at all proves it), every long-running task is alive, and
no partition is stuck. Readiness (I do my job): every routed target was found on
the model server, the server is up, and the consumer is in its group.

Nothing here calls Kafka or the model server: a probe reads attributes and
returns, so it is as cheap as a scrape and is never blocked by the pipeline. The
checks are pure functions over plain values (unit-tested without sockets);
``Probes`` reads those values from the bridge's parts.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from bridge.settings import Settings

OK = "ok"
# Below this, a liveness restart would more likely cut a slow but healthy request
# short than rescue a stuck partition.
STUCK_FLOOR_S = 60.0
# While idle no request tells the bridge the server went away; a probe this often
# keeps readiness (and the pause) true within a few seconds of an outage.
SERVER_WATCH_S = 5.0


Check = tuple[bool, str]  # passed, and what the body says (``ok``, or why not)


@dataclass(frozen=True, slots=True)
class Verdict:
    """One endpoint's answer: healthy if every check passed; the body names each result."""

    checks: dict[str, Check]

    @property
    def ok(self) -> bool:
        return all(passed for passed, _ in self.checks.values())

    @property
    def failed(self) -> list[str]:
        return [name for name, (passed, _) in self.checks.items() if not passed]

    def body(self) -> bytes:
        checks = {name: text for name, (_, text) in self.checks.items()}
        status = "ok" if self.ok else "fail"
        return json.dumps({"status": status, "checks": checks}).encode() + b"\n"


def stuck_after_s(settings: Settings) -> float:
    """How long a partition's oldest event may wait while nothing is paused.

    The longest a healthy bridge can legitimately take over one event: its batch
    fills, its request exhausts every attempt at the full deadline with the longest
    backoff between them, then is split in halves down to single events (a rejected
    batch), a missing version is retried for NOT_FOUND_TIMEOUT, and its output
    waits a producer request timeout before the delivery counts the broker as down
    (which pauses). Derived from settings the operator already tunes, so a slower
    model (a longer TIMEOUT_MS) widens it without another knob.
    """
    serving, retry, batch = settings.serving, settings.retry, settings.batch
    call_s = serving.timeout_ms / 1000
    request_s = call_s * retry.max_attempts + retry.max_backoff_ms / 1000 * (retry.max_attempts - 1)
    splits = math.ceil(math.log2(batch.max_size)) if batch.max_size > 1 else 0
    bound = (
        batch.max_wait_ms / 1000
        + request_s
        + splits * call_s
        + retry.not_found_timeout_ms / 1000
        + settings.kafka.request_timeout_ms / 1000
    )
    return max(STUCK_FLOOR_S, bound)


def tasks_check(tasks: Sequence[asyncio.Task[Any]], stopping: bool) -> Check:
    """Passes while every task runs; else names which ended and how."""
    if stopping:
        return True, "ok (stopping)"  # shutdown ends the tasks on purpose
    ended = []
    for task in tasks:
        if not task.done():
            continue
        if task.cancelled():
            how = "cancelled"
        elif (error := task.exception()) is not None:
            how = f"failed: {error!r}"
        else:
            how = "returned"  # these loop until cancelled: a return is a bug too
        ended.append(f"{task.get_name()} {how}")
    return (False, "; ".join(ended)) if ended else (True, OK)


@dataclass(slots=True)
class HeadWatch:
    """Tells a stuck partition from a slow one: has its oldest event stayed the same?

    An old oldest event alone is no proof: events fetched together share a fetch
    time, so under a slow model the head of a partition can be old while it moves
    on every call. A partition is stuck when its head is older than the bound and
    has been the same event for the bound (as far as the probes saw).
    """

    bound_s: float
    _heads: dict[str, tuple[int, float]] = field(default_factory=dict)  # offset, first seen

    def check(
        self, now: float, heads: Mapping[str, tuple[int, float]], *, server_up: bool, paused: bool
    ) -> Check:
        """``heads``: per partition, its oldest event's offset and fetch time (loop time)."""
        if not server_up or paused:
            # Not the bridge's fault; and after the hold every head gets a fresh bound.
            self._heads.clear()
            return True, "ok (not checked: " + ("paused)" if server_up else "model server down)")
        seen = self._heads
        for name in [name for name in seen if name not in heads]:
            del seen[name]
        stuck = []
        for name, (offset, fetched) in sorted(heads.items()):
            known = seen.get(name)
            if known is None or known[0] != offset:
                seen[name] = known = (offset, now)
            age = now - fetched
            if age > self.bound_s and now - known[1] >= self.bound_s:
                stuck.append(f"{name}: oldest event {age:.0f} s (offset {offset})")
        if stuck:
            return False, "; ".join(stuck) + f" (bound {self.bound_s:.0f} s)"
        return True, OK


def server_check(up: bool) -> Check:
    return (True, OK) if up else (False, "model server down")


def routes_check(opened: bool, waiting: Mapping[str, str]) -> Check:
    if waiting:
        why = "; ".join(
            f"waiting for {target}: {error}" for target, error in sorted(waiting.items())
        )
        return False, why
    return (True, OK) if opened else (False, "routes not opened yet")


def group_check(assigned: int | None, fenced: bool) -> Check:
    """``assigned``: partitions of the current assignment; None while not in the group.

    A member with no partitions is ready: it is in the group and takes partitions at
    the next rebalance; failing it would stall a rollout of more replicas than
    partitions for good, though nothing is wrong with any of them.
    """
    if fenced:
        return False, "fenced by a rebalance: rejoining"
    if assigned is None:
        return False, "joining the consumer group"
    if assigned == 0:
        return True, "ok (in the group, no partitions: more members than partitions)"
    return True, f"ok ({assigned} partition{'' if assigned == 1 else 's'})"


class Head(Protocol):
    """What the probes read of a partition's ledger (``bridge.pipeline.ledger``)."""

    def oldest_offset(self) -> int | None: ...
    def oldest_fetched(self) -> float | None: ...


def partition_heads(ledgers: Mapping[Any, Head]) -> dict[str, tuple[int, float]]:
    """Per busy partition (``topic-N``), its oldest event's offset and fetch time."""
    heads = {}
    for tp, ledger in ledgers.items():
        offset, fetched = ledger.oldest_offset(), ledger.oldest_fetched()
        if offset is not None and fetched is not None:
            heads[f"{tp.topic}-{tp.partition}"] = (offset, fetched)
    return heads


class Up(Protocol):
    @property
    def up(self) -> bool: ...

    async def hold_if_down(self) -> bool: ...


class LanesState(Protocol):
    @property
    def opened(self) -> bool: ...

    @property
    def waiting(self) -> Mapping[str, str]: ...


@dataclass(slots=True)
class Pipeline:
    """What the probes read of a running service (``bridge.service.Service``)."""

    tasks: Callable[[], Sequence[asyncio.Task[Any]]]
    heads: Callable[[], Mapping[str, tuple[int, float]]]
    paused: Callable[[], bool]
    assigned: Callable[[], int | None]
    fenced: Callable[[], bool]


class Probes:
    def __init__(
        self, health: Up, lanes: LanesState, stopping: Callable[[], bool], stuck_after: float
    ) -> None:
        self._health = health
        self._lanes = lanes
        self._stopping = stopping
        self._watch = HeadWatch(stuck_after)
        self._pipeline: Pipeline | None = None
        self._own: list[asyncio.Task[Any]] = []

    def attach(self, pipeline: Pipeline) -> None:
        """The service, once it exists."""
        self._pipeline = pipeline

    def own(self, task: asyncio.Task[Any]) -> None:
        """A long-running task outside the service (the server watch) that must stay alive."""
        self._own.append(task)

    def pages(self) -> dict[str, Callable[[], tuple[bool, bytes]]]:
        """The endpoint's paths: whether the probe passed, and its JSON body."""

        def page(check: Callable[[], Verdict]) -> Callable[[], tuple[bool, bytes]]:
            def answer() -> tuple[bool, bytes]:
                verdict = check()
                return verdict.ok, verdict.body()

            return answer

        return {"/livez": page(self.livez), "/readyz": page(self.readyz)}

    def livez(self) -> Verdict:
        pipeline = self._pipeline
        stopping = self._stopping()
        tasks = [*self._own, *(pipeline.tasks() if pipeline else ())]
        if pipeline is None:
            stuck: Check = True, "ok (not consuming yet)"
        else:
            stuck = self._watch.check(
                asyncio.get_running_loop().time(),
                pipeline.heads(),
                server_up=self._health.up,
                paused=pipeline.paused(),
            )
        return Verdict(
            {
                "event_loop": (True, OK),  # this answer is computed on the loop
                "tasks": tasks_check(tasks, stopping),
                "stuck_partitions": stuck,
            }
        )

    def readyz(self) -> Verdict:
        pipeline = self._pipeline
        if pipeline is None:
            group: Check = False, "not joined yet: the routes open first"
        else:
            group = group_check(pipeline.assigned(), pipeline.fenced())
        checks = {
            "model_server": server_check(self._health.up),
            "routes": routes_check(self._lanes.opened, self._lanes.waiting),
            "consumer_group": group,
        }
        if self._stopping():
            checks["process"] = (False, "stopping")
        return Verdict(checks)


async def watch_server(health: Up, interval_s: float = SERVER_WATCH_S) -> None:
    """Probe the server now and then, so an outage shows while no event is in flight.

    ``hold_if_down`` probes once; if the server is down it marks it so (the bridge
    pauses, as it would on the next event) and returns once it is back.
    """
    while True:
        await asyncio.sleep(interval_s)
        await health.hold_if_down()
