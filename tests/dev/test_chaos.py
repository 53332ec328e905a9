"""``make chaos`` as a user runs it, small: ``--scale 0.05`` runs every scenario once
(one kill, one outage, one stall, a short churn, a small fuzz) and must pass each, write
the summary JSON and stop everything it started. The long run is ``make chaos``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.dev.processes import left_running
from tools.harness.processes import REPO

pytestmark = pytest.mark.integration

SCENARIOS = {"kill9", "outages", "stalls", "churn", "fuzz"}


@pytest.mark.timeout(420)
def test_chaos_small_scale_passes_every_scenario(tmp_path: Path) -> None:
    out = tmp_path / "chaos"
    run = subprocess.run(
        [sys.executable, "-m", "tools.chaos", "--scale", "0.05", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert "Chaos summary" in run.stdout

    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] is True
    rows = {row["name"]: row for row in summary["rows"]}
    assert set(rows) == SCENARIOS
    for name, row in rows.items():
        assert row["ok"] is True, (name, row["problems"])
        assert row["problems"] == [], name
        assert row["events"] > 0, name
        assert row["missing"] == 0, name
        assert row["duplicates"] <= row["duplicate_bound"], name
        assert row["fault_failures"] == 0, name
        assert row["peak_rss_mb"] > 0, name
    for name in ("outages", "stalls"):
        assert rows[name]["resume_s"] is not None
        assert rows[name]["resume_s"] <= rows[name]["resume_bound_s"]
    assert rows["outages"]["duplicates"] == 0
    assert rows["fuzz"]["duplicates"] == 0
    table = run.stdout[run.stdout.index("Chaos summary") :]
    for row in rows.values():
        line = next(line for line in table.splitlines() if line.startswith(row["scenario"]))
        assert line.rstrip().endswith("PASS"), line
    assert set(summary["setup"]) >= {"cpus", "broker", "server", "scale"}
    assert left_running(str(out)) == []
