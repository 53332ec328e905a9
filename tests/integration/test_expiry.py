"""Stale events after a model-server outage longer than ``BRIDGE_DELIVERY__MAX_EVENT_AGE_MS``.

Events produced before the outage are scored; the model server is stopped, events
produced while it is down wait in the bridge (some fetched and held in a model call,
the rest behind them) for longer than the bound; it is started again and more events
follow. Those produced during the outage end as ``expired`` failures (on
``BRIDGE_TOPICS__EXPIRED`` when it is set, else on the failures topic), the others as
results: each exactly once, in partition order, counted in ``bridge_records_total``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.kafka_io import (
    BRIDGE,
    CONNECT,
    GroupOffsets,
    Outputs,
    Producer,
    Sent,
    duplicated,
    end_offsets,
    make_topics,
    order_violations,
    payment_items,
    wait_for_inputs,
)
from tests.integration.procs import Bridges, demo_server, log_events, stopped_counts, written
from tools.harness.broker import free_port
from tools.harness.processes import ModelServer, bridge_env, create_topics

pytestmark = pytest.mark.integration

MAX_AGE_MS = 3000
OUTAGE_S = MAX_AGE_MS / 1000 + 1.5  # longer than the bound, whatever the restart adds
BEFORE, DURING, AFTER = 60, 40, 60


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[ModelServer]:
    """A model server this test alone uses, since it stops and restarts it."""
    server = demo_server(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def records_total(port: int, reason: str) -> float:
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(f"http://127.0.0.1:{port}/metrics")
    response.raise_for_status()
    return sum(
        sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == "bridge_records_total" and sample.labels.get("reason") == reason
    )


async def records_on(bootstrap: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        assert partitions, f"{topic} has no partitions"
        return sum((await consumer.end_offsets(partitions)).values())
    finally:
        await consumer.stop()


@pytest.mark.parametrize("expired_topic", [False, True], ids=["failures-topic", "expired-topic"])
async def test_events_older_than_the_bound_after_an_outage_expire(
    kafka_bootstrap: str,
    topic_prefix: str,
    own_server: ModelServer,
    bridges: Bridges,
    expired_topic: bool,
) -> None:
    topics = await make_topics(kafka_bootstrap, topic_prefix, inputs=3, results=2, failures=1)
    dead_letters, dead_partitions = topics.failures, topics.failures_partitions
    extra = {}
    if expired_topic:
        dead_letters, dead_partitions = f"{topic_prefix}-expired", 2
        await create_topics(kafka_bootstrap, [dead_letters], dead_partitions)
        extra["BRIDGE_TOPICS__EXPIRED"] = dead_letters
    port = free_port()
    env = bridge_env(
        kafka_bootstrap,
        topics.names,
        own_server,
        group=topics.group,
        BRIDGE_DELIVERY__MAX_EVENT_AGE_MS=str(MAX_AGE_MS),
        BRIDGE_BATCH__MAX_SIZE="8",
        # Short deadlines and probe backoff: the outage is noticed and ended quickly.
        BRIDGE_SERVING__TIMEOUT_MS="2000",
        BRIDGE_RETRY__PROBE_MAX_BACKOFF_MS="500",
        BRIDGE_METRICS__PORT=str(port),
        **extra,
    )
    bridge = await bridges.start_assigned(env)
    items = payment_items(BEFORE + DURING + AFTER, seed=23)  # valid events only

    async with (
        Producer(kafka_bootstrap) as producer,
        Outputs(
            kafka_bootstrap,
            (topics.results, topics.results_partitions),
            (dead_letters, dead_partitions),
        ) as out,
        GroupOffsets.of(kafka_bootstrap, topics) as offsets,
    ):
        before = await producer.send_all(topics.input, items[:BEFORE])
        await wait_for_inputs(out, before, offsets, 60, bridge.output)

        assert await asyncio.to_thread(own_server.stop) == 0, own_server.output()
        during = await producer.send_all(topics.input, items[BEFORE : BEFORE + DURING])
        await asyncio.to_thread(bridge.wait_for_log, "model_server_down", 30)
        await asyncio.sleep(OUTAGE_S)  # the outage must outlast the bound: the test's premise
        await asyncio.to_thread(own_server.start)  # same ports; waits until AVAILABLE
        await asyncio.to_thread(bridge.wait_for_log, "model_server_up", 30)

        after = await producer.send_all(topics.input, items[BEFORE + DURING :])
        sent = [*before, *during, *after]
        await wait_for_inputs(out, sent, offsets, 60, bridge.output)
        expired_counted = await records_total(port, "expired")
        assert await asyncio.to_thread(bridge.stop) == 0, bridge.output()
        await out.wait_for_count(written(bridge))
        final = await offsets.read()

    def ends(events: list[Sent]) -> dict[tuple[int, int], str]:
        by_source = out.by_source()
        return {
            s.source: "result" if r.kind == "result" else f"{r.topic}:{r.reason}"
            for s in events
            for r in by_source.get(s.source, [])
        }

    assert set(ends(before).values()) == {"result"}
    assert set(ends(after).values()) == {"result"}
    assert set(ends(during).values()) == {f"{dead_letters}:expired"}, ends(during)
    assert len(ends(during)) == DURING
    assert not duplicated(out), "no crash, no rebalance: exactly one record per input"
    assert len(out.records) == len(sent)
    partitions = {topics.results: topics.results_partitions, dead_letters: dead_partitions}
    assert not order_violations(out, partitions)
    assert final == end_offsets(sent), "committed like the rest"

    for record in out.failures:
        message = record.header(CONNECT + "exception.message") or ""
        assert f"BRIDGE_DELIVERY__MAX_EVENT_AGE_MS={MAX_AGE_MS}" in message, message
        assert record.header(BRIDGE + "attempts") == "0"
    if expired_topic:
        assert await records_on(kafka_bootstrap, topics.failures) == 0
    assert expired_counted == DURING
    stopped = stopped_counts(bridge)
    assert (stopped["results"], stopped["failures"]) == (BEFORE + AFTER, DURING)
    assert log_events(bridge, "model_server_down"), "the outage was seen"
