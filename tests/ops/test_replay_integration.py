"""``bridge failures replay`` as a process, on the dead letters a real bridge wrote.

Malformed payments go through a bridge (dev broker, local model server); the
replay command then writes the ``missing_input`` ones to a topic of their own, and
the test reads them back against what was produced in the first place.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bridge.kafka.records import BRIDGE, CONNECT
from bridge.ops.dead_letters import REPLAY_MARK
from tests.integration.kafka_io import Producer, drain_exactly_once, make_topics, payment_items
from tests.ops.servers import Served, model_server
from tools.harness.processes import Bridges, bridge_env, create_topics, run_bridge

pytestmark = pytest.mark.integration

SENTINEL = b"sentinel"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with model_server(tmp_path_factory.mktemp("replay")) as running:
        yield running


@pytest.fixture
def bridges(tmp_path: Path) -> Iterator[Bridges]:
    started = Bridges(tmp_path)
    try:
        yield started
    finally:
        started.close()


async def read_until_sentinel(bootstrap: str, topic: str) -> list[tuple[object, ...]]:
    """Every record on ``topic`` before a sentinel written now: (key, value, headers).

    The sentinel is written after the commands ended, so whatever they wrote is before it:
    no waiting for a quiet period.
    """
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, SENTINEL, partition=0)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    records: list[tuple[object, ...]] = []
    try:
        consumer.assign([TopicPartition(topic, 0)])
        while True:
            record = await consumer.getone()
            if record.value == SENTINEL and record.key is None:
                return records
            records.append((record.key, record.value, tuple(record.headers)))
    finally:
        await consumer.stop()


async def test_replay_puts_exactly_the_chosen_dead_letters_back_once(
    kafka_bootstrap: str, topic_prefix: str, served: Served, bridges: Bridges
) -> None:
    topics = await make_topics(kafka_bootstrap, topic_prefix, failures=2)
    target = f"{topic_prefix}-replayed"
    await create_topics(kafka_bootstrap, [target], 1)
    items = payment_items(100, malformed_every=4)  # 25 malformed, 5 of them missing_input
    async with Producer(kafka_bootstrap) as producer:
        sent = await producer.send_all(topics.input, items)
    env = bridge_env(kafka_bootstrap, topics.names, served.server, group=topics.group)
    bridge = await bridges.start_assigned(env)
    out, _ = await drain_exactly_once(kafka_bootstrap, topics, bridge, sent)
    wanted = [s.item for s in sent if s.item.expected == "missing_input"]
    assert len(wanted) == 5
    assert sorted(f.reason or "" for f in out.failures).count("missing_input") == 5

    # A dead letter without a value (the broker refused the output), as the bridge writes it.
    refused = [(CONNECT + "topic", topics.input.encode()), (BRIDGE + "reason", b"output_refused")]
    writer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await writer.start()
    try:
        await writer.send_and_wait(topics.failures, None, key=b"big", headers=refused, partition=0)
    finally:
        await writer.stop()

    replay = ("failures", "replay", "--to", target, "--reason", "missing_input")
    dry = run_bridge(env, *replay, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would replay 5 to " + target in dry.stdout
    (row,) = [line.split() for line in dry.stdout.splitlines() if line.startswith("missing_input")]
    assert row == ["missing_input", target, "5", "0", "0"]
    everything = run_bridge(env, "failures", "replay", "--dry-run")
    assert everything.returncode == 0, everything.stderr
    assert "not replayable 1" in everything.stdout
    assert "output_refused: the dead letter holds no input value" in everything.stdout

    first = run_bridge(env, *replay)
    assert first.returncode == 0, first.stderr
    assert first.stderr == ""  # progress is for a terminal only
    assert f"group {topics.group}.replay.missing_input" in first.stdout
    assert f"replayed 5 to {target}; passed over 21, not replayable 0" in first.stdout
    again = run_bridge(env, *replay)
    assert again.returncode == 0, again.stderr
    assert f"replayed 0 to {target}" in again.stdout

    replayed = await read_until_sentinel(kafka_bootstrap, target)
    expected = [(i.key, i.value, (*i.headers, (REPLAY_MARK, b"1"))) for i in wanted]
    assert sorted(replayed, key=repr) == sorted(expected, key=repr)
    for _key, _value, headers in replayed:
        assert not [k for k, _ in headers if k.startswith((CONNECT, BRIDGE))]  # type: ignore[attr-defined]


async def test_a_last_batch_that_reaches_past_the_end_offset_is_read_whole(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    """The dev broker's end offset is the last batch's base offset + 1 (dev-broker.md).

    One record, then one batch of 999: the broker reports 2 as the end, and a run that
    took fewer records than the fetch brought would stop inside the batch.
    """
    failures = f"{topic_prefix}-failures"
    await create_topics(kafka_bootstrap, [failures], 1)
    headers = [(CONNECT + "topic", b"payments"), (BRIDGE + "reason", b"not_json")]
    writer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, acks="all", max_batch_size=1024 * 1024
    )
    await writer.start()
    try:
        await writer.send_and_wait(failures, b"first", headers=headers, partition=0)
        batch = writer.create_batch()
        for i in range(999):
            assert batch.append(key=b"k", value=b"x%d" % i, timestamp=None, headers=headers)
        await (await writer.send_batch(batch, failures, partition=0))
    finally:
        await writer.stop()
    env = {"BRIDGE_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap, "BRIDGE_TOPICS__FAILURES": failures}
    dry = run_bridge(env, "failures", "replay", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "1000 record(s) read" in dry.stdout
