"""Metrics carry model, route and served version; prometheus_client writes the exposition.

What is scraped is read back with prometheus_client's own parser, so these tests
check values and labels, not the layout of the text.
"""

from __future__ import annotations

import asyncio
import gc
import socket
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from structlog.testing import capture_logs

from bridge.metrics import Metrics, serve_metrics
from bridge.metrics.endpoint import Request, parse_request


def scrape(metrics: Metrics) -> list[Sample]:
    body, content_type = metrics.exposition()
    assert content_type.startswith("text/plain")
    return [s for f in text_string_to_metric_families(body.decode()) for s in f.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    found = [s.value for s in samples if s.name == name and s.labels == labels]
    assert len(found) == 1, f"{name}{labels}: {len(found)} samples"
    return found[0]


def names(samples: list[Sample]) -> set[str]:
    return {s.name for s in samples}


STABLE_1 = {"model": "fraud", "route": "stable", "version": "1"}


def test_records_by_route_version_outcome_and_reason() -> None:
    metrics = Metrics()
    metrics.observe("fraud", "stable", 1, "result", "", 0.003)
    metrics.observe("fraud", "stable", 1, "result", "", 0.03)
    metrics.observe("fraud", "canary", None, "failure", "wrong_shape", 0.0005)
    samples = scrape(metrics)
    assert value(samples, "bridge_records_total", **STABLE_1, outcome="result", reason="") == 2
    canary = {"model": "fraud", "route": "canary", "version": ""}
    failed = value(
        samples, "bridge_records_total", **canary, outcome="failure", reason="wrong_shape"
    )
    assert failed == 1


def test_event_duration_histogram_per_route_and_version() -> None:
    metrics = Metrics()
    for s in (0.003, 0.03, 0.005, 60.5):  # 0.005 is in le=0.005: bounds are inclusive
        metrics.observe("fraud", "stable", 1, "result", "", s)
    samples = scrape(metrics)
    bucket = "bridge_event_duration_seconds_bucket"
    assert value(samples, bucket, **STABLE_1, le="0.002") == 0
    assert value(samples, bucket, **STABLE_1, le="0.005") == 2
    assert value(samples, bucket, **STABLE_1, le="0.05") == 3
    assert value(samples, bucket, **STABLE_1, le="60.0") == 3
    assert value(samples, bucket, **STABLE_1, le="+Inf") == 4
    assert value(samples, "bridge_event_duration_seconds_count", **STABLE_1) == 4
    assert value(samples, "bridge_event_duration_seconds_sum", **STABLE_1) == pytest.approx(60.538)
    les = [s.labels["le"] for s in samples if s.name == bucket]
    assert les == (
        "0.001 0.002 0.005 0.01 0.02 0.05 0.1 0.2 0.5 1.0 2.0 5.0 10.0 30.0 60.0 +Inf".split()
    )


def test_event_duration_sums_the_outcomes_and_reasons_of_a_series() -> None:
    metrics = Metrics()
    metrics.observe("fraud", "stable", None, "failure", "wrong_shape", 1.0)
    metrics.observe("fraud", "stable", None, "failure", "busy", 1.0)
    metrics.observe("fraud", "stable", 1, "result", "", 1.0)
    samples = scrape(metrics)
    unserved = {"model": "fraud", "route": "stable", "version": ""}
    assert value(samples, "bridge_event_duration_seconds_count", **unserved) == 2
    assert value(samples, "bridge_event_duration_seconds_count", **STABLE_1) == 1


def test_no_series_the_bridge_never_had() -> None:
    metrics = Metrics()
    metrics.observe("fraud", "stable", 1, "result", "", 1.0)
    assert names(scrape(metrics)) == {
        "bridge_records_total",
        "bridge_event_duration_seconds_bucket",
        "bridge_event_duration_seconds_count",
        "bridge_event_duration_seconds_sum",
    }


@pytest.mark.parametrize("reason", ["two\nlines", 'a "quoted" word', "back\\slash", "ünï"])
def test_label_values_are_escaped(reason: str) -> None:
    metrics = Metrics()
    metrics.observe("fraud", "stable", None, "failure", reason, 1.0)
    body = metrics.exposition()[0].decode()
    for line in body.splitlines():
        assert line.startswith(("#", "bridge_")), f"a label value broke a line: {line!r}"
    samples = scrape(metrics)
    labels = {"model": "fraud", "route": "stable", "version": ""}
    assert value(samples, "bridge_records_total", **labels, outcome="failure", reason=reason) == 1


@dataclass
class State:
    paused: bool = False
    outcomes: dict[str, int] = field(default_factory=lambda: {"ok": 3, "failed": 1})
    resends: int = 0


def test_gauges_and_counters_are_read_at_each_scrape() -> None:
    state = State()
    metrics = Metrics()
    metrics.gauge("bridge_paused", "paused", lambda: float(state.paused))
    metrics.counter_by("bridge_commits_total", "commits", "outcome", lambda: state.outcomes)
    metrics.counter("bridge_resent_records_total", "resent", lambda: state.resends)
    before = scrape(metrics)
    state.paused, state.resends = True, 7
    state.outcomes["ok"] += 1
    after = scrape(metrics)
    assert value(before, "bridge_paused") == 0
    assert value(after, "bridge_paused") == 1
    assert value(before, "bridge_commits_total", outcome="failed") == 1
    assert value(after, "bridge_commits_total", outcome="ok") == 4
    assert value(before, "bridge_resent_records_total") == 0
    assert value(after, "bridge_resent_records_total") == 7


def test_types_and_help_come_through() -> None:
    metrics = Metrics()
    metrics.gauge("bridge_pending_events", "Events held.", lambda: 2.0)
    metrics.counter("bridge_undecodable_batches_total", "Bad batches.", lambda: 1)
    body = metrics.exposition()[0].decode()
    families = {f.name: f for f in text_string_to_metric_families(body)}
    assert families["bridge_pending_events"].type == "gauge"
    assert families["bridge_pending_events"].documentation == "Events held."
    assert families["bridge_undecodable_batches"].type == "counter"
    assert families["bridge_records"].type == "counter"
    assert families["bridge_event_duration_seconds"].type == "histogram"


def test_a_name_registered_twice_is_refused() -> None:
    metrics = Metrics()
    metrics.gauge("bridge_paused", "paused", lambda: 0.0)
    with pytest.raises(ValueError, match="bridge_paused"):
        metrics.gauge("bridge_paused", "again", lambda: 1.0)
    with pytest.raises(ValueError, match="bridge_records_total"):
        metrics.counter("bridge_records_total", "clash", lambda: 0)


def test_each_instance_has_its_own_registry() -> None:
    one, other = Metrics(), Metrics()
    one.observe("fraud", "stable", 1, "result", "", 1.0)
    one.gauge("bridge_paused", "paused", lambda: 0.0)
    other.gauge("bridge_paused", "paused", lambda: 1.0)  # no clash across instances
    assert "bridge_records_total" in names(scrape(one))
    assert "bridge_records_total" not in names(scrape(other))
    assert value(scrape(other), "bridge_paused") == 1


def test_openmetrics_for_a_scraper_that_asks_for_it() -> None:
    metrics = Metrics()
    metrics.observe("fraud", "stable", 1, "result", "", 1.0)
    body, content_type = metrics.exposition("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")
    assert metrics.exposition("*/*")[1].startswith("text/plain; version=0.0.4")


# -- the request head -----------------------------------------------------------------


def test_a_scrape_request() -> None:
    head = b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept: text/plain;version=0.0.4\r\n\r\n"
    assert parse_request(head) == Request("GET", "/metrics", "text/plain;version=0.0.4")
    assert parse_request(b"HEAD /other HTTP/1.0\r\n\r\n") == Request("HEAD", "/other", "")


@pytest.mark.parametrize(
    "head",
    [
        b"\r\n\r\n",
        b"GET /metrics\r\n\r\n",
        b"GET  /metrics HTTP/1.1\r\n\r\n",
        b"GET /metrics HTTP/2\r\n\r\n",
        b"GET metrics HTTP/1.1\r\n\r\n",
        b"G/T /metrics HTTP/1.1\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\n Accept: folded\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # TLS to a plain port
    ],
)
def test_a_malformed_request_is_refused(head: bytes) -> None:
    assert parse_request(head) is None


# -- served on loopback -----------------------------------------------------------------


async def exchange(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


async def client_get(port: int) -> bytes:
    return await exchange(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")


def status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


@pytest.fixture
async def loop_errors() -> list[dict[str, Any]]:
    """What would reach asyncio's exception handler: a traceback in the log."""
    errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, context: errors.append(context))
    return errors


@pytest.mark.integration
async def test_served_on_loopback(loop_errors: list[dict[str, Any]]) -> None:
    import httpx

    metrics = Metrics()
    metrics.observe("fraud", "stable", 2, "result", "", 1.0)
    server = await serve_metrics(metrics, "127.0.0.1", 0)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            ok = await client.get("/metrics")
            head = await client.head("/metrics")
            missing = await client.get("/other")
            posted = await client.post("/metrics", content=b"x")
        with capture_logs() as logs:
            oversize = await exchange(
                server.port, b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
            )
            malformed = await exchange(server.port, b"NOT HTTP AT ALL\r\n\r\n")
            after = await client_get(server.port)
    finally:
        await server.close()
    assert ok.status_code == 200
    assert ok.headers["content-type"].startswith("text/plain")
    served = {"model": "fraud", "route": "stable", "version": "2"}
    samples = [s for f in text_string_to_metric_families(ok.text) for s in f.samples]
    assert value(samples, "bridge_records_total", **served, outcome="result", reason="") == 1
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == len(ok.content)
    assert missing.status_code == 404
    assert posted.status_code == 405
    assert status(oversize) == 431
    assert status(malformed) == 400
    assert status(after) == 200, "the server goes on after refusing requests"
    assert not [entry for entry in logs if entry.get("exc_info") or entry["log_level"] == "error"]
    gc.collect()  # a handler task's unretrieved exception is reported when it is collected
    assert not loop_errors


@pytest.mark.integration
async def test_a_failing_read_answers_500_and_logs_it() -> None:
    def broken() -> float:
        raise RuntimeError("a bug in a reader")

    metrics = Metrics()
    metrics.gauge("bridge_paused", "paused", broken)
    server = await serve_metrics(metrics, "127.0.0.1", 0)
    try:
        with capture_logs() as logs:
            response = await client_get(server.port)
    finally:
        await server.close()
    assert status(response) == 500
    assert [entry["event"] for entry in logs if entry["log_level"] == "error"] == [
        "metrics_unreadable"
    ]


@pytest.mark.integration
async def test_close_frees_the_port_at_once_with_a_request_in_flight() -> None:
    server = await serve_metrics(Metrics(), "127.0.0.1", 0)
    port = server.port
    # A client that connects and never finishes its request holds a handler.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\n")
    await writer.drain()
    # Connections are accepted in order: once a later one is answered, the stalled
    # one's handler is waiting for the rest of its request.
    assert status(await client_get(port)) == 200
    try:
        await asyncio.wait_for(server.close(), 1)  # well under the 5 s read timeout
        assert await asyncio.wait_for(reader.read(), 1) == b"", "the stalled request is dropped"
    finally:
        writer.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    again = await serve_metrics(Metrics(), "127.0.0.1", port)  # the port is free to bind
    await again.close()
