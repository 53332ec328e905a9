"""Kafka I/O for the integration tests: produce inputs, read the bridge's outputs back.

Every input is remembered by where Kafka put it (partition, offset), from the
produce acknowledgement, and every output record points back at its input:
a result's JSON ``source``, a failure's ``__connect.errors.partition/offset``
headers. That mapping is what the promise "every input ends as exactly one
record" is checked against.

Expected end offsets come from what was produced, never from ``end_offsets``:
the Tansu dev broker reports a per-batch high watermark (see
``shared/reference/dev-broker.md``).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.produce import ProduceRequest

from tools.harness.payments import payments
from tools.harness.processes import create_topics

Headers = tuple[tuple[str, bytes], ...]
SourceKey = tuple[int, int]  # (input partition, input offset)

CONNECT = "__connect.errors."
BRIDGE = "__bridge.errors."


@dataclass(frozen=True, slots=True)
class Topics:
    input: str
    results: str
    failures: str
    group: str
    input_partitions: int
    results_partitions: int
    failures_partitions: int

    @property
    def names(self) -> tuple[str, str, str]:
        return (self.input, self.results, self.failures)

    @property
    def partitions(self) -> dict[str, int]:
        return {
            self.input: self.input_partitions,
            self.results: self.results_partitions,
            self.failures: self.failures_partitions,
        }


async def make_topics(
    bootstrap: str, prefix: str, inputs: int = 3, results: int = 2, failures: int = 1
) -> Topics:
    """Unique topics (and a group id) for one test; output counts differ on purpose."""
    topics = Topics(
        f"{prefix}-payments",
        f"{prefix}-results",
        f"{prefix}-failures",
        f"{prefix}-group",
        inputs,
        results,
        failures,
    )
    await asyncio.gather(
        create_topics(bootstrap, [topics.input], inputs),
        create_topics(bootstrap, [topics.results], results),
        create_topics(bootstrap, [topics.failures], failures),
    )
    return topics


@dataclass(frozen=True, slots=True)
class Item:
    """An input to produce and what it must end as: "result" or a failure reason."""

    key: bytes | None
    value: bytes | None
    headers: Headers
    expected: str
    partition: int | None = None  # None: the producer's key hashing decides


@dataclass(frozen=True, slots=True)
class Sent:
    """An input as Kafka stored it."""

    partition: int
    offset: int
    item: Item

    @property
    def source(self) -> SourceKey:
        return (self.partition, self.offset)


@dataclass(frozen=True, slots=True)
class Output:
    """One record the bridge wrote, and the input it stands for."""

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
    timestamp_ms: int = 0  # when the bridge wrote it (CreateTime)

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
        return values[-1].decode() if values else None


def payment_items(count: int, *, seed: int = 7, malformed_every: int = 0) -> list[Item]:
    """``tools.harness.payments`` with headers that make every input distinguishable.

    The ``bin`` header is not UTF-8, so a bridge that decodes headers shows up.
    """
    return [
        Item(
            p.key,
            p.value,
            (("trace-id", f"trace-{seed}-{i}".encode()), ("bin", bytes([0, 255, i % 256]))),
            p.expected,
        )
        for i, p in enumerate(payments(count, seed=seed, malformed_every=malformed_every))
    ]


class Producer:
    """An acks=all producer that records where each input landed."""

    def __init__(self, bootstrap: str) -> None:
        self._producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        self.sent: list[Sent] = []

    async def __aenter__(self) -> Producer:
        await self._producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._producer.stop()

    async def send_all(
        self,
        topic: str,
        items: Sequence[Item],
        *,
        rate_per_s: float | None = None,
        chunk: int = 25,
    ) -> list[Sent]:
        """Produce ``items`` in order; ``rate_per_s`` paces a stream (chunks of ``chunk``).

        ``self.sent`` grows as chunks are acknowledged, so a test can watch progress.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        done: list[Sent] = []
        for first in range(0, len(items), chunk):
            if rate_per_s is not None:
                # Pacing a stream, not synchronising with anything.
                due = started + first / rate_per_s
                await asyncio.sleep(max(0.0, due - loop.time()))
            batch = items[first : first + chunk]
            futures = [
                await self._producer.send(
                    topic,
                    item.value,
                    key=item.key,
                    headers=list(item.headers),
                    partition=item.partition,
                )
                for item in batch
            ]
            for item, future in zip(batch, futures, strict=True):
                metadata = await future
                sent = Sent(metadata.partition, metadata.offset, item)
                done.append(sent)
                self.sent.append(sent)
        return done


