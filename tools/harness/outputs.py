"""The bridge's outputs read back: one parser for its records and one reader of its topics.

Every output record points back at its input: a result's JSON ``source``, a failure's
``__connect.errors.partition/offset`` headers (Kafka Connect's dead-letter convention).
That mapping is what "every input ends as exactly one record" is checked against, by
the tests, the demo, the bench and the chaos runs alike.

The reader either polls when asked (``poll``: the tests and chaos runs read in step
with what they check) or follows the topics in a task of its own (``follow``: the demo
and the bench keep producing while it reads, and timestamp each read).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Self

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from bridge.kafka.records import BRIDGE, CONNECT

Headers = tuple[tuple[str, bytes], ...]
SourceKey = tuple[int, int]  # (input partition, input offset)
# aiokafka's default fetch wait. Tansu answers a fetch up to about half of
# fetch.max.wait.ms after data arrives (it does not wake the fetch on produce), so a
# reader that measures latency waits 10 ms instead (adds ~0-5 ms, not ~0-250 ms).
DEFAULT_FETCH_WAIT_MS = 500
LATENCY_FETCH_WAIT_MS = 10


@dataclass(frozen=True, slots=True)
class Output:
    """One record the bridge (or the bench's pass-through) wrote, and its input."""

    kind: str  # "result" | "failure"
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers
    source_topic: str
    source: SourceKey
    body: dict[str, Any] | None  # the parsed result JSON; None for failures
    last_offset: int = -1  # a failure for a batch nothing could be read from covers a range
    timestamp_ms: int = 0  # when the writer handed it over (CreateTime)
    read_at: float = 0.0  # wall clock when the reader fetched it, seconds

    @property
    def timestamp_s(self) -> float:
        return self.timestamp_ms / 1000

    @property
    def sources(self) -> list[SourceKey]:
        """Every input this record stands for: one, or an unreadable batch's offsets."""
        partition, first = self.source
        return [(partition, offset) for offset in range(first, max(first, self.last_offset) + 1)]

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k == name]
        return values[-1].decode(errors="replace") if values else None

    @property
    def reason(self) -> str | None:
        return self.header(BRIDGE + "reason")

    @property
    def model(self) -> dict[str, Any]:
        return (self.body or {}).get("model") or {}

    @property
    def version(self) -> int | None:
        """The version that served a result (None over REST with a label, and for failures)."""
        return self.model.get("version")

    @property
    def route(self) -> str | None:
        """The route that picked the target, of a result or of a failure."""
        if self.kind == "failure":
            return self.header(BRIDGE + "model.route")
        return self.model.get("route")

    @property
    def flagged(self) -> bool | None:
        flagged = ((self.body or {}).get("outputs") or {}).get("flagged")
        if flagged is None:
            return None
        return bool(flagged[0] if isinstance(flagged, list) else flagged)

    @property
    def timings(self) -> dict[str, float]:
        return (self.body or {}).get("timings") or {}

    @property
    def fields(self) -> dict[str, Any]:
        return (self.body or {}).get("fields") or {}


def parse_output(record: Any, kind: str, read_at: float = 0.0) -> Output:
    """A result (JSON body naming its source) or a failure (original value + headers)."""
    headers: Headers = tuple(record.headers or ())
    if kind == "result":
        body = orjson.loads(record.value)
        source = body["source"]
        return Output(
            "result",
            record.topic,
            record.partition,
            record.offset,
            record.key,
            record.value,
            headers,
            source["topic"],
            (source["partition"], source["offset"]),
            body,
            timestamp_ms=record.timestamp,
            read_at=read_at,
        )
    found = dict(headers)  # the bridge's headers come after the original ones
    return Output(
        "failure",
        record.topic,
        record.partition,
        record.offset,
        record.key,
        record.value,
        headers,
        found[CONNECT + "topic"].decode(),
        (int(found[CONNECT + "partition"]), int(found[CONNECT + "offset"])),
        None,
        int(found.get(BRIDGE + "offset.last", b"-1")),
        record.timestamp,
        read_at,
    )


Topic = str | tuple[str, int]  # a name (partitions looked up at start) or (name, partitions)


