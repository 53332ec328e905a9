"""``bridge failures replay``'s Kafka I/O: read the failures topic, write the inputs again.

What is replayed, and with which headers, is ``bridge.ops.dead_letters``'s. Here:

- The consumer commits to the run's own group (``bridge.kafka.clients.make_group_reader``)
  for every partition of the failures topic, assigned directly (no group join), and
  starts where that group left off (from the beginning the first time).
- It reads to the end offsets taken at start: a batch that reaches past them is read
  whole (the dev broker reports the last batch's base offset + 1 as the end; taking
  fewer records than a fetch brought would stop inside that batch and leave the rest
  behind the committed offset, unseen until the topic grows).
- Per fetch: every replay is sent (acks=all), all of them are awaited, and only then
  are the offsets after the records handled (replayed or passed over) committed. A
  failure or a Ctrl-C before that commit leaves those records for the next run, which
  sends them again: at least once.
- ``--dry-run`` reads the same way from the same group's position and neither
  writes nor commits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord

from bridge.kafka.clients import make_group_reader, make_writer
from bridge.ops.control import _kafka_step as kafka_step
from bridge.ops.dead_letters import DeadLetter, Selection, Tally, Verdict, replay_headers
from bridge.ops.errors import CommandError
from bridge.settings import KafkaConnection

FETCH_WAIT_MS = 500

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class ReplayRun:
    failures_topic: str
    group: str
    selection: Selection
    limit: int | None  # most records replayed; None: no limit
    dry_run: bool
    timeout_s: float  # bounds each Kafka step (start, a fetch, the acks, a commit)


def _letter(record: ConsumerRecord[bytes, bytes]) -> DeadLetter:
    return DeadLetter(
        record.partition,
        record.offset,
        record.timestamp,
        record.key,
        record.value,
        tuple(record.headers),
    )


class Replay:
    """One run; ``tally`` holds what it did, also after a failure midway."""

    def __init__(self, kafka: KafkaConnection, run: ReplayRun, progress: Progress) -> None:
        self._kafka = kafka
        self._run = run
        self._progress = progress
        request_ms = max(int(run.timeout_s * 1000), 1)
        self._consumer: AIOKafkaConsumer = make_group_reader(kafka, run.group, request_ms)
        self._producer: AIOKafkaProducer | None = (
            None if run.dry_run else make_writer(kafka, request_ms)
        )
        self.tally = Tally()
        self.stopped_by_limit = False
        self.unsettled = 0  # records of the fetch in hand: not committed past yet

    async def run(self) -> Tally:
        topic = self._run.failures_topic
        try:
            async with kafka_step(f"read failures topic {topic}", self._kafka, self._run.timeout_s):
                ends = await self._open()
            await self._read(ends)
        finally:
            self._progress("")  # the summary follows on a clean line
            await self._close()
        return self.tally

    async def _open(self) -> dict[TopicPartition, int]:
        """Start, assign every partition at the group's position; the end offsets now."""
        consumer, topic = self._consumer, self._run.failures_topic
        await consumer.start()
        numbers = consumer.partitions_for_topic(topic)
        if not numbers:
            await consumer.topics()  # refreshes the cluster metadata
            numbers = consumer.partitions_for_topic(topic)
        if not numbers:
            raise CommandError(f"failures topic {topic} does not exist")
        partitions = [TopicPartition(topic, number) for number in sorted(numbers)]
        consumer.assign(partitions)
        ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
        for partition in partitions:
            offset = await consumer.committed(partition)
            if offset is None:
                await consumer.seek_to_beginning(partition)
            else:
                consumer.seek(partition, offset)
        if self._producer is not None:
            await self._producer.start()
        return ends

    async def _close(self) -> None:
        # Bounded: a broker that went away must not keep a finished run from ending.
        for stop in (self._consumer.stop, *([self._producer.stop] if self._producer else [])):
            try:
                async with asyncio.timeout(self._run.timeout_s):
                    await stop()
            except TimeoutError:
                pass

    async def _read(self, ends: dict[TopicPartition, int]) -> None:
        consumer, kafka, timeout_s = self._consumer, self._kafka, self._run.timeout_s
        pending = {tp for tp in ends if await consumer.position(tp) < ends[tp]}
        topic = self._run.failures_topic
        while pending and not self.stopped_by_limit:
            async with kafka_step(f"read failures topic {topic}", kafka, timeout_s):
                # No max_records: all a fetch brought for a partition at once, so a batch
                # that reaches past the end offset is never cut at it (the dev broker).
                fetched = await consumer.getmany(*pending, timeout_ms=FETCH_WAIT_MS)
            sends: list[asyncio.Future[object]] = []
            handled: dict[TopicPartition, int] = {}
            for tp, records in fetched.items():
                for record in records:
                    letter = _letter(record)
                    verdict = self.tally.judge(letter, self._run.selection, self._run.limit)
                    if verdict is Verdict.LATER:
                        pending.discard(tp)  # it and what follows stay for a later run
                        break
                    if verdict is Verdict.LIMIT:
                        self.stopped_by_limit = True
                        break
                    self.unsettled += 1  # counted in the tally, committed past only below
                    if verdict is Verdict.REPLAY and self._producer is not None:
                        destination = self._run.selection.destination(letter)
                        async with kafka_step(f"write to {destination}", kafka, timeout_s):
                            sends.append(
                                await self._producer.send(
                                    destination,
                                    letter.value,
                                    key=letter.key,
                                    headers=replay_headers(letter.headers),
                                )
                            )
                    handled[tp] = record.offset + 1
                if tp in pending and await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
            await self._settle(sends, handled)

    async def _settle(
        self, sends: list[asyncio.Future[object]], handled: dict[TopicPartition, int]
    ) -> None:
        """Wait for the acks of this fetch's replays, then commit past what it handled."""
        kafka, timeout_s = self._kafka, self._run.timeout_s
        if sends:
            async with kafka_step("write the replays (acks=all)", kafka, timeout_s):
                await asyncio.gather(*sends)
        if handled and not self._run.dry_run:
            async with kafka_step(f"commit for group {self._run.group}", kafka, timeout_s):
                await self._consumer.commit(handled)
        self.unsettled = 0
        tally = self.tally
        self._progress(
            f"read {tally.read}, {'would replay' if self._run.dry_run else 'replayed'} "
            f"{tally.count(Verdict.REPLAY)}, passed over {tally.count(Verdict.PASSED_OVER)}, "
            f"not replayable {tally.count(Verdict.UNREPLAYABLE)}"
        )


