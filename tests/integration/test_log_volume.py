"""A per-event bridge logs a few lines at info, not one per model request.

The bridge runs as a process against the dev broker and the local model server,
per event (``MAX_SIZE=1``) over gRPC; its log file (stdout and stderr together)
is read back line by line: every line is JSON with the logger name and the
version, no ``batch`` line is at info, and the periodic ``summary`` lines add up
to the totals of the final ``stopped`` line.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import orjson
import pytest

from tests.integration.kafka_io import (
    GroupOffsets,
    Outputs,
    Producer,
    make_topics,
    payment_items,
    wait_for_inputs,
)
from tests.integration.procs import Bridges, log_events, stopped_counts
from tools.harness.processes import ModelServer, bridge_env

pytestmark = pytest.mark.integration

N = 400
# Start, join, assignment, consuming, stop: a dozen lines whatever N is; one a request
# (the old per-batch line) would be N.
MOST_INFO_LINES_BESIDES_SUMMARIES = 25


async def test_a_per_event_run_logs_no_line_per_request(
    kafka_bootstrap: str, topic_prefix: str, model_server: ModelServer, bridges: Bridges
) -> None:
    topics = await make_topics(kafka_bootstrap, topic_prefix, inputs=3, results=1, failures=1)
    env = bridge_env(
        kafka_bootstrap,
        topics.names,
        model_server,
        protocol="grpc",
        group=topics.group,
        BRIDGE_BATCH__MAX_SIZE="1",
        BRIDGE_LOG__SUMMARY_INTERVAL_MS="500",
    )
    bridge = await bridges.start_assigned(env)
    items = payment_items(N, malformed_every=9)
    async with Producer(kafka_bootstrap) as producer:
        sent = await producer.send_all(topics.input, items)
    async with (
        Outputs.of(kafka_bootstrap, topics) as outputs,
        GroupOffsets.of(kafka_bootstrap, topics) as offsets,
    ):
        await wait_for_inputs(outputs, sent, offsets, 90, bridge.output)
        code = await asyncio.to_thread(bridge.stop)
        assert code == 0, bridge.output()

    raw = bridge.log_path.read_bytes().splitlines()
    lines = [orjson.loads(line) for line in raw]  # fails on any plain-text line
    assert all(line.get("logger") and line.get("service_version") for line in lines), [
        line for line in lines if not (line.get("logger") and line.get("service_version"))
    ][:3]

    info = [line for line in lines if line["level"] == "info"]
    events = Counter(line["event"] for line in info)
    assert "batch" not in events, "per-request lines are at debug"
    besides = sum(count for event, count in events.items() if event != "summary")
    assert besides <= MOST_INFO_LINES_BESIDES_SUMMARIES, events

    stopped = stopped_counts(bridge)
    assert stopped["events"] == len(sent)
    summaries = log_events(bridge, "summary")
    assert summaries, "the summary runs every 500 ms"
    for field in ("events", "results", "failures"):
        assert sum(s[field] for s in summaries) == stopped[field], field
    reasons: Counter[str] = Counter()
    for summary in summaries:
        reasons.update(summary["failure_reasons"])
    assert sum(reasons.values()) == stopped["failures"] > 0
    busy = [s for s in summaries if s["results"]]
    assert busy and all(0 < s["p50_ms"] <= s["p99_ms"] for s in busy)
    assert all(isinstance(s["pending"], int) and isinstance(s["paused"], bool) for s in summaries)