class Outputs:
    """Reads the results and failures topics from the beginning (no group, no commits)."""

    def __init__(
        self,
        bootstrap: str,
        results: Topic,
        failures: Topic | None = None,
        *,
        fetch_wait_ms: int = DEFAULT_FETCH_WAIT_MS,
    ) -> None:
        self._topics: dict[str, int | None] = {}
        self.results_topic = self._add(results)
        self.failures_topic = self._add(failures) if failures is not None else None
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=fetch_wait_ms,
        )
        self.records: list[Output] = []
        self._follower: asyncio.Task[None] | None = None
        self._grew = asyncio.Event()

    def _add(self, topic: Topic) -> str:
        name, partitions = (topic, None) if isinstance(topic, str) else topic
        self._topics[name] = partitions
        return name

    @classmethod
    def of(cls, bootstrap: str, topics: Any) -> Self:
        """For a ``kafka_io.Topics``: its results and failures topics."""
        return cls(
            bootstrap,
            (topics.results, topics.results_partitions),
            (topics.failures, topics.failures_partitions),
        )

    async def start(self) -> Self:
        await self._consumer.start()
        try:
            partitions = await self._partitions()
        except BaseException:
            await self._consumer.stop()
            raise
        self._consumer.assign(partitions)
        await self._consumer.seek_to_beginning(*partitions)
        return self

    async def _partitions(self) -> list[TopicPartition]:
        if any(count is None for count in self._topics.values()):
            await self._consumer.topics()  # a metadata refresh: the topics may be new
        partitions: list[TopicPartition] = []
        for topic, count in self._topics.items():
            known = self._consumer.partitions_for_topic(topic) if count is None else range(count)
            if not known:
                raise RuntimeError(f"topic {topic} has no partitions")
            partitions.extend(TopicPartition(topic, p) for p in sorted(known))
        return partitions

    async def stop(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
        await self._consumer.stop()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def count(self) -> int:
        return len(self.records)

    @property
    def results(self) -> list[Output]:
        return [r for r in self.records if r.kind == "result"]

    @property
    def failures(self) -> list[Output]:
        return [r for r in self.records if r.kind == "failure"]

    async def poll(self, timeout_ms: int = 200) -> int:
        """Read what is there now; how many records were new."""
        fetched = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=5000)
        now = time.time()
        new = 0
        for tp in sorted(fetched):
            kind = "result" if tp.topic == self.results_topic else "failure"
            for record in fetched[tp]:
                self.records.append(parse_output(record, kind, now))
                new += 1
        if new:
            self._grew.set()
        return new

    # -- waiting while polling: the tests and chaos runs ------------------------------------

    async def wait_until(
        self,
        done: Callable[[Outputs], bool],
        what: str,
        timeout_s: float = 60.0,
        explain: Callable[[], str] = lambda: "",
    ) -> None:
        """Poll until ``done(self)``; a bounded wait whose failure says what was missing."""
        deadline = time.monotonic() + timeout_s
        while not done(self):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout_s} s waiting for {what}: "
                    f"{len(self.results)} results, {len(self.failures)} failures read\n{explain()}"
                )
            await self.poll()

    async def wait_for_count(self, total: int, timeout_s: float = 30.0) -> None:
        """At least ``total`` records, then one more poll to catch any extra."""
        await self.wait_until(lambda o: len(o.records) >= total, f"{total} records", timeout_s)
        while await self.poll(timeout_ms=300):
            pass

    # -- following in a task of its own: the demo and the bench -----------------------------

    def follow(self) -> Self:
        """Keep reading in the background (after ``start``) until ``stop``."""
        self._follower = asyncio.create_task(self._follow(), name="output-reader")
        return self

    async def _follow(self) -> None:
        while True:
            await self.poll()

    async def wait_for(self, count: int, timeout_s: float) -> bool:
        """While following: until at least ``count`` records were read; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while self.count < count:
            if self._follower is not None and self._follower.done():
                self._follower.result()  # the reader died: raise its error
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._grew.clear()
            # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a
            # cancellation (Ctrl-C) that arrives as the event is set.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, 0.5)):
                    await self._grew.wait()
        return True

    async def settle(self, quiet_s: float = 0.5, limit_s: float = 5.0) -> None:
        """While following: until nothing new arrived for ``quiet_s`` (late duplicates)."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            self._grew.clear()
            try:
                async with asyncio.timeout(quiet_s):
                    await self._grew.wait()
            except TimeoutError:
                return

    # -- what the records say ----------------------------------------------------------------

    def by_source(self) -> dict[SourceKey, list[Output]]:
        mapping: dict[SourceKey, list[Output]] = defaultdict(list)
        for record in self.records:
            for source in record.sources:
                mapping[source].append(record)
        return mapping

    def covers(self, sent: Iterable[Any]) -> bool:
        """Does every one of ``sent`` (``kafka_io.Sent``: a ``.source``) have a record?"""
        seen = {source for r in self.records for source in r.sources}
        return all(s.source in seen for s in sent)


def ended_as(outputs: Outputs) -> dict[SourceKey, str]:
    """Per input: "result", or the reason of its failure record."""
    return {
        source: "result" if r.kind == "result" else r.reason or "?"
        for r in outputs.records
        for source in r.sources
    }


def duplicated(outputs: Outputs) -> dict[SourceKey, int]:
    """Inputs with more than one output record, and how many each has."""
    counts = Counter(source for r in outputs.records for source in r.sources)
    return {source: n for source, n in counts.items() if n > 1}


def order_violations(outputs: Outputs, partitions: Mapping[str, int]) -> list[str]:
    """Per output partition, each input partition's offsets must increase in output order.

    A second record for an input (a replay after a crash, a batch resent after a
    broker stall) is a duplicate, counted by ``duplicated``; order is checked on the
    first record of each input. Also checks the partition rule: output partition =
    input partition mod count.
    """
    problems: list[str] = []
    last: dict[tuple[str, int, int], int] = {}
    seen: set[tuple[str, SourceKey]] = set()
    for record in sorted(outputs.records, key=lambda r: (r.topic, r.partition, r.offset)):
        if (record.topic, record.source) in seen:
            continue
        seen.add((record.topic, record.source))
        expected_partition = record.source[0] % partitions[record.topic]
        if record.partition != expected_partition:
            problems.append(
                f"{record.topic}[{record.partition}]@{record.offset} holds input partition "
                f"{record.source[0]}, expected output partition {expected_partition}"
            )
        lane = (record.topic, record.partition, record.source[0])
        previous = last.get(lane)
        if previous is not None and record.source[1] <= previous:
            problems.append(
                f"{record.topic}[{record.partition}]@{record.offset}: input offset "
                f"{record.source[1]} of partition {record.source[0]} after {previous}"
            )
        last[lane] = record.source[1]
    return problems
