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

from collections.abc import Sequence
from dataclasses import dataclass, replace

from aiokafka import TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError, for_code
from aiokafka.protocol.fetch import FetchRequest

from bridge.errors import BadHeaderError, CorruptBatchError, RecordError, UndecodableBatchError
from bridge.kafka.batches import RawRecord, ReadBatch, read_batches

READ_UNCOMMITTED, READ_COMMITTED = 0, 1
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
class Aborted:
    """An aborted transaction, as a read_committed Fetch names it."""

    producer_id: int
    first_offset: int


@dataclass(frozen=True, slots=True)
class Salvage:
    records: list[SalvagedRecord]
    resume_at: int  # where the client goes on reading
    broken_batches: int  # batches that were wrong (not just read here)


class Salvager:
    """Raw fetches on a client of its own, started the first time it is needed."""

    def __init__(self, client: AIOKafkaClient, max_bytes: int, read_committed: bool) -> None:
        self._client = client
        self._started = False
        self._max_bytes = max_bytes
        # As the consumer reads: under read_committed the broker answers only up to the
        # last stable offset and names the aborted transactions, whose records are skipped.
        self._isolation = READ_COMMITTED if read_committed else READ_UNCOMMITTED

    async def salvage(self, tp: TopicPartition, offset: int, cause: BaseException) -> Salvage:
        """Read ``tp`` from ``offset`` up to and including its first wrong batch.

        Raises ``KafkaError`` when the raw fetch itself fails (the caller retries).
        """
        data, aborted = await self._fetch(tp, offset)
        return read_salvage(tp, offset, data, f"{type(cause).__name__}: {cause}", aborted)

    async def _fetch(self, tp: TopicPartition, offset: int) -> tuple[bytes, list[Aborted]]:
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
            self._isolation,
            [(tp.topic, [(tp.partition, offset, self._max_bytes)])],
        )
        response = await client.send(node, request)
        # By name: the fields between the error code and the records differ by version.
        for topic in response.to_object()["topics"]:
            for part in topic["partitions"]:
                if (topic["topics"], part["partition"]) == (tp.topic, tp.partition):
                    if part["error_code"]:
                        raise for_code(part["error_code"])(f"raw fetch of {tp} at {offset}")
                    aborted = [
                        Aborted(entry["producer_id"], entry["first_offset"])
                        for entry in part.get("aborted_transactions") or ()
                    ]
                    return bytes(part["message_set"] or b""), aborted
        raise KafkaError(f"the raw fetch of {tp} at {offset} answered without it")

    async def close(self) -> None:
        if self._started:
            await self._client.close()


def read_salvage(
    tp: TopicPartition, offset: int, data: bytes, cause: str, aborted: Sequence[Aborted] = ()
) -> Salvage:
    """What the raw bytes at ``offset`` hold, up to the first wrong batch (pure).

    ``aborted``: the transactions the broker named as aborted (read_committed only).
    """
    records: list[SalvagedRecord] = []
    resume_at = offset
    broken = 0
    pending = sorted(aborted, key=lambda entry: entry.first_offset)
    aborting: set[int] = set()  # producers whose open transaction was aborted
    for batch in read_batches(data):
        # A transaction counts as aborted from its first offset to its abort marker.
        while pending and pending[0].first_offset <= batch.last_offset:
            aborting.add(pending.pop(0).producer_id)
        if batch.is_control:
            aborting.discard(batch.producer_id)
        if batch.last_offset < offset:
            continue  # the broker answers from the start of the batch holding the offset
        resume_at = batch.last_offset + 1
        if batch.is_control:
            continue  # transaction markers are not events
        if batch.is_transactional and batch.producer_id in aborting:
            continue  # an aborted transaction's records are not events under read_committed
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
