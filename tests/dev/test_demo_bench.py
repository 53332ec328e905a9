"""``make demo`` and ``make bench`` as a user runs them: subprocesses that start the
broker, the model server and bridges, and must exit 0, stop everything they started
and write JSON whose counts add up. Nothing here looks at how fast anything was: the
machine is shared.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from bridge.ops.labels import read_models_config
from bridge.ops.models_config import find_model
from tests.dev.processes import left_running
from tools import report
from tools.harness.payments import payments
from tools.harness.processes import REPO

pytestmark = pytest.mark.integration

DEMO_EVENTS = 600
DEMO_RATE = 600  # events/s: a one-second run, the label moves after 300 events
MALFORMED_EVERY = 20  # 30 malformed: every kind six times
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _run(module: str, *args: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def _labels(models_config: Path) -> dict[str, int]:
    _, config = read_models_config(models_config)
    return dict(find_model(config, "fraud").version_labels)


@pytest.mark.timeout(600)
def test_demo_every_event_gets_one_record(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    run = _run(
        "tools.demo",
        "--events",
        str(DEMO_EVENTS),
        "--rate",
        str(DEMO_RATE),
        "--malformed-every",
        str(MALFORMED_EVERY),
        "--out",
        str(out),
        timeout_s=540,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "demo summary" in run.stdout
    assert "A/B test, routes stable 90 / canary 10: label stable moved v1 -> v2" in run.stdout

    summary = json.loads((out / "summary.json").read_text())
    expected = Counter(p.expected for p in payments(DEMO_EVENTS, malformed_every=MALFORMED_EVERY))
    malformed = {kind: n for kind, n in expected.items() if kind != "result"}

    assert summary["ok"] is True
    assert summary["problems"] == []
    assert summary["exactly_one_record_per_event"] is True
    assert summary["events"] == DEMO_EVENTS
    assert summary["outputs"] == DEMO_EVENTS
    assert summary["results"] + summary["failures"]["total"] == DEMO_EVENTS
    assert summary["results"] == expected["result"]
    assert summary["malformed_produced"] == malformed
    assert summary["failures"]["by_reason"] == malformed  # no valid payment failed
    # gRPC says which version served. Routes stable 90 / canary 10; stable moves 1 -> 2
    # halfway, so version 1 served stable before the move and version 2 the rest.
    assert summary["config"]["routes"] == {"stable": 90, "canary": 10}
    assert set(summary["versions"]) == {"1", "2"}
    assert sum(summary["versions"].values()) == summary["results"]

    move = summary["label_move"]
    assert move["ok"] is True and move["error"] is None
    assert (move["label"], move["from_version"], move["to_version"]) == ("stable", 1, 2)
    assert 0 < move["started_s"] <= move["done_s"]
    assert set(move["versions_sent_after"]) <= {"2"}

    ab = summary["ab"]
    by_version = ab["by_version"]
    assert set(by_version) == {"1", "2"}
    for version, row in by_version.items():
        assert row["events"] == summary["versions"][version] > 0
        assert row["latency_ms"]["end_to_end"]["count"] == row["events"]
        assert row["latency_ms"]["bridge_ms"]["p50"] is not None
        assert row["latency_ms"]["bridge_ms"]["p99"] is not None
        assert 0 <= row["flagged"]["count"] <= row["events"]
    assert sum(row["events"] for row in by_version.values()) == summary["results"]
    routes = ab["by_route_version"]
    assert set(routes) == {"stable", "canary"}
    assert set(routes["stable"]) == {"1", "2"}  # before and after the move
    assert set(routes["canary"]) == {"2"}
    timeline = ab["timeline"]
    for series in timeline["versions"].values():
        assert len(series["events"]) == len(timeline["starts"])
    assert sum(sum(s["events"]) for s in timeline["versions"].values()) == summary["results"]

    chart = out / "ab_test.png"
    assert summary["chart"] == str(chart)
    assert chart.read_bytes()[:8] == PNG_MAGIC
    assert 0 <= summary["flagged"]["count"] <= summary["results"]
    for key in ("end_to_end", "bridge_ms", "model_ms", "queued_ms"):
        assert summary["latency_ms"][key]["count"] == summary["results"]
    assert summary["throughput"]["events_per_s"] > 0
    assert summary["bridge"]["exit_code"] == 0
    assert summary["bridge"]["stopped"]["events"] == DEMO_EVENTS
    assert summary["bridge"]["stopped"]["handed_back"] == 0
    for name in ("bridge.log", "server.log"):
        assert (out / name).stat().st_size > 0
    # The label moved in the server's copy of models.config, never in the committed one.
    assert _labels(out / "models.local.config") == {"stable": 2, "canary": 2}
    assert _labels(REPO / "serving" / "models.config") == {"stable": 1, "canary": 2}
    assert left_running(str(out)) == []


@pytest.mark.timeout(900)
def test_bench_quick_runs_every_row(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    run = _run("tools.bench", "--quick", "--out", str(out), timeout_s=840)
    assert run.returncode == 0, run.stdout + run.stderr
    for heading in ("Throughput", "Limit 1, direct", "Latency, per event", "Targets"):
        assert heading in run.stdout

    results = json.loads((out / "results.json").read_text())
    assert {"setup", "rows", "direct", "targets"} <= set(results)
    plan = results["setup"]["plan"]
    batch = plan["batch"]
    rows = {row["name"]: row for row in results["rows"]}
    assert set(rows) == {
        "pass-through",
        "pass-through beside grpc",
        "pass-through beside rest",
        "bridge grpc per-event",
        f"bridge grpc batched {batch}",
        "bridge rest per-event",
        f"bridge rest batched {batch}",
    }
    for name, row in rows.items():
        assert row["exit_code"] == 0, name
        assert row["accounted"] is True, (name, row["accounting_problems"])
        assert row["outputs"] == row["events"], name
        assert row["failures"] == 0, name
        assert row["events_per_s"] > 0, name
        assert row["start_s"]["consuming"] is not None, name
        assert row["peak_rss_mb"] > 0, name
        paced = name == "pass-through" or name.endswith("per-event")  # not the "beside" rows
        assert ("latency" in row) == paced, name
        if paced:
            assert row["latency"]["count"] == plan["paced"], name
            assert row["latency"]["end_to_end_ms"]["count"] == plan["paced"], name
    for name in ("bridge grpc per-event", "bridge rest per-event"):
        assert rows[name]["events"] == plan["per_event"]
        assert rows[name]["latency"]["bridge_minus_model_ms"]["count"] == plan["paced"]
        assert rows[name]["latency_slow"]["count"] == plan["slow_paced"]
        assert rows[name]["latency_slow"]["rate"] == plan["slow_rate"]
    assert rows["pass-through"]["events"] == plan["limit_events"]
    for protocol in ("grpc", "rest"):
        assert rows[f"bridge {protocol} batched {batch}"]["events"] == plan["events"]
        assert rows[f"pass-through beside {protocol}"]["events"] == plan["limit_events"]
    # Each ratio's denominator is the pass-through run just before its bridge row.
    ratios = {t["target"]: t for t in results["targets"] if t["definition"] == "cpu per event"}
    for protocol in ("grpc", "rest"):
        beside = rows[f"pass-through beside {protocol}"]["cpu_us_per_event"]["process"]
        bridge = rows[f"bridge {protocol} batched {batch}"]["cpu_us_per_event"]["process"]
        ratio = ratios[f"{protocol}: micro-batched CPU per event, x the pass-through's"]
        assert ratio["value"] == (round(bridge / beside, 2) if bridge and beside else None)
        assert f"/ {report.ms(beside, 1)} us (first pass-through" in ratio["detail"]

    for protocol in ("grpc", "rest"):
        direct = results["direct"][protocol]
        assert direct["batch_1"]["instances"] == plan["per_event"]
        assert direct[f"batch_{batch}"]["instances"] == plan["limit_events"]
        assert direct["batch_1"]["call_ms"]["count"] == plan["per_event"]
        assert direct["paced_batch_1"]["calls"] == plan["paced"]

    assert results["setup"]["model"]["version"] == 1
    for target in results["targets"]:
        assert {"target", "value", "unit", "goal", "pass", "definition"} <= set(target)
        assert target["pass"] in (True, False, None)
    assert left_running(str(out)) == []