def produce_with_librdkafka(
    bootstrap: str, topic: str, items: Sequence[Item], compression: str = "none"
) -> list[Sent]:
    """Produce with librdkafka (confluent-kafka), a client not written here, in batches.

    Linger makes multi-record batches, which is what a compressed batch from a Java or
    librdkafka producer looks like. Blocking: call it in a thread.
    """
    from confluent_kafka import KafkaError as RdKafkaError
    from confluent_kafka import Message
    from confluent_kafka import Producer as RdProducer

    producer = RdProducer(
        {
            "bootstrap.servers": bootstrap,
            "compression.type": compression,
            "linger.ms": 20,
            "acks": "all",
            "enable.idempotence": False,  # the dev broker has no InitProducerId
        }
    )
    sent: dict[int, Sent] = {}
    errors: list[str] = []

    def delivered(index: int) -> Callable[[RdKafkaError | None, Message], None]:
        def report(error: RdKafkaError | None, message: Message) -> None:
            partition, offset = message.partition(), message.offset()
            if error is not None or partition is None or offset is None:
                errors.append(str(error))
                return
            sent[index] = Sent(partition, offset, items[index])

        return report

    for index, item in enumerate(items):
        producer.produce(
            topic,
            value=item.value,
            key=item.key,
            headers=list(item.headers),
            partition=-1 if item.partition is None else item.partition,
            on_delivery=delivered(index),
        )
        producer.poll(0)
    producer.flush(30)
    if errors or len(sent) != len(items):
        raise RuntimeError(f"librdkafka delivered {len(sent)} of {len(items)}: {errors[:3]}")
    return [sent[index] for index in range(len(items))]


async def produce_raw_batch(bootstrap: str, topic: str, partition: int, batch: bytes) -> int:
    """Write a record batch exactly as given; its base offset as the broker assigned it.

    A producer library refuses to write a broken batch; a broker (Tansu, or Apache
    Kafka for header keys) may store it, and a consumer then meets it.
    """
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    try:
        await client.force_metadata_update()
        node = client.cluster.leader_for_partition(TopicPartition(topic, partition))
        request = ProduceRequest(
            required_acks=-1,
            timeout=10_000,
            topics=[(topic, [(partition, batch)])],
            transactional_id=None,
        )
        response = await client.send(node, request)
    finally:
        await client.close()
    ((_, partitions),) = response.topics
    _, error_code, offset, *_ = partitions[0]
    if error_code:
        raise RuntimeError(f"the broker refused the batch: error {error_code}")
    return int(offset)


def end_offsets(sent: Iterable[Sent]) -> dict[int, int]:
    """Per input partition, one past the last offset produced."""
    ends: dict[int, int] = {}
    for record in sent:
        ends[record.partition] = max(ends.get(record.partition, 0), record.offset + 1)
    return ends


class Outputs:
    """Reads the results and failures topics from the beginning (no group, no commits)."""

    def __init__(self, bootstrap: str, results: tuple[str, int], failures: tuple[str, int]) -> None:
        self.results_topic, results_partitions = results
        self.failures_topic, failures_partitions = failures
        self._partitions = [
            TopicPartition(self.results_topic, p) for p in range(results_partitions)
        ]
        self._partitions += [
            TopicPartition(self.failures_topic, p) for p in range(failures_partitions)
        ]
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
        )
        self.records: list[Output] = []

    @classmethod
    def of(cls, bootstrap: str, topics: Topics) -> Outputs:
        return cls(
            bootstrap,
            (topics.results, topics.results_partitions),
            (topics.failures, topics.failures_partitions),
        )

    async def __aenter__(self) -> Outputs:
        await self._consumer.start()
        self._consumer.assign(self._partitions)
        await self._consumer.seek_to_beginning(*self._partitions)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    @property
    def results(self) -> list[Output]:
        return [r for r in self.records if r.kind == "result"]

    @property
    def failures(self) -> list[Output]:
        return [r for r in self.records if r.kind == "failure"]

    async def poll(self, timeout_ms: int = 200) -> int:
        """Read what is there now; how many records were new."""
        fetched = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=5000)
        new = 0
        for tp in sorted(fetched):
            for record in fetched[tp]:
                self.records.append(self._parse(record))
                new += 1
        return new

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

    def by_source(self) -> dict[SourceKey, list[Output]]:
        mapping: dict[SourceKey, list[Output]] = defaultdict(list)
        for record in self.records:
            for source in record.sources:
                mapping[source].append(record)
        return mapping

    def covers(self, sent: Iterable[Sent]) -> bool:
        sources = {source for r in self.records for source in r.sources}
        return all(s.source in sources for s in sent)

    def _parse(self, record: Any) -> Output:
        headers: Headers = tuple(record.headers or ())
        if record.topic == self.results_topic:
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
        )


