"""Reading past a batch the Kafka client refuses, so no record can stop a partition.

When aiokafka cannot decode a batch (a header key that is not UTF-8, a CRC
mismatch, an unknown codec) it raises on every fetch at that offset, forever. The
bridge then fetches the raw bytes of the partition at that offset itself (one
Fetch request on a client of its own) and reads them with its own tolerant reader
(``bridge.kafka.batches``), up to and including the first batch that is wrong:

- good records come back as ``SalvagedRecord`` without a problem and are handled
  like any other event;
- a record whose header key is not UTF-8 fails with ``bad_header`` (the key is
  written back escaped: the producer only writes UTF-8 keys);
- the records of a batch whose CRC does not match, or that breaks off, fail one by
  one with ``corrupt_batch`` (recovered, but not to be trusted);
- what cannot be read at all becomes one ``undecodable_batch`` failure that names
  the offset range, and the consumer is moved past it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from aiokafka import TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError, for_code
from aiokafka.protocol.fetch import FetchRequest

from bridge.errors import BadHeaderError, CorruptBatchError, RecordError, UndecodableBatchError
from bridge.kafka.batches import RawRecord, ReadBatch, read_batches

READ_UNCOMMITTED = 0
FETCH_WAIT_MS = 100


@dataclass(frozen=True, slots=True)
class SalvagedRecord:
    """A record the bridge read itself; it has what an aiokafka ``ConsumerRecord`` has."""

    topic: str
    partition: int
    offset: int  # the first offset it stands for
    last_offset: int  # the same, except for an unreadable range
    timestamp: int | None
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    problem: RecordError | None  # None: a good record, handled like any other


@dataclass(frozen=True, slots=True)
class Salvage:
    records: list[SalvagedRecord]
    resume_at: int  # where the client goes on reading
    broken_batches: int  # batches that were wrong (not just read here)


class Salvager:
    """Raw fetches on a client of its own, started the first time it is needed."""

    def __init__(self, client: AIOKafkaClient, max_bytes: int) -> None:
        self._client = client
        self._started = False
        self._max_bytes = max_bytes

    async def salvage(self, tp: TopicPartition, offset: int, cause: BaseException) -> Salvage:
        """Read ``tp`` from ``offset`` up to and including its first wrong batch.

        Raises ``KafkaError`` when the raw fetch itself fails (the caller retries).
        """
        data = await self._fetch(tp, offset)
        return read_salvage(tp, offset, data, f"{type(cause).__name__}: {cause}")

    async def _fetch(self, tp: TopicPartition, offset: int) -> bytes:
        client = self._client
        if not self._started:
            await client.bootstrap()
            self._started = True
        node = client.cluster.leader_for_partition(tp)
        if node is None or node < 0:
            await client.force_metadata_update()
            node = client.cluster.leader_for_partition(tp)
            if node is None or node < 0:
                raise KafkaError(f"no leader known for {tp}")
        request = FetchRequest(
            # The data is there (aiokafka just read it); min_bytes 1 answers at once on
            # Apache Kafka. The dev broker answers a 0 ms wait empty, data or not.
            FETCH_WAIT_MS,
            1,
            self._max_bytes,
            READ_UNCOMMITTED,
            [(tp.topic, [(tp.partition, offset, self._max_bytes)])],
        )
        response = await client.send(node, request)
        for topic, partitions in response.topics:
            for partition, error_code, _highwater, *data in partitions:
                if (topic, partition) == (tp.topic, tp.partition):
                    error = for_code(error_code)
                    if error_code:
                        raise error(f"raw fetch of {tp} at {offset}")
                    return bytes(data[-1] or b"")
        raise KafkaError(f"the raw fetch of {tp} at {offset} answered without it")

    async def close(self) -> None:
        if self._started:
            await self._client.close()


def read_salvage(tp: TopicPartition, offset: int, data: bytes, cause: str) -> Salvage:
    """What the raw bytes at ``offset`` hold, up to the first wrong batch (pure)."""
    records: list[SalvagedRecord] = []
    resume_at = offset
    broken = 0
    for batch in read_batches(data):
        if batch.last_offset < offset:
            continue  # the broker answers from the start of the batch holding the offset
        resume_at = batch.last_offset + 1
        if batch.is_control:
            continue  # transaction markers are not events
        if batch.problem is None:
            good = [_good(tp, record) for record in batch.records if record.offset >= offset]
            records.extend(good)
            if any(record.problem for record in good):
                broken += 1
                break
            continue
        broken += 1
        records.extend(_broken(tp, offset, batch, cause))
        break
    return Salvage(records, resume_at, broken)


def _good(tp: TopicPartition, record: RawRecord) -> SalvagedRecord:
    headers: list[tuple[str, bytes | None]] = []
    problem: RecordError | None = None
    for index, (key, value) in enumerate(record.headers):
        try:
            name = key.decode()
        except UnicodeDecodeError:
            name = key.decode(errors="backslashreplace")
            problem = problem or BadHeaderError(
                f"header {index} has a key that is not UTF-8 ({key[:40]!r}); "
                "it is written back escaped"
            )
        headers.append((name, value))
    return SalvagedRecord(
        tp.topic,
        tp.partition,
        record.offset,
        record.offset,
        record.timestamp,
        record.key,
        record.value,
        headers,
        problem,
    )


def _broken(tp: TopicPartition, offset: int, batch: ReadBatch, cause: str) -> list[SalvagedRecord]:
    """Each record that could be read fails alone; what could not is one range."""
    where = f"batch {batch.base_offset}-{batch.last_offset} of {tp.topic}[{tp.partition}]"
    out = []
    for record in batch.records:
        if record.offset < offset:
            continue
        salvaged = _good(tp, record)
        untrusted = CorruptBatchError(
            f"{where}: {batch.problem}; the record was read but cannot be trusted"
        )
        out.append(replace(salvaged, problem=untrusted))
    first = max(offset, out[-1].offset + 1 if out else batch.base_offset)
    if first <= batch.last_offset:
        problem = UndecodableBatchError(
            f"offsets {first}-{batch.last_offset} of {tp.topic}[{tp.partition}] cannot be "
            f"read: {batch.problem} (the client said {cause})"
        )
        out.append(
            SalvagedRecord(
                tp.topic, tp.partition, first, batch.last_offset, None, None, None, [], problem
            )
        )
    return out
