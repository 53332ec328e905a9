"""Metrics carry model, route and served version, in Prometheus' text format."""

from __future__ import annotations

import pytest

from bridge.dev.broker import free_port
from bridge.metrics import Metrics, serve_metrics


def test_records_and_latency_by_route_and_version() -> None:
    metrics = Metrics()
    metrics.observe("fraud", "stable", 1, "result", "", 3.0)
    metrics.observe("fraud", "stable", 1, "result", "", 30.0)
    metrics.observe("fraud", "canary", None, "failure", "wrong_shape", 0.5)
    metrics.gauges["bridge_paused"] = lambda: 0.0
    text = metrics.render()
    stable = 'model="fraud",route="stable",version="1"'
    assert f'bridge_records_total{{{stable},outcome="result",reason=""}} 2' in text
    assert (
        'bridge_records_total{model="fraud",route="canary",version="",outcome="failure",'
        'reason="wrong_shape"} 1' in text
    )
    assert 'bridge_latency_ms_bucket{model="fraud",route="stable",version="1",le="5"} 1' in text
    assert 'bridge_latency_ms_bucket{model="fraud",route="stable",version="1",le="50"} 2' in text
    assert 'bridge_latency_ms_count{model="fraud",route="stable",version="1"} 2' in text
    assert "bridge_paused 0" in text


def test_counters_with_and_without_a_label() -> None:
    metrics = Metrics()
    metrics.counters["bridge_commits_total"] = ("outcome", lambda: {"ok": 3, "failed": 1})
    metrics.counters["bridge_undecodable_batches_total"] = (None, lambda: {"": 2})
    text = metrics.render()
    assert "# TYPE bridge_commits_total counter" in text
    assert 'bridge_commits_total{outcome="failed"} 1' in text
    assert 'bridge_commits_total{outcome="ok"} 3' in text
    assert "bridge_undecodable_batches_total 2" in text


@pytest.mark.integration
async def test_served_on_loopback() -> None:
    import httpx

    metrics = Metrics()
    metrics.observe("fraud", "stable", 2, "result", "", 1.0)
    port = free_port()
    server = await serve_metrics(metrics, "127.0.0.1", port)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            ok = await client.get("/metrics")
            missing = await client.get("/other")
    finally:
        server.close()
        await server.wait_closed()
    assert ok.status_code == 200
    assert ok.headers["content-type"].startswith("text/plain")
    assert 'route="stable",version="2"' in ok.text
    assert missing.status_code == 404
