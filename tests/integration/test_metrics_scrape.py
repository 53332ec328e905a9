"""A running bridge's /metrics agree with what it wrote, shadow traffic included.

The bridge runs as a process against the dev broker and the local model server,
with every valid event mirrored to another label; its metrics port is scraped
and read with prometheus_client's parser.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.integration.procs import Bridges
from tools.harness.broker import free_port
from tools.harness.kafka_io import (
    GroupOffsets,
    Outputs,
    Producer,
    make_topics,
    payment_items,
    wait_for_inputs,
)
from tools.harness.processes import ModelServer, bridge_env, create_topics

pytestmark = pytest.mark.integration

N = 60
REASON = "__bridge.errors.reason"  # the failure header that names why (README, Records)


async def scrape(port: int) -> list[Sample]:
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(f"http://127.0.0.1:{port}/metrics")
    response.raise_for_status()
    return [s for f in text_string_to_metric_families(response.text) for s in f.samples]


def total(samples: list[Sample], name: str, **labels: str) -> float:
    return sum(
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def test_metrics_match_the_records_written(
    kafka_bootstrap: str, topic_prefix: str, model_server: ModelServer, bridges: Bridges
) -> None:
    topics = await make_topics(kafka_bootstrap, topic_prefix, inputs=2, results=1, failures=1)
    shadow_topic = f"{topic_prefix}-shadow"
    await create_topics(kafka_bootstrap, [shadow_topic], 1)
    port = free_port()
    env = bridge_env(
        kafka_bootstrap,
        topics.names,
        model_server,
        group=topics.group,
        BRIDGE_MODEL__LABEL="stable",
        BRIDGE_MODEL__SHADOW_TARGET="canary",
        BRIDGE_MODEL__SHADOW_FRACTION="1.0",
        BRIDGE_TOPICS__SHADOW=shadow_topic,
        BRIDGE_METRICS__PORT=str(port),
    )
    bridge = await bridges.start_assigned(env)

    items = payment_items(N, malformed_every=5)
    async with Producer(kafka_bootstrap) as producer:
        sent = await producer.send_all(topics.input, items)
    async with (
        Outputs.of(kafka_bootstrap, topics) as outputs,
        GroupOffsets.of(kafka_bootstrap, topics) as offsets,
    ):
        await wait_for_inputs(outputs, sent, offsets, 90, bridge.output)
        records = [record for source in outputs.by_source().values() for record in source]

    valid = sum(1 for item in items if item.expected == "result")
    # Shadow calls are best effort and nothing waits for them: give them a moment. The
    # outputs may all be read before the first commit interval ends: wait for one too.
    deadline = time.monotonic() + 30
    while True:
        samples = await scrape(port)
        shadow = total(samples, "bridge_shadow_records_total")
        committed = total(samples, "bridge_commits_total", outcome="ok")
        if (shadow >= valid and committed >= 1) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)

    results = [r for r in records if r.kind == "result"]
    reasons = Counter(r.header(REASON) for r in records if r.kind == "failure")
    route = {"model": "fraud", "route": "stable"}
    assert total(samples, "bridge_records_total", **route) == len(records) == len(sent)
    assert total(samples, "bridge_records_total", outcome="result", version="1") == len(results)
    for reason, count in reasons.items():
        assert total(samples, "bridge_records_total", reason=reason, version="") == count
    assert total(samples, "bridge_event_duration_seconds_count", **route) == len(sent)
    assert total(samples, "bridge_event_duration_seconds_bucket", le="+Inf") == len(sent)
    assert total(samples, "bridge_model_server_up") == 1
    assert total(samples, "bridge_paused") == 0
    assert total(samples, "bridge_commits_total", outcome="ok") >= 1
    assert total(samples, "bridge_resent_records_total") == 0
    assert total(samples, "bridge_undecodable_batches_total") == 0
    # Mirrored: the events that reached the model, each either sent or dropped.
    assert shadow == valid, bridge.output()
    assert total(samples, "bridge_shadow_records_total", outcome="sent") >= 1
    assert {s.name for s in samples} >= {"bridge_pending_events", "bridge_pending_bytes"}

    code = await asyncio.to_thread(bridge.stop)
    assert code == 0, bridge.output()
    with pytest.raises(httpx.ConnectError):
        await scrape(port)