def summary(run: ReplayRun, replay: Replay) -> str:
    """What the run did, for stdout: totals, the table, the unreplayable records."""
    tally, topic = replay.tally, run.failures_topic
    replayed = tally.count(Verdict.REPLAY)
    to = f"to {run.selection.to}" if run.selection.to else "to their source topics"
    if run.dry_run:
        head = f"dry run: nothing written, nothing committed; would replay {replayed} {to}"
    else:
        head = f"replayed {replayed} {to}"
    lines = [
        f"failures topic {topic}, group {run.group}: {tally.read} record(s) read",
        f"{head}; passed over {tally.count(Verdict.PASSED_OVER)}, "
        f"not replayable {tally.count(Verdict.UNREPLAYABLE)}",
    ]
    if replay.unsettled and not run.dry_run:
        lines.append(
            f"ended before the last fetch was committed: its {replay.unsettled} record(s) "
            "are read again by the next run"
        )
    if replay.stopped_by_limit:
        lines.append(f"stopped at --limit {run.limit}: the rest stays for the next run")
    if tally.read:
        lines += ["", tally.render(run.dry_run)]
    unreplayable = tally.count(Verdict.UNREPLAYABLE)
    if unreplayable:
        lines += ["", "not replayable (skipped, committed past):"]
        lines += [f"  {line}" for line in tally.unreplayable]
        if unreplayable > len(tally.unreplayable):
            lines.append(f"  ... and {unreplayable - len(tally.unreplayable)} more")
    return "\n".join(lines)
