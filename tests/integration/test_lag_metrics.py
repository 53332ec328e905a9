"""Lag and the oldest event in flight, through a frozen model server, on the real parts.

A bridge process consumes from the dev broker and calls the local model server;
its /metrics are scraped. The model server is frozen (SIGSTOP: its sockets stay
open and nothing is answered) while events are produced: the summed
``bridge_consumer_lag`` reaches the number produced and
``bridge_oldest_in_flight_seconds`` the freeze's length (part of them are produced
after the bridge paused, so only the end offsets can see them); once it thaws (SIGCONT)
everything is written and committed and the lag is back to 0.

The inputs are produced one record per batch: on the dev broker the end offset
of a multi-record batch is its base offset + 1, so only then is lag exact there.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable

import pytest
from prometheus_client.samples import Sample

from tests.integration.procs import Bridges
from tests.integration.test_metrics_scrape import scrape, total
from tools.harness.broker import free_port
from tools.harness.kafka_io import (
    GroupOffsets,
    Outputs,
    Producer,
    end_offsets,
    make_topics,
    payment_items,
    wait_for_inputs,
)
from tools.harness.processes import ModelServer, bridge_env

pytestmark = pytest.mark.integration

WARM_UP = 5  # written and committed before the freeze: lag then counts from a real commit
N = 30
FREEZE_S = 8.0


async def scrape_until(
    port: int, check: Callable[[list[Sample]], bool], what: str, timeout_s: float
) -> list[Sample]:
    deadline = time.monotonic() + timeout_s
    while True:
        samples = await scrape(port)
        if check(samples):
            return samples
        if time.monotonic() > deadline:
            found = {s.name: s.value for s in samples if s.name.startswith("bridge_")}
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}: {found}")
        await asyncio.sleep(0.2)


def lag(samples: list[Sample]) -> float:
    return total(samples, "bridge_consumer_lag")


def oldest(samples: list[Sample]) -> float:
    ages = [s.value for s in samples if s.name == "bridge_oldest_in_flight_seconds"]
    return max(ages, default=0.0)


async def frozen(server: ModelServer, work: Callable[[], Awaitable[None]]) -> None:
    """Run ``work`` with the model server stopped; it is continued whatever happens."""
    assert server.pid is not None
    os.kill(server.pid, signal.SIGSTOP)
    try:
        await work()
    finally:
        os.kill(server.pid, signal.SIGCONT)


async def test_lag_and_oldest_in_flight_through_a_frozen_model_server(
    kafka_bootstrap: str, topic_prefix: str, model_server: ModelServer, bridges: Bridges
) -> None:
    topics = await make_topics(kafka_bootstrap, topic_prefix, inputs=2, results=1, failures=1)
    port = free_port()
    env = bridge_env(
        kafka_bootstrap,
        topics.names,
        model_server,
        group=topics.group,
        BRIDGE_METRICS__PORT=str(port),
        BRIDGE_SERVING__TIMEOUT_MS="1000",  # a frozen server is found down sooner
    )
    bridge = await bridges.start_assigned(env)
    items = payment_items(WARM_UP + N)

    async with Producer(kafka_bootstrap) as producer:
        sent = await producer.send_all(topics.input, items[:WARM_UP], chunk=1)
        await scrape_until(
            port,
            lambda s: total(s, "bridge_records_total") == WARM_UP and lag(s) == 0,
            "the warm-up written, committed, and its lag back to 0",
            60,
        )
        during: list[Sample] = []

        async def produce_and_watch() -> None:
            frozen_at = time.monotonic()
            first, rest = items[WARM_UP : WARM_UP + N // 3], items[WARM_UP + N // 3 :]
            sent.extend(await producer.send_all(topics.input, first, chunk=1))
            produced_at = time.monotonic()
            # Paused, the consumer fetches nothing and its high watermark stands still:
            # the lag of what comes now is seen through the end offsets only.
            await scrape_until(port, lambda s: total(s, "bridge_paused") == 1, "a pause", 30)
            sent.extend(await producer.send_all(topics.input, rest, chunk=1))
            await scrape_until(port, lambda s: lag(s) == N, f"a lag of {N}", 30)
            await asyncio.sleep(max(0.0, frozen_at + FREEZE_S - time.monotonic()))
            during[:] = await scrape(port)
            scraped_at = time.monotonic()
            # The oldest event in flight was fetched after it was produced, and soon
            # after (the bridge only pauses once a call has timed out).
            assert scraped_at - produced_at - 3 <= oldest(during) <= scraped_at - frozen_at

        await frozen(model_server, produce_and_watch)

    assert lag(during) == N, "the lag counts every event produced while frozen, no more"
    assert oldest(during) >= FREEZE_S - 3, "about the length of the freeze"
    assert total(during, "bridge_model_server_up") == 0
    assert total(during, "bridge_model_server_outages_total") >= 1

    async with (
        Outputs.of(kafka_bootstrap, topics) as outputs,
        GroupOffsets.of(kafka_bootstrap, topics) as offsets,
    ):
        await wait_for_inputs(outputs, sent, offsets, 90, bridge.output)
        assert outputs.covers(sent)
        after = await scrape_until(
            port,
            lambda s: lag(s) == 0 and total(s, "bridge_records_total") == WARM_UP + N,
            "the lag back to 0 after the thaw",
            60,
        )
        assert await offsets.read() == end_offsets(sent), "lag 0 means committed to the end"

    assert "bridge_oldest_in_flight_seconds" not in {s.name for s in after}, "nothing in flight"
    assert total(after, "bridge_model_server_up") == 1
    # The histograms: every event once, some of them held through the freeze.
    events = total(after, "bridge_event_duration_seconds_count")
    assert events == WARM_UP + N
    assert total(after, "bridge_event_duration_seconds_bucket", le="1.0") < events
    calls = total(after, "bridge_model_request_duration_seconds_count", protocol="grpc")
    assert calls >= WARM_UP  # per-event mode: a call per event, plus the one that timed out
    unanswered = total(after, "bridge_model_request_duration_seconds_count", version="")
    assert unanswered >= 1, "the call the frozen server never answered is timed too"
    assert total(after, "bridge_batch_size_count") >= WARM_UP + N
    assert total(after, "bridge_batch_size_bucket", le="1.0") == total(
        after, "bridge_batch_size_count"
    )
    assert total(after, "bridge_rebalances_total") >= 1
    assert total(after, "process_resident_memory_bytes") > 10 * 1024 * 1024
    assert total(after, "process_cpu_seconds_total") > 0
    assert [s.labels["version"] for s in after if s.name == "bridge_build_info"] != []

    code = await asyncio.to_thread(bridge.stop)
    assert code == 0, bridge.output()
