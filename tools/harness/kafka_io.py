"""Kafka I/O around a bridge: topics, inputs produced (three ways), committed offsets.

Every input is remembered by where Kafka put it (partition, offset), from the
produce acknowledgement; ``tools.harness.outputs`` reads the records that point
back at it.

Expected end offsets come from what was produced, never from ``end_offsets``:
the Tansu dev broker reports a per-batch high watermark (see
``shared/reference/dev-broker.md``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.produce import ProduceRequest

from tools.harness.outputs import Headers, Outputs, SourceKey
from tools.harness.payments import payments
from tools.harness.processes import create_topics


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


def missing(sent: Iterable[Sent], outputs: Outputs) -> list[SourceKey]:
    sources = {source for r in outputs.records for source in r.sources}
    return sorted(s.source for s in sent if s.source not in sources)


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