def ended_as(outputs: Outputs) -> dict[SourceKey, str]:
    """Per input: "result", or the reason of its failure record."""
    return {
        source: "result" if r.kind == "result" else r.header(BRIDGE + "reason") or "?"
        for r in outputs.records
        for source in r.sources
    }


async def drain_exactly_once(
    bootstrap: str, topics: Topics, bridge: Any, sent: Sequence[Sent], timeout_s: float = 90
) -> tuple[Outputs, dict[int, int | None]]:
    """Run ``bridge`` until every input has a record, stop it (exit 0), and check the promise.

    Exactly one record per input, in order per partition; returns the outputs and the
    group's committed offsets after the stop.
    """
    async with Outputs.of(bootstrap, topics) as out, GroupOffsets.of(bootstrap, topics) as offsets:
        await wait_for_inputs(out, sent, offsets, timeout_s, bridge.output)
        code = await asyncio.to_thread(bridge.stop)
        assert code == 0, bridge.output()
        final = await offsets.read()
    assert not missing(sent, out), "inputs without a record"
    assert not duplicated(out)
    assert not order_violations(out, topics.partitions)
    return out, final


def missing(sent: Iterable[Sent], outputs: Outputs) -> list[SourceKey]:
    sources = {source for r in outputs.records for source in r.sources}
    return sorted(s.source for s in sent if s.source not in sources)


def duplicated(outputs: Outputs) -> dict[SourceKey, int]:
    """Inputs with more than one output record, and how many each has."""
    counts = Counter(source for r in outputs.records for source in r.sources)
    return {source: n for source, n in counts.items() if n > 1}


def order_violations(outputs: Outputs, partitions: dict[str, int]) -> list[str]:
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


class GroupOffsets:
    """Reads a group's committed offsets for one topic, without joining the group."""

    def __init__(self, bootstrap: str, group: str, topic: str, partitions: int) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
        )
        self._partitions = [TopicPartition(topic, p) for p in range(partitions)]

    @classmethod
    def of(cls, bootstrap: str, topics: Topics) -> GroupOffsets:
        """The bridge group's offsets on the input topic."""
        return cls(bootstrap, topics.group, topics.input, topics.input_partitions)

    async def __aenter__(self) -> GroupOffsets:
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def read(self) -> dict[int, int | None]:
        return {tp.partition: await self._consumer.committed(tp) for tp in self._partitions}


async def wait_for_inputs(
    outputs: Outputs,
    sent: Sequence[Sent],
    offsets: GroupOffsets,
    timeout_s: float = 90.0,
    explain: Callable[[], str] = str,
) -> None:
    """Until every input has a record, or the group committed to the end (the bridge is done).

    The second way out makes a lost input fail fast, and by name, in the caller's
    ``missing`` check instead of as a timeout.
    """
    ends = end_offsets(sent)
    deadline = time.monotonic() + timeout_s
    next_check = 0.0
    while not outputs.covers(sent):
        if time.monotonic() >= next_check:
            next_check = time.monotonic() + 0.5
            if await offsets.read() == ends:
                while await outputs.poll(timeout_ms=300):
                    pass  # what the bridge wrote before it committed is there now
                return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout_s} s waiting for a record for each of {len(sent)} "
                f"inputs: {len(outputs.records)} records read, "
                f"missing e.g. {missing(sent, outputs)[:10]}\n{explain()}"
            )
        await outputs.poll()
