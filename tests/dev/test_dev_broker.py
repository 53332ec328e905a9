"""The dev broker launcher starts a real Kafka-protocol broker and always stops it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tools.harness.broker import BrokerStartError, DevBroker

pytestmark = pytest.mark.integration


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait_closed(port: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _port_open(port):
            return True
        time.sleep(0.05)
    return False


async def test_produce_consume_and_committed_offsets(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}-roundtrip"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    finally:
        await admin.close()

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(10):
            await producer.send_and_wait(
                topic, f"v{i}".encode(), key=b"k", partition=i % 2, headers=[("h", b"1")]
            )
    finally:
        await producer.stop()

    group = f"{topic_prefix}-g"
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        seen = []
        while len(seen) < 10:
            batches = await consumer.getmany(timeout_ms=5000)
            assert batches, "no records within 5 s"
            for records in batches.values():
                seen.extend(records)
        assert sorted(r.value for r in seen) == sorted(f"v{i}".encode() for i in range(10))
        assert all(r.headers == (("h", b"1"),) for r in seen)
        await consumer.commit({TopicPartition(topic, 0): 3})
    finally:
        await consumer.stop()

    # A new member of the group resumes from the committed offset.
    again = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False
    )
    await again.start()
    try:
        assert await again.committed(TopicPartition(topic, 0)) == 3
    finally:
        await again.stop()


def test_stop_closes_the_port() -> None:
    broker = DevBroker().start()
    port = broker.port
    assert _port_open(port)
    broker.stop()
    assert _wait_closed(port)


def test_broker_dies_with_a_killed_parent() -> None:
    # The launcher process is killed with SIGKILL, so no finaliser runs; the
    # broker must not outlive it.
    script = textwrap.dedent(
        """
        import signal, sys
        from tools.harness.broker import DevBroker
        broker = DevBroker().start()
        print(broker.port, broker.pid, flush=True)
        signal.pause()
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True
    ) as parent:
        assert parent.stdout is not None
        port_text, pid_text = parent.stdout.readline().split()
        port, pid = int(port_text), int(pid_text)
        assert _port_open(port)
        os.kill(parent.pid, signal.SIGKILL)
    assert _wait_closed(port), f"broker pid {pid} outlived its killed parent"


def test_start_failure_names_the_cause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALF_TANSU_BIN", "/bin/false")
    with pytest.raises(BrokerStartError, match="exited with 1"):
        DevBroker().start()
